#!/usr/bin/env python
"""How fast EAR-Net's stage 1 (HRNet-OCR, two-scale training) learns from scratch on STARE fold 0 of 4: the
training step of `EARNetTrainer` for a given crop, batch and optimiser, with the validation metrics of the
held-out fold every quarter of the steps (multi-scale inference on the full images).

    python benchmarks/earnet_steps.py --crop 192 --batch 4 --steps 200
    python benchmarks/earnet_steps.py --crop 384 --batch 2 --steps 200
    python benchmarks/earnet_steps.py --crop 256 --batch 4 --optimizer sgd --lr 0.01 --steps 300
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tfseg.data import layouts, vessels  # noqa: E402
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
    args = p.parse_args()

    train, val = vessels.kfold_split(layouts.find_dataset(args.stare), 4, 0)
    config = EARNetConfig(data_path=args.stare, crop=args.crop, batch_size=args.batch, optimizer=args.optimizer,
                          lr=args.lr, region_batchnorm=args.region_batchnorm)
    keras.utils.set_random_seed(0)
    trainer = EARNetTrainer(config, make_strategy("default"), 1, total_steps=args.steps)
    val_data = vessels.make_vessel_dataset(val, 1, None, training=False)
    batches = iter(trainer.train_dataset(train, 0))
    print(f"STARE fold 0: {len(train)} training / {len(val)} validation images; crop {args.crop}, batch "
          f"{args.batch}, {args.optimizer} lr {config.lr}")
    start, losses = time.time(), []
    for step in range(1, args.steps + 1):
        losses.append(float(trainer.train_on_batch(next(batches))))
        if step % max(args.steps // 4, 1) == 0:
            metrics = trainer.validate(val_data)
            recent = losses[-max(args.steps // 8, 1):]
            print(f"step {step}: loss {sum(recent) / len(recent):.3f}  " +
                  "  ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in metrics.items()) +
                  f"  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
