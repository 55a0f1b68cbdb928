#!/usr/bin/env python3
"""pyPMU's PDC (the `synchrophasor` package) reading a PMU over TCP, as a C37.118 peer no one
here wrote: it asks for the header and the CFG-2, turns data on, reads frames, turns data off.

Prints one JSON object per line: {"header": text}, {"cfg2": {...}}, then {"data": {...}} per
data frame with the raw fields as pyPMU decoded them (freq and dfreq as sent), then {"done": n}.

pyPMU reads a float FREQ as a deviation from nominal and refuses 50 Hz, against C37.118.2 Table 6
(float FREQ is the frequency itself): the PMU under test sends integer FREQ to it.
"""

import argparse
import ast
import collections
import collections.abc
import json
import logging
import sys

# pyPMU predates Python 3.10, where collections.Sequence moved to collections.abc.
collections.Sequence = collections.abc.Sequence

from synchrophasor.frame import DataFrame  # noqa: E402
from synchrophasor.pdc import Pdc  # noqa: E402


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("synchrophasor.pdc").setLevel(logging.WARNING)

    pdc = Pdc(pdc_id=args.id, pmu_ip="127.0.0.1", pmu_port=args.port)
    pdc.run()
    header = pdc.get_header()
    text = header.get_header()
    # pyPMU keeps the text as str(bytes), "b'…'"; undo that to compare what was sent.
    if isinstance(text, str) and text.startswith(("b'", 'b"')):
        text = ast.literal_eval(text)
    emit({"header": text.decode() if isinstance(text, bytes) else text})
    config = pdc.get_config("cfg2")
    emit({"cfg2": {
        "station": config.get_station_name().strip(),
        "idcode": config.get_id_code(),
        "channels": [name.strip() for name in config.get_channel_names()],
        "data_rate": config.get_data_rate(),
        "fnom": config.get_fnom(),
        "time_base": config.get_time_base(),
    }})
    pdc.start()
    seen = 0
    unreadable = 0
    while seen < args.frames:
        frame = pdc.get()
        if isinstance(frame, DataFrame):
            emit({"data": {
                "soc": frame.get_soc(),
                "fracsec": frame.get_frasec()[0],
                "stat": frame.get_stat()[0],
                # pyPMU hands a single PMU's phasors over as (magnitude, angle in rad).
                "phasors_polar": [list(p) for p in frame.get_phasors()],
                "freq": frame.get_freq(),
                "dfreq": frame.get_dfreq(),
            }})
            seen += 1
        else:
            # pyPMU's get() cannot split two frames that arrive in one read.
            unreadable += 1
            if unreadable > 50:
                print("too many frames pyPMU could not read", file=sys.stderr)
                sys.exit(1)
    pdc.stop()
    pdc.quit()
    emit({"done": seen, "unreadable": unreadable})


if __name__ == "__main__":
    main()
