"""Export a trained model to SavedModel, ONNX and TFLite (and .keras), each checked against the Keras model:
the max absolute logit difference is printed, and the export fails beyond --tolerance. Quantised formats
(tflite_int8, tflite_fp16, onnx_int8) are checked by their Dice on validation images against the float file:
the change is printed beside the speed-up, and the export fails when one loses more than --max_dice_drop. Every
format's batch-1 latency on this machine is printed and stored: inference runs the fastest. See README."""

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
        help="a .keras file, a training run's export folder (holding model.keras), a preset (a folder such as "
        "<run>/preset, an hf:// or kaggle:// handle, a registry name) or a PraNet .weights.h5 file (with --backbone)",
    )
    add(
        p,
        "formats",
        default="savedmodel,onnx,tflite",
        help=f"comma-separated: {', '.join(cli.RUNTIMES)} (the last three quantised: TFLite int8 weights and "
        "activations, TFLite float16 weights, ONNX Runtime QDQ with uint8 activations and 7-bit int8 weights)",
    )
    add(
        p,
        "output",
        required=True,
        help="folder for model.keras, savedmodel/, model.onnx, model.tflite, model_int8.tflite, model_fp16.tflite, "
        "model_int8.onnx, tfseg.json",
    )
    add(p, "backbone", help="backbone of a PraNet .weights.h5 --model")
    add(
        p,
        "input_size",
        "--inputsize",
        type=int,
        nargs="+",
        help="input size H [W] the ONNX/TFLite files are made for (default: the model's training size; another "
        "size is scored against it on the validation images)",
    )
    add(p, "tolerance", type=float, default=1e-3, help="largest allowed max |logit difference| vs Keras")
    add(
        p,
        "calibration",
        metavar="FOLDER",
        help="images the int8 formats are calibrated on: a dataset folder (images/ and masks/) or a folder of "
        "images (default: the training images of the model's training run)",
    )
    add(p, "calibration_images", type=int, default=100, help="calibrate on at most this many (a seeded sample)")
    add(
        p,
        "validation",
        metavar="FOLDER",
        help="images and masks the quantised formats are scored on, against the float file, and another "
        "--input_size against the training size (default: the validation images of the model's training run)",
    )
    add(
        p,
        "max_dice_drop",
        type=float,
        default=0.01,
        help="refuse a quantised file that loses more than this in meanDice or dice@0.5 (another --input_size: "
        "a warning)",
    )
    cli.add_verbose_flag(p)
    return p.parse_args(argv)


def export(args):
    from tfseg.export import check_formats, export_model  # TensorFlow after the flags
    from tfseg.files import check_fingerprint, read_metadata, refuse_inside
    from tfseg.inference.predictor import load_keras_model
    from tfseg.models import preset
    from tfseg.quantization import QuantizationSettings

    formats = check_formats(f.strip() for f in args.formats.split(",") if f.strip())
    if preset.is_handle(args.model):  # its folder (a run's <run>/preset) or a download
        model, stored = preset.load(args.model)
        source = Path(args.model) / preset.WEIGHTS_FILE  # a run's <run>/preset/: args.json two levels up
        if source.is_file():
            refuse_inside(args.output, [args.model])
    else:
        source = Path(args.model)
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
    run_dir = source.resolve().parent.parent  # a run's export/model.keras: the run's args.json is above it
    settings = QuantizationSettings(
        args.calibration,
        args.validation,
        str(run_dir) if source.is_file() and (run_dir / "args.json").is_file() else None,  # else the record's
        args.max_dice_drop,
        args.calibration_images,
    )
    results = export_model(model, args.output, formats, input_size, args.tolerance, training, settings)
    print(f"\n{'format':<12} {'max |logit diff| vs Keras':>26} {'batch-1 ms':>11}  path")
    for name, result in results.items():
        difference = "(Dice below)" if result["max_abs_diff"] is None else f"{result['max_abs_diff']:.2e}"
        print(f"{name:<12} {difference:>26} {result['median_ms']:>11.1f}  {result['path']}")
    checked = {name: result["quantization"] for name, result in results.items() if "quantization" in result}
    if checked:
        print_quantization(checked)
    print(f"\nPredict with any of them: python infer_image.py --model {args.output} --image IMAGE --output DIR")


def print_quantization(checked):
    """The Dice check of the quantised files: float vs quantised, the change, the speed-up."""
    validation = next(iter(checked.values()))["validation"]
    print(f"\nQuantised vs float on {validation['images']} validation images ({validation['source']}):")
    print(f"{'format':<12} {'vs':<6} {'meanDice':>28} {'dice@0.5':>28} {'speed-up':>9}")
    for name, report in checked.items():
        cells = [
            f"{report['float'][key]:.4f} -> {report['quantized'][key]:.4f} ({report['change'][key]:+.4f})"
            for key in ("meanDice", "dice@0.5")
        ]
        print(f"{name:<12} {report['reference']:<6} {cells[0]:>28} {cells[1]:>28} {report['speedup']:>8.2f}x")


main = cli.command(parse_args, export)
console = cli.console(main)
