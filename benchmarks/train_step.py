#!/usr/bin/env python
"""Training-step time of PraNet on synthetic data: first step (tf.function trace) and the steady-state mean.

python benchmarks/train_step.py --backbone mobilenetv2 --input_size 128 --batch_size 8 --steps 10
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfseg.data.synthetic import write_polyp_dataset  # noqa: E402
from tfseg.training import PraNetConfig, make_strategy  # noqa: E402
from tfseg.training.pranet import PraNetTrainer, load_pairs  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="mobilenetv2")
    p.add_argument("--input_size", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mixed_precision", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        write_polyp_dataset(folder, 2 * args.batch_size + 2, size=(args.input_size, args.input_size))
        config = PraNetConfig(
            data_path=folder,
            backbone=args.backbone,
            backbone_weights=None,
            input_size=args.input_size,
            batch_size=args.batch_size,
            mixed_precision=args.mixed_precision,
            val_fraction=0.1,
        )
        train, _ = load_pairs(config)
        trainer = PraNetTrainer(config, make_strategy("default"))
        start = time.perf_counter()
        trainer.fit_epoch(train, 0, 1, progress=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        trainer.fit_epoch(train, 1, args.steps, progress=False)
        steady = (time.perf_counter() - start) / args.steps
    print(
        f"{args.backbone} {args.input_size}px batch {args.batch_size}"
        f"{' bf16' if args.mixed_precision else ''}: first step {first:.1f} s, then {steady * 1000:.0f} ms/step"
    )


if __name__ == "__main__":
    main()
