#!/usr/bin/env python3
"""A PMU served by pyPMU (the `synchrophasor` package), as a C37.118 peer no one here wrote.

Frame k carries values that are a function of k, and k itself in its first analog channel, so a
test can check every decoded value without sharing a clock with this process:

  phasor i (i = 0..3):  int-rect    re = 100(i+1) + k mod 1000,  im = -(k mod 500) - i
                        int-polar   mag = 1000(i+1) + k mod 1000, angle = (37k mod 62832) - 31416
                        float-rect  re = 230(i+1) + k/4,          im = -k/8
                        float-polar mag = 230 + i + k/2,          angle = (k mod 628)/100 - 3.14
  freq  = (k mod 200) - 100 mHz from 50 Hz;   dfreq = (k mod 50) - 25 hundredths of Hz/s
  analog = [k, -k / 2] (float);               digital = [k mod 65536]
"""

import argparse
import collections
import collections.abc
import logging
import os
import sys
import time

# pyPMU predates Python 3.10, where collections.Sequence moved to collections.abc.
collections.Sequence = collections.abc.Sequence

from synchrophasor.frame import ConfigFrame2, DataFrame  # noqa: E402
from synchrophasor.pmu import Pmu  # noqa: E402

FORMATS = {
    # (polar, phasor float, analog float, freq float)
    "int-rect": (False, False, True, False),
    "int-polar": (True, False, True, False),
    "float-rect": (False, True, True, False),
    "float-polar": (True, True, True, False),
}

PHUNITS = [(915527, "v"), (915527, "v"), (915527, "v"), (45776, "i")]


def phasors(kind, k):
    if kind == "int-rect":
        return [(100 * (i + 1) + k % 1000, -(k % 500) - i) for i in range(4)]
    if kind == "int-polar":
        return [(1000 * (i + 1) + k % 1000, (37 * k) % 62832 - 31416) for i in range(4)]
    if kind == "float-rect":
        return [(230.0 * (i + 1) + k / 4, -k / 8) for i in range(4)]
    return [(230.0 + i + k / 2, (k % 628) / 100 - 3.14) for i in range(4)]


class StampedFrame(DataFrame):
    """A data frame that records its stamp when pyPMU sends it.

    pyPMU's per-client process stamps each frame with the time it takes it from the queue (then
    sleeps one period and sends it), so a late send moves the stamp, and grid points that no
    frame's stamp landed on are frames this PMU never sent. With --stamps, each frame's SOC and
    FRACSEC go to that file, a line each, as they are encoded for sending: what a test compares
    the recorded samples with.
    """

    stamps = None

    def convert2bytes(self):
        if StampedFrame.stamps:
            # O_APPEND and one short write per line: the lines of the per-client processes do
            # not interleave.
            with open(StampedFrame.stamps, "a") as log:
                log.write("%d %d\n" % (self.get_soc(), self.get_frasec()[0]))
        return super().convert2bytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", type=int, default=7734)
    parser.add_argument("--port", type=int, default=4712)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--format", choices=sorted(FORMATS), default="int-rect")
    parser.add_argument("--station", default="EDGEWARD TEST")
    parser.add_argument("--unlock-from", type=int, default=-1,
                        help="from this frame on, report the clock as not synchronised")
    parser.add_argument("--unlock-until", type=int, default=-1,
                        help="and from this frame on, synchronised again")
    parser.add_argument("--stamps", default=None,
                        help="append each sent frame's SOC and FRACSEC to this file, a line each,"
                             " so a test knows which frames the PMU sent")
    args = parser.parse_args()

    # pyPMU's per-client process polls its socket and its queue without ever blocking, so it
    # spins a core for as long as a client is connected. At the lowest priority it takes only
    # what nobody else wants: on a two-core machine the QEMU guest, the broker and the verifier
    # under test would otherwise share the one core left. The frames' stamps are unaffected: a
    # late send stamps the frame late, which the tests already allow for (see StampedFrame).
    os.nice(19)

    pmu = Pmu(pmu_id=args.id, data_rate=args.rate, port=args.port, ip="127.0.0.1")
    pmu.logger.setLevel(logging.WARNING)
    cfg = ConfigFrame2(
        args.id, 1000000, 1, args.station, args.id, FORMATS[args.format], 4, 2, 1,
        ["VA", "VB", "VC", "IA", "TEMP", "HUMIDITY"] + ["BREAKER %d" % bit for bit in range(16)],
        PHUNITS, [(1, "pow"), (1, "rms")], [(0x0000, 0xFFFF)], 50, 1, args.rate,
    )
    pmu.set_configuration(cfg)
    pmu.set_header("Edgeward test PMU served by pyPMU")
    pmu.run()
    print("LISTENING %d" % args.port, flush=True)

    locked = ("ok", True, "timestamp", False, False, False, 0, "<10", 0)
    unlocked = ("ok", False, "timestamp", False, False, False, 0, "<10", 0)
    StampedFrame.stamps = args.stamps
    k = 0
    period = 1.0 / args.rate
    next_send = time.monotonic()
    while True:
        if pmu.client_buffers:
            stat = unlocked if args.unlock_from <= k < args.unlock_until else locked
            frame = StampedFrame(
                args.id, stat, phasors(args.format, k), (k % 200) - 100, (k % 50) - 25,
                [float(k), -k / 2], [k % 65536], cfg,
            )
            pmu.send(frame)
            k += 1
        next_send += period
        time.sleep(max(0.0, next_send - time.monotonic()))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
