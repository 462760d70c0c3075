#!/usr/bin/env python
"""Segment images with a trained model: per image the binary mask, the probability map and an overlay (PNG).
Unreadable files are reported and skipped. See README."""

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfseg.cli import add_flag as add  # noqa: E402
from tfseg.cli import add_model_flags, load_predictor, run  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_flags(p)
    add(p, "image", required=True, help="an image file, a folder of images or a glob pattern (quoted)")
    add(p, "output", required=True, help="folder for <name>_mask.png, <name>_prob.png, <name>_overlay.png "
                                         "(<name>: the file's stem; stem_ext where two inputs share a stem)")
    add(p, "quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from tfseg.inference import predict_images  # TensorFlow after the flags are parsed

    try:
        summary = predict_images(load_predictor(args), args.image, args.output, args.threshold,
                                 progress=not args.quiet)
    except (FileNotFoundError, ValueError, ImportError, OSError) as error:
        raise SystemExit(f"error: {error}")
    print(f"{len(summary['written'])} image(s) segmented with {summary['runtime']}: {summary['files_written']} "
          f"file(s) written into {summary['output']}" + (f"; {len(summary['failed'])} skipped:" if summary["failed"]
                                                          else ""))
    for path, reason in summary["failed"].items():
        print(f"  {path}: {reason}")


if __name__ == "__main__":
    run(main)
