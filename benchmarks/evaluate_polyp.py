#!/usr/bin/env python
"""Time the polyp protocol (all metrics, tables, plots) on PraNet's 100 Kvasir test images at their original
sizes, with prediction maps of mixed quality written to a temporary folder (the data is linked, never copied).

    python benchmarks/evaluate_polyp.py [--kvasir ../shared/data/Kvasir-SEG] [--workers 1 2]
"""

import argparse
import os
import tempfile
import time

import cv2
import numpy as np

from tfseg.evaluation import evaluate


def link_test_split(kvasir, root):
    """root/images, root/masks: symlinks to the 100 ids of pranet_kvasir_test_names.txt."""
    with open(os.path.join(kvasir, "pranet_kvasir_test_names.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    for folder in ("images", "masks"):
        os.makedirs(os.path.join(root, folder))
        for stem in ids:
            os.symlink(
                os.path.abspath(os.path.join(kvasir, folder, stem + ".jpg")), os.path.join(root, folder, stem + ".jpg")
            )
    return ids


def write_predictions(kvasir, ids, folder, seed=0):
    """Blurred, noisy, low-resolution or empty versions of the masks, a quarter each."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    for i, stem in enumerate(ids):
        gt = cv2.imread(os.path.join(kvasir, "masks", stem + ".jpg"), cv2.IMREAD_GRAYSCALE)
        kind = i % 4
        if kind == 0:
            prediction = cv2.GaussianBlur(gt, (0, 0), 5)
        elif kind == 1:
            prediction = np.clip(0.6 * gt + rng.normal(0, 40, gt.shape), 0, 255).astype(np.uint8)
        elif kind == 2:
            prediction = cv2.GaussianBlur(cv2.resize(gt, (352, 352)), (0, 0), 9)
            prediction = cv2.resize(prediction, gt.shape[::-1])
        else:
            prediction = np.zeros_like(gt)
        cv2.imwrite(os.path.join(folder, stem + ".png"), prediction)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--kvasir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "Kvasir-SEG")
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ids = link_test_split(args.kvasir, os.path.join(tmp, "Kvasir"))
        write_predictions(args.kvasir, ids, os.path.join(tmp, "predictions"))
        for workers in args.workers:
            start = time.perf_counter()
            out = evaluate(
                os.path.join(tmp, "Kvasir"),
                os.path.join(tmp, f"out{workers}"),
                pred_dir=os.path.join(tmp, "predictions"),
                workers=workers,
                progress=False,
            )
            seconds = time.perf_counter() - start
            dice = out["results"]["Kvasir"]["meanDice"]
            print(f"{len(ids)} images, workers={workers}: {seconds:.1f} s (meanDice {dice:.4f}, plots included)")


if __name__ == "__main__":
    main()
