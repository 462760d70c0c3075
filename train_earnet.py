#!/usr/bin/env python
"""Train EAR-Net on retinal vessels: stage 1 (HRNet-OCR), error maps, stage 2 (error-attention refinement).
Thin wrapper over tfseg.training.earnet.train_earnet (see README)."""

import argparse
import logging
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfseg.cli import add_flag as add  # noqa: E402
from tfseg.cli import run  # noqa: E402

METRICS = ("val_F1", "val_Acc", "val_Se", "val_Sp", "val_AUC")


def parse_args(argv=None):
    from tfseg.training.earnet import DATASETS, EARNetConfig  # TensorFlow: only once the flags are fine

    d = EARNetConfig(data_path="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add(p, "data_path", help="DRIVE root (training/, test/), STARE or CHASE_DB1 folder, or "
                                           "images/ + masks/ [+ fov/]")
    add(p, "dataset", default=d.dataset, choices=DATASETS, help="split protocol: DRIVE training/test, STARE "
                                                                "k-fold, CHASE first 20 / last 8, folder")
    add(p, "stage", default="all", choices=["1", "2", "all"])
    add(p, "config", default=d.config, choices=["small", "w18", "w48"], help="HRNet width (small: W18-small-v1)")
    add(p, "epochs", "--epoch", type=int, help=f"stage-1 epochs (default {d.epochs}; on --resume: as stored)")
    add(p, "stage2_epochs", type=int, help=f"(default {d.stage2_epochs}; on --resume: as stored)")
    add(p, "optimizer", default=d.optimizer, choices=["adam", "sgd"],
        help="adam learns from scratch; sgd: the official recipe (momentum 0.9), meant for a pretrained trunk")
    add(p, "lr", type=float, help="stage-1 learning rate, poly decay power 2 (default 1e-3 adam, 1e-2 sgd)")
    add(p, "stage2_lr", type=float, help="(default lr / 10)")
    add(p, "batchsize", "--batch_size", type=int, default=d.batch_size, help="global batch size")
    add(p, "crop", type=int, default=d.crop, help="training crop size")
    add(p, "val_split", "--val_fraction", type=float, default=d.val_fraction,
        help="fraction of the training images held out to pick each stage's checkpoint")
    add(p, "folds", type=int, default=d.folds, help="STARE: number of folds")
    add(p, "fold", type=int, default=d.fold, help="STARE: which fold is the test set")
    add(p, "scales", type=float, nargs="+", default=list(d.scales), help="inference scales (paper: 2 1 0.5)")
    add(p, "trained_model_path", help="--stage 2: the stage-1 best.weights.h5 to start from")
    add(p, "strategy", choices=["auto", "default", "mirrored", "multiworker"],
        help=f"(default {d.strategy}; on --resume: as stored)")
    add(p, "seed", type=int, default=d.seed)
    add(p, "steps_per_epoch", type=int, default=d.steps_per_epoch,
        help="optimizer steps per epoch (0: one pass over the training images; the data repeats, each pass "
             "augmented afresh)")
    add(p, "norm", default=d.norm, choices=["group", "batch"],
        help="normalisation of the conv units: group (learns with batches of 2) or batch (the original, for "
             "large batches)")
    add(p, "region_batchnorm", action="store_true",
        help="BatchNorm on OCR's object-region vectors as the original (off: with 2 classes it normalises over "
             "2 x batch values)")
    add(p, "logdir", default=d.logdir)
    add(p, "name", help="run folder name (default: earnet_<config>_<time>)")
    add(p, "no_export", action="store_true")
    add(p, "resume", metavar="RUN_DIR", help="continue an interrupted run (<logdir>/<name>) from its last "
                                            "checkpoints, with its stored settings (--epochs and --stage2_epochs "
                                            "may extend it)")
    add(p, "quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not args.data_path and not args.resume:
        p.error("--data_path is required (or --resume RUN_DIR)")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(args)
    except (ValueError, OSError, ImportError) as error:  # DatasetError is a ValueError, ConnectionError an OSError
        raise SystemExit(f"error: {error}")


def train(args):
    from tfseg.training.earnet import EARNetConfig, resume_config, train_earnet

    if args.resume:
        config = resume_config(args.resume, epochs=args.epochs, stage2_epochs=args.stage2_epochs,
                               strategy=args.strategy, export=not args.no_export)
    else:
        settings = dict(
            data_path=args.data_path, dataset=args.dataset, config=args.config, epochs=args.epochs,
            stage2_epochs=args.stage2_epochs, optimizer=args.optimizer, lr=args.lr, stage2_lr=args.stage2_lr,
            batch_size=args.batchsize, crop=args.crop, val_fraction=args.val_split, folds=args.folds,
            fold=args.fold, scales=tuple(args.scales), strategy=args.strategy, seed=args.seed,
            steps_per_epoch=args.steps_per_epoch, norm=args.norm, region_batchnorm=args.region_batchnorm,
            logdir=args.logdir, run_name=args.name, export=not args.no_export)
        config = EARNetConfig(**{k: v for k, v in settings.items() if v is not None})
    stages = {"1": (1,), "2": (2,), "all": (1, 2)}[args.stage]
    results = train_earnet(config, stages, stage1_weights=args.trained_model_path, progress=not args.quiet,
                           resume=bool(args.resume))
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
    if results.get("test_ids") and "export" in results.get("stage2", results.get("stage1", {})):
        stage = "stage2" if "stage2" in results else "stage1"
        test_data = (f"{os.path.join(config.data_path, 'test')}" if config.dataset == "drive" else
                     f"{config.data_path} --split_file {results['test_ids']}")  # DRIVE's test/ is a folder
        print(f"test split ({len(results['test'])} images): python test_model.py --model "
              f"{results[stage]['export']['savedmodel']} --data_path {test_data}")


if __name__ == "__main__":
    run(main)
