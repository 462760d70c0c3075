"""Shared by the top-level scripts: flags with both spellings, the inference scripts' model flags."""


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
    add_flag(parser, "runtime", choices=["tflite", "onnx", "savedmodel", "keras"],
             help="which file of an export folder to run (default: the fastest available)")
    add_flag(parser, "backbone", help="backbone of a PraNet .weights.h5 --model")
    add_flag(parser, "inputsize", "--input_size", type=int, help="model input size (default: the training size)")
    add_flag(parser, "threshold", type=float, default=0.5, help="probability threshold of the binary mask")
    add_flag(parser, "tta", action="store_true", help="average with the horizontally flipped image's prediction")


def load_predictor(args):
    """The Predictor that `add_model_flags`' flags describe (imports TensorFlow)."""
    from tfseg.inference import Predictor

    return Predictor.load(args.model, args.inputsize, args.backbone, args.runtime, args.tta)
