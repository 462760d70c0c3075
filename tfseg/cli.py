"""Shared by the top-level scripts: flags with both spellings, the inference scripts' model flags, and `run`, which
ends every command line the same way on Ctrl-C. Imports no TensorFlow: the scripts import it inside `main`, so
that Ctrl-C during start-up is handled too."""

import sys

INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C


def run(main, argv=None):
    """Calls `main(argv)`; Ctrl-C (at start-up too) ends with one line on stderr, naming the run to resume when
    the interruption carries one (`tfseg.training.TrainingInterrupted`), and exit status 130; no traceback."""
    try:
        main(argv)
    except KeyboardInterrupt as interrupt:
        resume = getattr(interrupt, "resume_path", None)
        print("interrupted" + (f"; continue with --resume {resume}" if resume else ""), file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)


def add_flag(parser, name, *aliases, **kwargs):
    """Adds `--name` (and `aliases`) with their dash spellings (`--data-path` for `--data_path`)."""
    flags = [f"--{name}", *aliases]
    flags += [f.replace("_", "-") for f in flags if "_" in f]
    parser.add_argument(*flags, dest=name, **kwargs)


def add_model_flags(parser):
    """The flags of the inference scripts that choose a model and how it predicts."""
    add_flag(parser, "model", required=True,
             help="an export folder (the fastest runtime in it is used), a SavedModel folder, a .keras, .onnx or "
                  ".tflite file, or a PraNet .weights.h5 file (with --backbone)")
    add_runtime_flag(parser)
    add_flag(parser, "backbone", help="backbone of a PraNet .weights.h5 --model")
    add_flag(parser, "inputsize", "--input_size", type=int, help="model input size (default: the training size)")
    add_flag(parser, "threshold", type=float, default=0.5, help="probability threshold of the binary mask")
    add_flag(parser, "tta", action="store_true", help="average with the horizontally flipped image's prediction")


def add_runtime_flag(parser):
    add_flag(parser, "runtime", choices=["tflite", "onnx", "savedmodel", "keras"],
             help="which file of an export folder to run (default: the fastest available)")


def load_predictor(args):
    """The Predictor that `add_model_flags`' flags describe (imports TensorFlow)."""
    from tfseg.inference import Predictor

    return Predictor.load(args.model, args.inputsize, args.backbone, args.runtime, args.tta)
