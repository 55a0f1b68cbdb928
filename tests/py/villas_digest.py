"""Decodes VILLAS protobuf payloads with the platform's own decoder (villas-node) and prints
the digest of each block the way the platform's tooling computes it, one line per block:
`<first seq> <last seq> <samples> <DIGEST HEX>`. Payload files are read in name order."""
import sys
from pathlib import Path

from villas.node.digest import Frame
from villas.node.formats import Protobuf

samples = []
for path in sorted(Path(sys.argv[1]).iterdir()):
    samples.extend(Protobuf().loadb(path.read_bytes()))
for frame in Frame.group(samples):
    digest = frame.digest("sha256")
    print(frame[0].sequence, frame[-1].sequence, len(frame), digest.bytes.hex().upper())
