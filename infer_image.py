#!/usr/bin/env python
"""Segment images with a trained model.
`python infer_image.py -h` lists the flags; installed as the command `tfseg-infer-image`
(tfseg.commands.infer_image)."""

from tfseg.cli import run
from tfseg.commands.infer_image import main

if __name__ == "__main__":
    run(main)
