#!/usr/bin/env python
"""Segment a video file or camera stream with an overlay.
`python infer_video.py -h` lists the flags; installed as the command `tfseg-infer-video`
(tfseg.commands.infer_video)."""

from tfseg.cli import run
from tfseg.commands.infer_video import main

if __name__ == "__main__":
    run(main)
