#!/usr/bin/env python
"""How fast EAR-Net's stage 1 (HRNet-OCR, two-scale training) learns from scratch on STARE fold 0 of 4: the
training step of `EARNetTrainer` for a given crop, batch and optimiser, with the validation metrics of the
held-out fold every quarter of the steps (multi-scale inference on the full images, at each set of
`--eval_scales`; "bestF1" is the F1 at the best threshold, pooled over the images: how far calibration costs).

    python benchmarks/earnet_steps.py --crop 192 --batch 4 --steps 200
    python benchmarks/earnet_steps.py --crop 384 --batch 2 --steps 200
    python benchmarks/earnet_steps.py --crop 256 --batch 4 --optimizer sgd --lr 0.01 --steps 300
    python benchmarks/earnet_steps.py --norm batch --scale_range 1 2 --eval_scales 1,0.5 2,1 --steps 300
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from tfseg.data import layouts, vessels  # noqa: E402
from tfseg.evaluation import vessel as vessel_metrics  # noqa: E402
from tfseg.models.hrnet import rescale, scale_as  # noqa: E402
from tfseg.training.earnet import EARNetConfig, EARNetTrainer  # noqa: E402
from tfseg.training.strategy import make_strategy  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stare", default=os.path.join("..", "shared", "data", "STARE"))
    p.add_argument("--crop", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float)
    p.add_argument("--region_batchnorm", action="store_true")
    p.add_argument("--norm", default=EARNetConfig.norm, choices=["group", "batch"])
    p.add_argument("--scale_range", type=float, nargs=2, default=(0.5, 2.0), help="training random scale")
    p.add_argument("--eval_scales", nargs="+", default=["1,0.5"], help="inference scale sets, e.g. 2,1,0.5 1,0.5")
    args = p.parse_args()

    train, val = vessels.kfold_split(layouts.find_dataset(args.stare), 4, 0)
    config = EARNetConfig(
        data_path=args.stare,
        crop=args.crop,
        batch_size=args.batch,
        optimizer=args.optimizer,
        lr=args.lr,
        region_batchnorm=args.region_batchnorm,
        norm=args.norm,
        scale_range=tuple(args.scale_range),
    )
    keras.utils.set_random_seed(0)
    trainer = EARNetTrainer(config, make_strategy("default"), 1, total_steps=args.steps)
    val_data = list(vessels.make_vessel_dataset(val, trainer.model.normalization, 1, None, training=False))
    predictors = {text: scale_set_predictor(trainer.model, text) for text in args.eval_scales}
    batches = iter(trainer.train_dataset(train, 0))
    print(
        f"STARE fold 0: {len(train)} training / {len(val)} validation images; crop {args.crop}, batch "
        f"{args.batch}, {args.optimizer} lr {config.lr}, norm {args.norm}, scale range {args.scale_range}"
    )
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        losses.append(float(trainer.train_on_batch(next(batches))))
        if step % max(args.steps // 4, 1) == 0:
            recent = losses[-max(args.steps // 8, 1) :]
            print(f"step {step}: loss {sum(recent) / len(recent):.3f}  ({time.time() - start:.0f} s)", flush=True)
            for text, predict in predictors.items():
                print(
                    f"  scales {text}: " + "  ".join(f"{k} {v:.3f}" for k, v in evaluate(predict, val_data).items()),
                    flush=True,
                )


def scale_set_predictor(model, text):
    """tf.function: images -> vessel probability of multi-scale inference at the scales `text` ("2,1,0.5")."""
    scales = sorted((float(value) for value in text.split(",")), reverse=True)

    def predict(x):
        passes = {scale: model.net(rescale(x, scale), training=False) for scale in scales}
        return tf.nn.softmax(scale_as(model.fuse(passes, scales, "cls", modulated=True), x))[..., 1]

    return tf.function(predict, reduce_retracing=True)


def evaluate(predict, dataset):
    """F1, Se, AUC at threshold 0.5 (pooled, as trainer.validate) and the F1 at the best pooled threshold."""
    probabilities = [predict(images).numpy()[0] for images, _ in dataset]
    truths = [labels.numpy()[0] == 1 for _, labels in dataset]
    results = vessel_metrics.summarize([vessel_metrics.score_image(p, t) for p, t in zip(probabilities, truths)])
    precision, recall, _ = precision_recall_curve(
        np.concatenate([t.ravel() for t in truths]), np.concatenate([p.ravel() for p in probabilities])
    )
    best = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    return {"F1": results["F1"], "Se": results["Se"], "AUC": results["AUC"], "bestF1": best}


if __name__ == "__main__":
    main()
