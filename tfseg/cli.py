"""Shared by the command lines (`tfseg.commands`): flags with both spellings, the flag vocabulary of the training
commands and the model flags of the inference ones, logging, and `run`, which ends every command the same way
on Ctrl-C. Imports no TensorFlow: the commands import it inside `main`, so that `--help` is quick and Ctrl-C
during start-up is handled too."""

import argparse
import dataclasses
import logging
import sys

INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a command ended by Ctrl-C
OWN_LOGGERS = ("tfseg", "root", "__main__")  # what a command prints at INFO; others only from WARNING
CHATTY_LOGGERS = ("tensorflow", "tf2onnx", "absl")  # they have handlers of their own


BAD_INPUT = (ValueError, OSError, ImportError)  # what a command reports as one `error:` line: DatasetError,
# OverwriteError, ModelFileError, ExportMismatchError and QuantizationError are ValueErrors, VideoError and
# ConnectionError OSErrors, ImportError a missing optional package


def command(parse_args, work, timestamps=False):
    """A command's `main(argv=None)`: the flags, logging, then `work(args)`, whose bad-input errors (BAD_INPUT)
    end in one `error:` line, never a traceback."""

    def main(argv=None):
        args = parse_args(argv)
        setup_logging(args.verbose, timestamps)
        try:
            work(args)
        except BAD_INPUT as error:
            raise SystemExit(f"error: {error}") from None

    return main


def console(main):
    """A console entry point (pyproject's [project.scripts]) that runs `main` as `run` does."""
    return lambda: run(main)


def add_verbose_flag(parser):
    add_flag(
        parser,
        "verbose",
        action="store_true",
        help="also print the INFO messages of TensorFlow, tf2onnx, absl and other libraries",
    )


def setup_logging(verbose=False, timestamps=False):
    """INFO messages of tfseg and the command itself; other libraries' (tf2onnx prints hundreds of lines per ONNX
    export, absl a line per checkpoint) only from WARNING, unless `verbose`. Leaves a logging configuration the
    process already has (an application's, pytest's) as it is."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(("%(asctime)s " if timestamps else "") + "%(levelname)s: %(message)s"))
    if not verbose:
        handler.addFilter(lambda record: record.levelno >= logging.WARNING or record.name.split(".")[0] in OWN_LOGGERS)
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    logging.basicConfig(level=logging.INFO, handlers=[handler])  # no-op where logging is configured already


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
    add_flag(
        parser,
        "model",
        required=True,
        help="an export folder (the fastest runtime in it is used), a SavedModel folder, a .keras, .onnx or "
        ".tflite file, a preset (a folder such as <run>/preset, an hf:// or kaggle:// handle, a registry name) or "
        "a PraNet .weights.h5 file (with --backbone)",
    )
    add_runtime_flag(parser)
    add_flag(parser, "backbone", help="backbone of a PraNet .weights.h5 --model")
    add_flag(parser, "input_size", "--inputsize", type=int, help="model input size (default: the training size)")
    add_threshold_flag(parser, "probability threshold of the binary mask")
    add_flag(parser, "tta", action="store_true", help="average with the horizontally flipped image's prediction")


DEFAULT_THRESHOLD = 0.5


def add_threshold_flag(parser, what):
    add_flag(
        parser,
        "threshold",
        type=threshold_flag,
        help=f"{what}: a number in (0, 1), or 'auto' for the one chosen on the validation images at training "
        f"(stored in the model's tfseg.json); default {DEFAULT_THRESHOLD}",
    )


def threshold_flag(text):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or 'auto', got {text!r}")
    return value


def resolve_threshold(threshold, predictor=None):
    """(value, where it came from) of a --threshold flag; 'auto' needs a model whose training chose one."""
    if threshold is None:
        return DEFAULT_THRESHOLD, "default"
    if threshold != "auto":
        return threshold, "--threshold"
    if predictor is None:
        raise ValueError("--threshold auto needs --model (prediction maps carry no threshold)")
    if predictor.threshold is None:
        raise ValueError(
            f"--threshold auto: {predictor.source} has no threshold chosen on validation images (its tfseg.json "
            "has no training record: exported before tfseg kept one, or trained elsewhere); give a number"
        )
    return predictor.threshold, "auto: chosen on the validation images at training (tfseg.json)"


RUNTIMES = ("tflite", "onnx", "savedmodel", "keras", "tflite_int8", "tflite_fp16", "onnx_int8")  # EXPORT_FILES


def add_runtime_flag(parser):
    add_flag(
        parser,
        "runtime",
        choices=RUNTIMES,
        help="which file of an export folder to run (default: the fastest here, as timed at export or at load)",
    )


def load_predictor(args):
    """The Predictor that `add_model_flags`' flags describe (imports TensorFlow); resolves `args.threshold`
    ('auto', the default) to a number."""
    from tfseg.inference import Predictor

    predictor = Predictor.load(args.model, args.input_size, args.backbone, args.runtime, args.tta)
    args.threshold, source = resolve_threshold(args.threshold, predictor)
    if source.startswith("auto"):
        logging.info("Threshold %g, chosen on the validation images at training", args.threshold)
    return predictor


def add_training_flags(parser, defaults, data_help):
    """The flags both training commands share, with one name, meaning and primary spelling each (the earlier TF
    port's spellings as aliases). `defaults`: the family's config; on --resume the stored settings count, and
    only --epochs, --strategy and --export_dir may change them."""
    add_flag(parser, "data_path", help=data_help + " (required unless --resume)")
    add_flag(parser, "epochs", "--epoch", type=int, help=f"epochs (default {defaults.epochs}; on --resume: as stored)")
    add_flag(parser, "lr", type=float, default=defaults.lr, help="learning rate")
    add_flag(parser, "batch_size", "--batchsize", type=int, default=defaults.batch_size, help="global batch size")
    add_flag(
        parser,
        "steps_per_epoch",
        type=int,
        default=defaults.steps_per_epoch,
        help="optimizer steps per epoch (none or 0: one pass over the training images; the data repeats, "
        "each pass augmented afresh)",
    )
    add_flag(
        parser,
        "val_fraction",
        "--data_split",
        "--val_split",
        type=float,
        default=defaults.val_fraction,
        help="seeded fraction of the training images held out to pick the best checkpoint",
    )
    add_flag(
        parser,
        "gclip",
        type=float,
        default=defaults.gclip,
        help="element-wise clip of the global-batch gradient (0: off)",
    )
    add_flag(
        parser,
        "strategy",
        choices=("auto", "default", "mirrored", "multiworker"),
        help=f"tf.distribute strategy (default {defaults.strategy}; on --resume: as stored)",
    )
    add_flag(parser, "mixed_precision", action="store_true", help="mixed_bfloat16 compute (GPUs; slow on CPUs)")
    add_flag(parser, "seed", type=int, default=defaults.seed)
    add_flag(parser, "init_weights", metavar="FILE.weights.h5", help="weights the training starts from")
    add_flag(parser, "logdir", default=defaults.logdir, help="parent of the run folder")
    add_flag(parser, "name", help="run folder name (default: <model>_<time>)")
    add_flag(
        parser,
        "export_dir",
        "--trained_model_path",
        help="folder the best model is exported to (default: <run folder>/export)",
    )
    add_flag(
        parser,
        "no_export",
        action="store_true",
        help="skip the export at the end (the run's preset is still written: export_model.py --model RUN/preset "
        "exports it later)",
    )
    add_flag(
        parser,
        "allow_near_duplicates",
        action="store_true",
        help="do not warn when validation images near-duplicate training images (the run's data_check.json "
        "still lists them)",
    )
    add_flag(
        parser,
        "resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, with its stored settings",
    )
    add_flag(parser, "quiet", action="store_true", help="no progress bar")
    add_verbose_flag(parser)


def check_training_args(parser, args):
    if not args.data_path and not args.resume:
        parser.error("--data_path is required (or --resume RUN_DIR)")
    if args.export_dir and args.export_dir.endswith((".h5", ".keras")):
        parser.error(
            f"--export_dir (--trained_model_path) is the folder the model is exported to, not a weights "
            f"file ({args.export_dir}); weights to start from go to --init_weights"
        )
    return args


def config_from_args(config_class, args, **settings):
    """A family's config from the parsed flags named like its fields (those given), plus `settings`."""
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if getattr(args, field.name, None) is not None
    }
    return config_class(**{**given, "run_name": args.name, "export": not args.no_export, **settings})
