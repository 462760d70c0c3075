"""Export a trained model to SavedModel, ONNX and TFLite (and .keras), each checked against the Keras model:
the max absolute logit difference is printed, and the export fails beyond --tolerance. See README."""

import argparse
from pathlib import Path

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add(
        p,
        "model",
        required=True,
        help="a .keras file, a training run's export folder (holding model.keras) or a "
        "PraNet .weights.h5 file (with --backbone)",
    )
    add(p, "formats", default="savedmodel,onnx,tflite", help="comma-separated: keras, savedmodel, onnx, tflite")
    add(p, "output", required=True, help="folder for model.keras, savedmodel/, model.onnx, model.tflite, tfseg.json")
    add(p, "backbone", help="backbone of a PraNet .weights.h5 --model")
    add(
        p,
        "input_size",
        "--inputsize",
        type=int,
        nargs="+",
        help="input size H [W] the ONNX/TFLite files are made for (default: the model's training size)",
    )
    add(p, "tolerance", type=float, default=1e-3, help="largest allowed max |logit difference| vs Keras")
    cli.add_verbose_flag(p)
    return p.parse_args(argv)


def export(args):
    from tfseg.export import check_formats, export_model  # TensorFlow after the flags
    from tfseg.files import refuse_inside
    from tfseg.inference.predictor import check_fingerprint, load_keras_model, read_metadata

    source = Path(args.model)
    formats = check_formats(f.strip() for f in args.formats.split(",") if f.strip())
    if source.is_dir():
        source = source / "model.keras"
    if not source.is_file():
        raise FileNotFoundError(f"Model not found: {source}")
    refuse_inside(args.output, [source])
    stored = read_metadata(source)
    check_fingerprint(source, stored)
    model = load_keras_model(source, args.backbone)
    # the size: asked for (H [W]), else the one the model was exported at, else its own (inference spec)
    input_size = (args.input_size * 2)[:2] if args.input_size else (stored or {}).get("input_size")
    training = (stored or {}).get("training")  # how it was trained and chosen: the protocol card reads it
    results = export_model(model, args.output, formats, input_size, args.tolerance, training)
    print(f"\n{'format':<11} {'max |logit diff| vs Keras':>26}  path")
    for name, result in results.items():
        print(f"{name:<11} {result['max_abs_diff']:>26.2e}  {result['path']}")
    print(f"\nPredict with any of them: python infer_image.py --model {args.output} --image IMAGE --output DIR")


main = cli.command(parse_args, export)
console = cli.console(main)
