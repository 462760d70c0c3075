#!/usr/bin/env python
"""Train EAR-Net on retinal vessels (two stages).
`python train_earnet.py -h` lists the flags; installed as the command `tfseg-train-earnet`
(tfseg.commands.train_earnet)."""

from tfseg.cli import run
from tfseg.commands.train_earnet import main

if __name__ == "__main__":
    run(main)
