"""Segment images with a trained model: per image the binary mask, the probability map and an overlay (PNG).
Unreadable files are reported and skipped. See README."""

import argparse

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_model_flags(p)
    add(p, "image", required=True, help="an image file, a folder of images or a glob pattern (quoted)")
    add(
        p,
        "output",
        required=True,
        help="folder for <name>_mask.png, <name>_prob.png, <name>_overlay.png "
        "(<name>: the file's stem; stem_ext where two inputs share a stem)",
    )
    add(p, "quiet", action="store_true", help="no progress bar")
    cli.add_verbose_flag(p)
    return p.parse_args(argv)


def segment(args):
    from tfseg.inference import predict_images  # TensorFlow after the flags are parsed

    predictor = cli.load_predictor(args)  # resolves --threshold auto
    summary = predict_images(predictor, args.image, args.output, args.threshold, progress=not args.quiet)
    print(
        f"{len(summary['written'])} image(s) segmented with {summary['runtime']}: {summary['files_written']} "
        f"file(s) written into {summary['output']}"
        + (f"; {len(summary['failed'])} skipped:" if summary["failed"] else "")
    )
    for path, reason in summary["failed"].items():
        print(f"  {path}: {reason}")


main = cli.command(parse_args, segment)
console = cli.console(main)
