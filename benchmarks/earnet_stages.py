#!/usr/bin/env python
"""EAR-Net's claim, measured (issue 17, item 4): stage 1 against stage 2 on the held-out images of a split
protocol (STARE k-fold, CHASE_DB1 20/8, a DRIVE-layout folder), with the training recipe's defaults unless told.

One fold a call. The run trains stage 1, writes the error maps of the training images and trains stage 2
(`train_earnet`, exports off), then scores the best weights of each stage on the fold's test images at the
inference scales, as `test_model.py` does: pooled over the images and mean per image, whole image and inside the
FOV (the dataset's masks, else `estimate_fov` as `--estimate_fov`). Results go to `<logdir>/<run>.json`; a run
already there is not trained again. `--variants stage2_out_of_fold` adds a stage 2 from the same stage 1 with error
maps predicted out of fold (`--error_folds` stage-1 models, each on the other folds of the training images), and
`--variants stage1_continued` stage 1 trained on as long as stage 2 without the error head (the control).
`--report` prints the table of every result file in `--logdir`.

    python benchmarks/earnet_stages.py --data_path ../shared/data/STARE --dataset stare --fold 0 --logdir runs/stages
    python benchmarks/earnet_stages.py --data_path ../shared/data/STARE --dataset stare --fold 0 --logdir runs/stages \
        --variants stage2_out_of_fold stage1_continued
    python benchmarks/earnet_stages.py --data_path ../shared/data/CHASEDB1 --dataset chase --logdir runs/stages
    python benchmarks/earnet_stages.py --logdir runs/stages --report
"""

import argparse
import dataclasses
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfseg import files  # noqa: E402
from tfseg.data import vessels  # noqa: E402
from tfseg.data.fov import estimate_fov  # noqa: E402
from tfseg.data.imageio import read_mask, read_rgb  # noqa: E402
from tfseg.evaluation import vessel as vessel_metrics  # noqa: E402
from tfseg.training.earnet import EARNetConfig, EARNetTrainer, split_pairs, train_earnet  # noqa: E402
from tfseg.training.strategy import make_strategy  # noqa: E402

METRICS = ("Acc", "Se", "Sp", "F1", "AUC")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_path")
    p.add_argument("--dataset", choices=["stare", "chase", "drive"])
    p.add_argument("--folds", type=int, default=4, help="STARE")
    p.add_argument("--fold", type=int, default=0, help="STARE")
    p.add_argument("--logdir", default=os.path.join("runs", "stages"))
    p.add_argument("--epochs", type=int, help="stage 1 (default: the recipe's)")
    p.add_argument("--stage2_epochs", type=int)
    p.add_argument("--steps_per_epoch", type=int, help="(default: the recipe's)")
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=["stage2_out_of_fold", "stage1_continued"],
        help="also train, from the same stage 1: a stage 2 on out-of-fold error maps; stage 1 trained on for stage "
        "2's epochs at its lr (the control)",
    )
    p.add_argument("--error_folds", type=int, default=3)
    p.add_argument("--report", action="store_true", help="print the table of the results in --logdir")
    args = p.parse_args()
    if args.report:
        print(report(args.logdir))
        return
    name = f"{args.dataset}_fold{args.fold}" if args.dataset == "stare" else args.dataset
    out = os.path.join(args.logdir, f"{name}.json")
    config = EARNetConfig(
        data_path=args.data_path,
        dataset=args.dataset,
        folds=args.folds,
        fold=args.fold,
        epochs=args.epochs,
        stage2_epochs=args.stage2_epochs,
        steps_per_epoch=args.steps_per_epoch,
        error_folds=args.error_folds,
        logdir=args.logdir,
        run_name=name,
        export=False,
    )
    _, _, test = split_pairs(config)
    if os.path.exists(out):
        with open(out) as f:
            record = json.load(f)
    else:
        start = time.time()
        results = train_earnet(config, progress=False)
        stage1 = os.path.join(results["stage1"]["run_dir"], "best.weights.h5")
        stage2 = os.path.join(results["stage2"]["run_dir"], "best.weights.h5")
        record = {
            "command": " ".join(sys.argv),
            "config": dataclasses.asdict(config),
            "minutes": (time.time() - start) / 60,
            "test_images": [pair.stem for pair in test],
            "error_maps": error_fractions(results),
            "stage1": {"validation": results["stage1"]["best"], "test": score(config, 1, stage1, test)},
            "stage2": {"validation": results["stage2"]["best"], "test": score(config, 2, stage1, test, stage2)},
        }
        files.write_json(out, record)
    stage1 = os.path.join(args.logdir, name, "stage1", "best.weights.h5")
    for variant in args.variants:
        if variant not in record:
            record.update(VARIANTS[variant](config, stage1, test))
            files.write_json(out, record)
    print(report(args.logdir))


def stage2_out_of_fold(config, stage1, test):
    """Stage 2 from the same stage 1, with error maps predicted out of fold."""
    start = time.time()
    variant = dataclasses.replace(
        config, run_name=f"{config.run_name}_out_of_fold", init_weights=stage1, error_maps="out_of_fold"
    )
    results = train_earnet(variant, stages=(2,), progress=False)
    stage2 = os.path.join(results["stage2"]["run_dir"], "best.weights.h5")
    return {
        "stage2_out_of_fold_minutes": (time.time() - start) / 60,
        "stage2_out_of_fold_error_maps": error_fractions(results),
        "stage2_out_of_fold": {
            "validation": results["stage2"]["best"],
            "test": score(variant, 2, stage1, test, stage2),
        },
    }


def stage1_continued(config, stage1, test):
    """The control for stage 2's extra training: stage 1 trained on from its best weights for stage 2's epochs at
    stage 2's learning rate, without the error head (is a gain the error attention's or the extra steps'?)."""
    variant = dataclasses.replace(
        config,
        run_name=f"{config.run_name}_stage1_continued",
        init_weights=stage1,
        epochs=config.stage2_epochs,
        lr=config.stage2_lr,
    )
    results = train_earnet(variant, stages=(1,), progress=False)
    weights = os.path.join(results["stage1"]["run_dir"], "best.weights.h5")
    return {"stage1_continued": {"validation": results["stage1"]["best"], "test": score(variant, 1, weights, test)}}


VARIANTS = {"stage2_out_of_fold": stage2_out_of_fold, "stage1_continued": stage1_continued}
STAGES = ("stage1", "stage1_continued", "stage2", "stage2_out_of_fold")  # the report's rows, in this order


def error_fractions(results):
    """How the run's error maps were made and how much of them is error (`error_maps.json`)."""
    with open(f"{results['error_maps']}.json") as f:
        errors = json.load(f)
    keys = ("source", "error_folds", "region", "error_pixel_fraction", "missed_vessel_fraction")
    return {key: errors.get(key) for key in keys}


def score(config, stage, stage1_weights, pairs, stage2_weights=None):
    """Test metrics of a stage's best weights at the inference scales: pooled and per-image mean, whole image and
    FOV (`summarize`)."""
    strategy = make_strategy("default")
    if stage == 1:
        trainer = EARNetTrainer(dataclasses.replace(config, init_weights=stage1_weights), strategy, 1, 1)
    else:
        trainer = EARNetTrainer(config, strategy, 2, 1, stage1_weights=stage1_weights)
        trainer.model.load_weights(stage2_weights)
    dataset = vessels.make_vessel_dataset(pairs, trainer.model.normalization, 1, None, training=False)
    scores = []
    for pair, (images, _) in zip(pairs, dataset):
        fov = read_mask(pair.fov) if pair.fov else estimate_fov(read_rgb(pair.image))
        scores.append(vessel_metrics.score_image(trainer.probabilities(images)[0], read_mask(pair.mask), fov))
    results = vessel_metrics.summarize(scores)
    keep = lambda row: {key: float(row[key]) for key in METRICS}
    return {
        "pooled": keep(results),
        "per_image": keep(results["per_image"]),
        "fov_pooled": keep(results["fov"]),
        "fov_per_image": keep(results["fov"]["per_image"]),
        "fov": "masks" if all(pair.fov for pair in pairs) else "estimated",
    }


def report(logdir):
    """A markdown table: one row per result file and stage, test metrics pooled inside the FOV and over whole
    images, the error-pixel fraction of the maps stage 2 trained on."""
    lines = [
        "| run | stage | FOV Se | FOV Sp | FOV F1 | FOV AUC | image Acc | image Se | image F1 | image AUC | "
        "error pixels | vessels missed | min |",
        "|---|---|" + "---:|" * 11,
    ]
    for path in sorted(glob.glob(os.path.join(logdir, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        errors = record["error_maps"]
        for stage in STAGES:
            if stage not in record:
                continue
            test = record[stage]["test"]
            fov, whole = test["fov_pooled"], test["pooled"]
            cells = [fov["Se"], fov["Sp"], fov["F1"], fov["AUC"], whole["Acc"], whole["Se"], whole["F1"], whole["AUC"]]
            extra = ["", "", ""]
            if stage.startswith("stage2"):
                maps = record.get(f"{stage}_error_maps", errors)
                extra = [
                    f"{100 * maps['error_pixel_fraction']:.2f} %",
                    f"{100 * maps['missed_vessel_fraction']:.1f} %",
                    "",
                ]
            if stage == "stage1":
                extra[2] = f"{record['minutes']:.0f}"
            lines.append(
                f"| {os.path.basename(path)[:-5]} | {stage} | "
                + " | ".join(f"{v:.4f}" for v in cells)
                + " | "
                + " | ".join(extra)
                + " |"
            )
    return "\n".join(lines + [""] + mean_rows(logdir))


def mean_rows(logdir):
    """Per stage, the mean over the result files of the pooled FOV Se, F1 and AUC (the folds' average), and over
    the runs that have every stage some run has (the variants compared on the same folds)."""
    records = []
    for path in sorted(glob.glob(os.path.join(logdir, "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    present = [stage for stage in STAGES if any(stage in record for record in records)]
    complete = [record for record in records if all(stage in record for stage in present)]
    lines = []
    for label, chosen in (("runs", records), ("runs with every stage", complete)):
        for stage in present:
            rows = [record[stage]["test"]["fov_pooled"] for record in chosen if stage in record]
            if rows and (label == "runs" or len(complete) < len(records)):
                lines.append(
                    f"mean of {len(rows)} {label}, {stage}: FOV Se {np.mean([r['Se'] for r in rows]):.4f}, "
                    f"F1 {np.mean([r['F1'] for r in rows]):.4f}, AUC {np.mean([r['AUC'] for r in rows]):.4f}"
                )
    return lines


if __name__ == "__main__":
    main()
