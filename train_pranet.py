#!/usr/bin/env python
"""Train PraNet on a folder of images/ + masks/.
`python train_pranet.py -h` lists the flags; installed as the command `tfseg-train-pranet`
(tfseg.commands.train_pranet)."""

from tfseg.cli import run
from tfseg.commands.train_pranet import main

if __name__ == "__main__":
    run(main)
