"""Segment a video file or a camera stream with a trained model: the overlay (coloured fill, contour, HUD with
FPS and latency) into a video file, reading, inference and writing in parallel. See README."""

import argparse
import json

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_model_flags(p)
    add(p, "video", required=True, help="a video file, or a camera index (0, 1, ...)")
    add(p, "output", default="out.mp4", help="output video (.mp4: H.264 when OpenCV can, else mp4v; .avi: MJPG)")
    add(p, "batch_size", "--batchsize", type=int, default=1, help="frames per inference call")
    add(
        p,
        "smooth",
        type=float,
        default=0.0,
        help="exponential smoothing of the probabilities over time: p = ALPHA * previous + (1 - ALPHA) * p",
    )
    add(p, "show", action="store_true", help="also show the frames in a window (when a display exists)")
    add(p, "report", metavar="FILE.json", help="write the run's summary as JSON")
    add(
        p,
        "live",
        action=argparse.BooleanOptionalAction,
        help="segment the newest frame and skip those the model cannot keep up with, so the overlay stays current "
        "(default: on for a camera, off for a file; on for a file reads it at its frame rate, as a camera would "
        "deliver it); the output holds each overlay until the next, keeping the source's timing",
    )
    add(
        p,
        "model_workers",
        type=int,
        help="runtimes run in parallel, each on its share of the cores (default: 2 for a file on 2 cores or more "
        "with a TFLite or ONNX file, else 1; live always 1)",
    )
    add(p, "max_frames", type=int, help="stop after this many frames")
    cli.add_verbose_flag(p)
    return p.parse_args(argv)


def segment(args):
    from tfseg import files  # TensorFlow after the flags are parsed
    from tfseg.inference import segment_video
    from tfseg.inference.video import check_writable, is_camera

    if args.report:  # checked before the work, not after the whole video
        inputs = [args.output] + ([] if is_camera(args.video) else [args.video])
        files.refuse_overwrite([args.report], inputs, "report")
        check_writable(args.report)
    predictor = cli.load_predictor(args)
    report = segment_video(
        predictor,
        args.video,
        args.output,
        args.threshold,
        args.batch_size,
        args.smooth,
        args.show,
        max_frames=args.max_frames,
        live=args.live,
        model_workers=args.model_workers,
    )
    print(json.dumps(report, indent=2))
    if args.report:
        try:
            files.write_json(args.report, report)
        except OSError as error:
            raise OSError(f"cannot write the report {args.report} (printed above): {error}") from None
    print(f"Overlay video: {report['output']}" + (f"; report: {args.report}" if args.report else ""))


main = cli.command(parse_args, segment)
console = cli.console(main)
