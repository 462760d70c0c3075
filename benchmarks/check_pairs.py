#!/usr/bin/env python
"""Time the pre-training check of a dataset (`tfseg.data.sources.check_pairs`: every image and mask decoded, so
a truncated JPEG is found) against the header-only check it replaced (PIL `verify()`, which passes a truncated
JPEG), in one run, on Kvasir-SEG's 1000 pairs by default.

    python benchmarks/check_pairs.py [--data ../shared/data/Kvasir-SEG] [--repeats 3]
"""

import argparse
import os
import time

from PIL import Image

from tfseg.data.sources import check_pairs, find_pairs


def header_check(pairs):
    """The former check: header and verify() only."""
    for pair in pairs:
        for path in (pair.image, pair.mask):
            with Image.open(path) as image:
                image.verify()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join("..", "shared", "data", "Kvasir-SEG"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    pairs = find_pairs(args.data)
    header_check(pairs)  # warm the page cache for both
    timings = {"verify() only (before)": header_check, "full decode (check_pairs)": check_pairs}
    print(f"{len(pairs)} pairs of {args.data}; best of {args.repeats} runs, {os.cpu_count()} cores")
    best = {}
    for name, check in timings.items():
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            check(pairs)
            runs.append(time.perf_counter() - start)
        best[name] = min(runs)
        print(f"{name:28s} {best[name]:6.2f} s")
    print(f"ratio full / verify-only: {best['full decode (check_pairs)'] / best['verify() only (before)']:.1f}x")


if __name__ == "__main__":
    main()
