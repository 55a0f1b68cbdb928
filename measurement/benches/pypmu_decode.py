#!/usr/bin/env python3
"""Times pyPMU's C37.118 data-frame parser on the same frames as the Rust decode benchmark.

usage: pypmu_decode.py CFG_FRAME_FILE DATA_FRAMES_FILE SECONDS
Prints one line: the frames decoded per second.
"""

import collections
import collections.abc
import sys
import time

# pyPMU predates Python 3.10, where collections.Sequence moved to collections.abc.
collections.Sequence = collections.abc.Sequence

from synchrophasor.frame import CommonFrame, DataFrame  # noqa: E402


def split_frames(stream):
    frames = []
    while len(stream) >= 4:
        size = int.from_bytes(stream[2:4], "big")
        frames.append(stream[:size])
        stream = stream[size:]
    return frames


def main():
    cfg_path, data_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cfg = CommonFrame.convert2frame(open(cfg_path, "rb").read())
    frames = split_frames(open(data_path, "rb").read())
    # Check pyPMU really decodes them before timing it.
    DataFrame.convert2frame(frames[0], cfg).get_measurements()
    decoded = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for frame in frames:
            DataFrame.convert2frame(frame, cfg)
        decoded += len(frames)
    print(decoded / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
