#!/usr/bin/env python
"""Export a trained model to SavedModel, ONNX and TFLite, each checked.
`python export_model.py -h` lists the flags; installed as the command `tfseg-export`
(tfseg.commands.export_model)."""

from tfseg.cli import run
from tfseg.commands.export_model import main

if __name__ == "__main__":
    run(main)
