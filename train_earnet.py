#!/usr/bin/env python
"""Train EAR-Net on retinal vessels: stage 1 (HRNet-OCR), error maps, stage 2 (error-attention refinement).
Thin wrapper over tfseg.training.earnet.train_earnet (see README)."""

import argparse
import logging
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfseg.cli import add_flag as add  # noqa: E402
from tfseg.data import DatasetError  # noqa: E402

METRICS = ("val_F1", "val_Acc", "val_Se", "val_Sp", "val_AUC")


def parse_args(argv=None):
    from tfseg.training.earnet import DATASETS, EARNetConfig  # TensorFlow: only once the flags are fine

    d = EARNetConfig(data_path="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add(p, "data_path", required=True, help="DRIVE root (training/, test/), STARE or CHASE_DB1 folder, or "
                                           "images/ + masks/ [+ fov/]")
    add(p, "dataset", default=d.dataset, choices=DATASETS, help="split protocol: DRIVE training/test, STARE "
                                                                "k-fold, CHASE first 20 / last 8, folder")
    add(p, "stage", default="all", choices=["1", "2", "all"])
    add(p, "config", default=d.config, choices=["small", "w18", "w48"], help="HRNet width (small: W18-small-v1)")
    add(p, "epochs", "--epoch", type=int, default=d.epochs, help="stage-1 epochs")
    add(p, "stage2_epochs", type=int, default=d.stage2_epochs)
    add(p, "lr", type=float, default=d.lr, help="stage-1 SGD learning rate (poly decay, power 2)")
    add(p, "stage2_lr", type=float, default=d.stage2_lr)
    add(p, "batchsize", "--batch_size", type=int, default=d.batch_size, help="global batch size")
    add(p, "crop", type=int, default=d.crop, help="training crop size")
    add(p, "val_split", "--val_fraction", type=float, default=d.val_fraction,
        help="fraction of the training images held out to pick each stage's checkpoint")
    add(p, "folds", type=int, default=d.folds, help="STARE: number of folds")
    add(p, "fold", type=int, default=d.fold, help="STARE: which fold is the test set")
    add(p, "scales", type=float, nargs="+", default=list(d.scales), help="inference scales (paper: 2 1 0.5)")
    add(p, "trained_model_path", help="--stage 2: the stage-1 best.weights.h5 to start from")
    add(p, "strategy", default=d.strategy, choices=["auto", "default", "mirrored", "multiworker"])
    add(p, "seed", type=int, default=d.seed)
    add(p, "steps_per_epoch", type=int,
        help="optimizer steps per epoch (default: one pass over the training images; the data repeats)")
    add(p, "logdir", default=d.logdir)
    add(p, "name", help="run folder name (default: earnet_<config>_<time>)")
    add(p, "no_export", action="store_true")
    add(p, "quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as error:
        raise SystemExit(f"error: {error}")


def run(args):
    from tfseg.training.earnet import EARNetConfig, train_earnet

    config = EARNetConfig(
        data_path=args.data_path, dataset=args.dataset, config=args.config, epochs=args.epochs,
        stage2_epochs=args.stage2_epochs, lr=args.lr, stage2_lr=args.stage2_lr, batch_size=args.batchsize,
        crop=args.crop, val_fraction=args.val_split, folds=args.folds, fold=args.fold, scales=tuple(args.scales),
        strategy=args.strategy, seed=args.seed, steps_per_epoch=args.steps_per_epoch, logdir=args.logdir,
        run_name=args.name, export=not args.no_export)
    stages = {"1": (1,), "2": (2,), "all": (1, 2)}[args.stage]
    results = train_earnet(config, stages, stage1_weights=args.trained_model_path, progress=not args.quiet)
    print("\n| stage | " + " | ".join(m.removeprefix("val_") for m in METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for stage in ("stage1", "stage2"):
        if stage in results:
            best = results[stage]["best"]
            print(f"| {stage} (best validation epoch) | " + " | ".join(f"{best.get(m, float('nan')):.4f}"
                                                                       for m in METRICS) + " |")
    for stage in ("stage1", "stage2"):
        if stage in results and "export" in results[stage]:
            print(f"{stage} export: {results[stage]['export']['savedmodel']}")
    if results["test"]:
        print(f"test split: {len(results['test'])} images; evaluate an export with test_model.py --task vessel")


if __name__ == "__main__":
    main()
