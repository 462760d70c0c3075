"""Train EAR-Net on retinal vessels: stage 1 (HRNet-OCR), error maps, stage 2 (error-attention refinement), see
README: tfseg.training.earnet.train_earnet."""

import argparse
import json
import os

from tfseg import cli
from tfseg.cli import add_flag as add

METRICS = ("val_F1", "val_Acc", "val_Se", "val_Sp", "val_AUC")


def parse_args(argv=None):
    from tfseg.losses import CRITERIA  # TensorFlow: inside main, where Ctrl-C is handled
    from tfseg.training.earnet import DATASETS, ERROR_MAPS, RECIPE_FIELDS, RECIPES, EARNetConfig

    d = EARNetConfig(data_path="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_training_flags(
        p, d, "DRIVE root (training/, test/), STARE or CHASE_DB1 folder, or images/ + masks/ [+ fov/]"
    )
    add(
        p,
        "recipe",
        default=d.recipe,
        choices=list(RECIPES),
        help="defaults of "
        + ", ".join(RECIPE_FIELDS)
        + "; a flag given overrides them. "
        + "; ".join(
            f"{name}: " + ", ".join(f"{key} {value}" for key, value in recipe.items())
            for name, recipe in RECIPES.items()
        )
        + " (cpu: lr 1e-3 adam / 1e-2 sgd, stage2_lr lr / 10). official starts from the HRNet-W48 ImageNet weights "
        "(--backbone_weights FILE, or --backbone_weights none)",
    )
    add(
        p,
        "dataset",
        default=d.dataset,
        choices=DATASETS,
        help="split protocol: DRIVE training/test, STARE k-fold, CHASE first 20 / last 8, folder",
    )
    add(
        p,
        "stage",
        default="all",
        choices=["1", "2", "all"],
        help="--stage 2 alone starts from the stage-1 weights given as --init_weights",
    )
    add(p, "config", choices=["small", "w18", "w48"], help="HRNet width (small: W18-small-v1)")
    add(
        p,
        "backbone_weights",
        metavar="FILE.weights.h5|none",
        help="the trunk's start in stage 1: HRNet ImageNet weights of the --config's width, converted by "
        "convert_weights.py --model hrnet_w48|hrnet_w18|hrnet_w18_small (none: from scratch); unused with "
        "--init_weights (a whole model's weights)",
    )
    add(p, "stage2_epochs", type=int, help="(default: the recipe's; on --resume: as stored)")
    add(
        p,
        "optimizer",
        choices=["adam", "sgd"],
        help="adam learns from scratch; sgd: the official recipe (momentum 0.9), meant for a pretrained trunk",
    )
    add(p, "stage2_lr", type=float, help="(default: the recipe's; cpu: --lr / 10, with --lr 1e-3 adam, 1e-2 sgd)")
    add(p, "crop", type=int, help="training crop size")
    add(p, "folds", type=int, default=d.folds, help="STARE: number of folds")
    add(p, "fold", type=int, default=d.fold, help="STARE: which fold is the test set")
    add(p, "scales", type=float, nargs="+", default=list(d.scales), help="inference scales (paper: 2 1 0.5)")
    add(
        p,
        "norm",
        choices=["group", "batch"],
        help="normalisation of the conv units: group (learns with batches of 2) or batch (the original, for "
        "large batches)",
    )
    add(
        p,
        "loss",
        choices=list(CRITERIA),
        help="criterion of both stages: ce (softmax cross-entropy) or rmi (0.5 sigmoid BCE + 0.5 RMI lower bound on "
        "the fused prediction, sigmoid BCE on the aux and single-scale outputs; the official recipe's)",
    )
    add(
        p,
        "region_batchnorm",
        action="store_true",
        help="BatchNorm on OCR's object-region vectors as the original (off: with 2 classes it normalises over "
        "2 x batch values)",
    )
    add(
        p,
        "error_maps",
        default=d.error_maps,
        choices=list(ERROR_MAPS),
        help="which stage-1 model predicts each training image's error map for stage 2: in_sample (the original: "
        "the best stage-1 model, which fitted the image) or out_of_fold (--error_folds extra stage-1 trainings, "
        "each on the other folds of the training images; that much longer)",
    )
    add(p, "error_folds", type=int, default=d.error_folds, help="folds of --error_maps out_of_fold (at least 2)")
    p.set_defaults(**dict.fromkeys(RECIPE_FIELDS))  # None: not given
    args = cli.check_training_args(p, p.parse_args(argv))
    if not args.resume:  # the recipe's values where no flag was given (on --resume the stored ones count)
        given = {name: getattr(args, name) for name in RECIPE_FIELDS if getattr(args, name) is not None}
        resolved = EARNetConfig(data_path="", recipe=args.recipe, **given)
        vars(args).update({name: getattr(resolved, name) for name in RECIPE_FIELDS})
    return args


def train(args):
    from tfseg.training.earnet import EARNetConfig, percent, resume_config, train_earnet

    if args.resume:
        config = resume_config(
            args.resume,
            epochs=args.epochs,
            stage2_epochs=args.stage2_epochs,
            strategy=args.strategy,
            export_dir=args.export_dir,
            export=not args.no_export,
        )
    else:
        config = cli.config_from_args(EARNetConfig, args, scales=tuple(args.scales))
    stages = {"1": (1,), "2": (2,), "all": (1, 2)}[args.stage]
    results = train_earnet(config, stages, progress=not args.quiet, resume=bool(args.resume))
    print("\n| stage | " + " | ".join(m.removeprefix("val_") for m in METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for stage in ("stage1", "stage2"):
        if stage in results:
            best = results[stage]["best"]
            print(
                f"| {stage} (best validation epoch) | "
                + " | ".join(f"{best.get(m, float('nan')):.4f}" for m in METRICS)
                + " |"
            )
    summary = f"{results['error_maps']}.json" if results.get("error_maps") else None
    if summary and os.path.isfile(summary):
        with open(summary) as f:
            errors = json.load(f)
        print(
            f"error maps: {results['error_maps']} ({errors['source'].replace('_', ' ')}: "
            f"{percent(errors['error_pixel_fraction'])} of the "
            f"{errors['region']} pixels, {percent(errors['missed_vessel_fraction'])} of the vessel pixels missed)"
        )
    written = {stage: results[stage].get("export", {}) for stage in ("stage1", "stage2") if stage in results}
    for stage, paths in written.items():
        if "savedmodel" in paths:
            print(f"{stage} export: {paths['savedmodel']}")
        elif "preset" in paths:
            output = os.path.join(os.path.dirname(paths["preset"]), "export")
            print(
                f"{stage} preset: {paths['preset']} (export: python export_model.py --model {paths['preset']} "
                f"--output {output})"
            )
    if results.get("test_ids") and "savedmodel" in written.get("stage2", written.get("stage1", {})):
        stage = "stage2" if "stage2" in results else "stage1"
        test_data = (
            f"{os.path.join(config.data_path, 'test')}"
            if config.dataset == "drive"
            else f"{config.data_path} --split_file {results['test_ids']}"
        )  # DRIVE's test/ is a folder
        print(
            f"test split ({len(results['test'])} images): python test_model.py --model "
            f"{results[stage]['export']['savedmodel']} --data_path {test_data}"
        )


main = cli.command(parse_args, train, timestamps=True)
console = cli.console(main)
