#!/usr/bin/env python
"""Evaluate a model or prediction maps with the polyp or vessel protocol.
`python test_model.py -h` lists the flags; installed as the command `tfseg-eval`
(tfseg.commands.test_model)."""

from tfseg.cli import run
from tfseg.commands.test_model import main

if __name__ == "__main__":
    run(main)
