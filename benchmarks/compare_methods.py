#!/usr/bin/env python
"""Time a comparison of methods (tfseg.evaluation.compare): synthetic polyp images at PolypGen-like sizes,
prediction maps of several methods of different quality, every method scored by the polyp protocol, 95%
bootstrap intervals and Wilcoxon tests, comparison.json/csv and plots. Prints the total time and, within it,
the bootstrap's (each method's `statistics.confidence_intervals`); the rest is scoring (every method's images
queued in one pool of processes), input checks, files and plots, which overlap.

    python benchmarks/compare_methods.py [--images 150] [--methods 3] [--resamples 1000] [--workers 2]
        [--sizes 1920x1080 1350x1080 720x576]
"""

import argparse
import os
import tempfile
import time

import cv2
import numpy as np

from tfseg.data.synthetic import polyp_sample
from tfseg.evaluation import compare, statistics


def write_data(root, n_images, sizes, n_methods, seed=0):
    """root/data/{images,masks} with the sizes (WxH) in turn, and root/method_<k>: the masks blurred and made
    noisy, more so for each further method."""
    for folder in ["data/images", "data/masks", *(f"method_{k}" for k in range(n_methods))]:
        os.makedirs(os.path.join(root, folder))
    for index in range(n_images):
        rng = np.random.default_rng([seed, index])
        width, height = sizes[index % len(sizes)]
        image, mask = polyp_sample(rng, height, width)
        name = f"image_{index:04d}"
        cv2.imwrite(os.path.join(root, "data", "images", name + ".jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(root, "data", "masks", name + ".png"), mask)
        for k in range(n_methods):
            blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 4 + 6 * k + rng.uniform(0, 4))
            noisy = blurred + rng.normal(0, 15 + 15 * k, mask.shape)
            cv2.imwrite(os.path.join(root, f"method_{k}", name + ".png"), np.clip(noisy, 0, 255).astype(np.uint8))


def timed(function, seconds):
    """`function`, adding the seconds each call takes to seconds[0]."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[0] += time.perf_counter() - start

    return wrapper


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=150)
    p.add_argument("--methods", type=int, default=3)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sizes", nargs="+", default=["1920x1080", "1350x1080", "720x576"], help="WxH, used in turn")
    args = p.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    bootstrap_seconds = [0.0]
    statistics.confidence_intervals = timed(statistics.confidence_intervals, bootstrap_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        write_data(tmp, args.images, sizes, args.methods)
        methods = {f"method_{k}": os.path.join(tmp, f"method_{k}") for k in range(args.methods)}
        start = time.perf_counter()
        result = compare.compare(
            os.path.join(tmp, "data"),
            os.path.join(tmp, "out"),
            methods,
            bootstrap=args.resamples,
            workers=args.workers,
            progress=False,
        )
        total = time.perf_counter() - start
    summary = result["comparison"]["datasets"]["data"]["methods"]
    dice = ", ".join(f"{name} {metrics['meanDice']['mean']:.3f}" for name, metrics in summary.items())
    print(
        f"{args.methods} methods x {args.images} images ({' '.join(args.sizes)}), {args.resamples} resamples, "
        f"{args.workers} workers: total {total:.1f} s, of which bootstrap {bootstrap_seconds[0]:.1f} s "
        f"(meanDice: {dice})"
    )


if __name__ == "__main__":
    main()
