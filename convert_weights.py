#!/usr/bin/env python
"""Convert the original PyTorch PraNet / Res2Net checkpoints.
`python convert_weights.py -h` lists the flags; installed as the command `tfseg-convert`
(tfseg.commands.convert_weights)."""

from tfseg.cli import run
from tfseg.commands.convert_weights import main

if __name__ == "__main__":
    run(main)
