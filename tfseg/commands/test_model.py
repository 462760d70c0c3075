"""Evaluate a trained model, or a folder of prediction maps from any model, with the literature's protocol:
polyp (PraNet's MATLAB toolbox, via pysodmetrics) or vessel (Acc/Se/Sp/F1/IoU/MCC/AUC). See README."""

import argparse
from pathlib import Path

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    add(
        source,
        "model",
        nargs="+",
        help="an export folder (--runtime picks its file), a SavedModel folder, a .keras, .onnx or "
        ".tflite file, a preset (a folder such as <run>/preset, an hf:// or kaggle:// handle, a registry name) or a "
        "PraNet .weights.h5 file (with --backbone); several: compared, the first as reference",
    )
    add(
        source,
        "pred_dir",
        nargs="+",
        help="folder of prediction maps (any model; 8/16-bit grey, or float probabilities in "
        "[0, 1], e.g. float32 TIFF) named like the images or masks; with several datasets, "
        "one sub-folder per dataset; several folders: compared, the first as reference",
    )
    add(p, "names", nargs="+", help="labels of the compared methods (default: their folder or file names)")
    add(
        p,
        "data_path",
        required=True,
        help="one dataset (images/ + masks/, or the DRIVE/STARE/CHASE_DB1 layout) or a root of several, e.g. "
        "PraNet's TestDataset/",
    )
    add(
        p,
        "split_file",
        help="evaluate only the ids listed (one per line), e.g. Kvasir-SEG's pranet_kvasir_test_names.txt",
    )
    cli.add_runtime_flag(p)
    add(
        p,
        "backbone",
        help="backbone of a PraNet .weights.h5 --model: resnet50 | mobilenetv2 | res2net50 (the "
        "original weights converted by convert_weights.py)",
    )
    add(p, "task", choices=["polyp", "vessel"], help="protocol (default: the model's task, else polyp)")
    cli.add_threshold_flag(p, "binarisation threshold of dice@T/iou@T and of the vessel metrics")
    add(p, "input_size", "--inputsize", type=int, help="model input size (default: the training size)")
    add(p, "save_maps", metavar="DIR", help="write the uint8 prediction maps, one PNG per image named like the mask")
    add(p, "output", help="results folder (default: beside the model or the prediction folder, '<name>_eval')")
    add(
        p,
        "estimate_fov",
        action="store_true",
        help="vessel task: estimate a FOV mask (threshold + erosion) for images without one, for the FOV metrics",
    )
    add(p, "observer", type=int, default=1, choices=[1, 2], help="manual annotation of DRIVE/CHASE_DB1")
    add(
        p,
        "allow_size_mismatch",
        action="store_true",
        help="score pairs whose image and mask sizes differ (listed in a warning) instead of refusing them",
    )
    add(p, "workers", type=int, help="scoring processes (default: one per CPU core)")
    add(p, "no_plots", action="store_true", help="skip the PNG plots")
    add(
        p,
        "bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples of the images for the 95%% confidence intervals (0: none)",
    )
    add(p, "seed", type=int, default=0, help="seed of the bootstrap")
    add(p, "quiet", action="store_true", help="no progress bar")
    cli.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.names and len(args.names) != len(args.model or args.pred_dir):
        p.error(f"--names gives {len(args.names)} names for {len(args.model or args.pred_dir)} methods")
    return args


def evaluate_model(args):
    sources = args.model or args.pred_dir
    if len(sources) > 1:
        compare_methods(args, sources)
        return
    from tfseg.evaluation import evaluate  # after the flags: Ctrl-C while importing is handled by cli.run
    from tfseg.evaluation.protocol import card_lines
    from tfseg.evaluation.report import results_markdown

    # a hub handle's results go to the current folder, named after it
    source = Path(sources[0].rstrip("/").split("/")[-1]) if "://" in sources[0] else Path(sources[0])
    name = source.name.removesuffix(".weights.h5") if source.name.endswith(".weights.h5") else source.stem
    output = args.output or str(source.parent / f"{name}_eval")
    predictor, task = None, args.task or "polyp"
    if args.model:
        from tfseg.inference import Predictor  # TensorFlow only when a model is evaluated

        predictor = Predictor.load(sources[0], input_size=args.input_size, backbone=args.backbone, runtime=args.runtime)
        task = args.task or predictor.task
    threshold, threshold_source = cli.resolve_threshold(args.threshold, predictor)
    result = evaluate(
        args.data_path,
        output,
        task=task,
        predictor=predictor,
        pred_dir=None if args.model else sources[0],
        threshold=threshold,
        threshold_source=threshold_source,
        **scoring_options(args),
    )
    print(results_markdown(result["results"], task, threshold, result["protocol"]))
    print("\n" + "\n".join(card_lines(result["protocol"])))
    print(
        f"\nResults in {output}: results.json, results.csv, per_image.csv"
        + ("" if args.no_plots else ", dice_vs_threshold.png, cases_<dataset>.png")
    )
    if args.save_maps:
        print(f"Prediction maps in {args.save_maps}")


def scoring_options(args):
    """The flags that `evaluate` and `compare` share."""
    return {
        "save_maps": args.save_maps,
        "observer": args.observer,
        "split_file": args.split_file,
        "estimate_fov": args.estimate_fov,
        "workers": args.workers,
        "plots": not args.no_plots,
        "progress": not args.quiet,
        "allow_size_mismatch": args.allow_size_mismatch,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
    }


def compare_methods(args, sources):
    """Several --model or --pred_dir: each evaluated into <output>/<name>/, then compared on the same images."""
    from tfseg.evaluation.compare import compare, comparison_markdown, default_names

    methods = dict(zip(args.names or default_names(sources), sources))
    output = args.output or str(Path(sources[0]).parent / "comparison")
    if args.model:
        from tfseg.inference import Predictor  # TensorFlow only when models are evaluated

        methods = {
            name: Predictor.load(model, input_size=args.input_size, backbone=args.backbone, runtime=args.runtime)
            for name, model in methods.items()
        }
    thresholds = {cli.resolve_threshold(args.threshold, source if args.model else None) for source in methods.values()}
    if len(thresholds) > 1:
        chosen = ", ".join(f"{value:g}" for value, _ in sorted(thresholds))
        raise ValueError(f"--threshold auto: the models chose different thresholds ({chosen}); give one number")
    threshold, threshold_source = thresholds.pop()
    result = compare(
        args.data_path,
        output,
        methods,
        task=args.task,
        threshold=threshold,
        threshold_source=threshold_source,
        **scoring_options(args),
    )
    print(comparison_markdown(result["comparison"]))
    print(
        f"\nComparison in {output}: comparison.json, comparison.csv"
        + ("" if args.no_plots else ", comparison_<dataset>.png")
        + "; each method's evaluation in <name>/"
    )


main = cli.command(parse_args, evaluate_model)
console = cli.console(main)
