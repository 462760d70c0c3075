#!/usr/bin/env python
"""Time `check` with the near-duplicate search (tfseg.data.manifest.check: sha256 of every file, the known
releases, near-duplicates inside and across the parts) on Kvasir-SEG's 1000 pairs cut by PraNet's 900/100 split,
on N cores; count the near-duplicate pairs of the split; with --calibrate, measure the hash on re-encoded,
resized, cropped copies (the miss side) and count the pairs of distinct images below each threshold (the
false-positive side); with --picture, draw the near-duplicate pairs (docs/images/kvasir_near_duplicates.png).

    python benchmarks/dataset_check.py --cores 2 [--calibrate 200] [--picture docs/images/kvasir_near_duplicates.png]
"""

import argparse
import io
import os
import tempfile
import time

import numpy as np
from PIL import Image

from tfseg.data import duplicates
from tfseg.data.layouts import find_dataset
from tfseg.data.manifest import check, report_text
from tfseg.files import write_bytes

KVASIR = os.path.join("..", "shared", "data", "Kvasir-SEG")


def copy_of(path, rng, max_crop):
    """The image re-encoded: cropped by 0..max_crop of each side, resized to 40-80 %, JPEG quality 40-80."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    w, h = image.size
    left, top, right, bottom = rng.uniform(0, max_crop, 4)
    image = image.crop((int(w * left), int(h * top), w - int(w * right), h - int(h * bottom)))
    scale = rng.uniform(0.4, 0.8)
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(40, 81)))
    return buffer.getvalue()


def calibrate(paths, n, seed=0):
    """Distances of n copies to their originals per crop level, and distinct pairs below each threshold."""
    codes = duplicates.image_codes(paths)
    matrix = duplicates.distances(codes, codes)
    upper = matrix[np.triu_indices(len(paths), 1)]
    print(f"pairs of the {len(paths)} images at distance <= t (near-duplicates and false positives):")
    print("  " + ", ".join(f"t={t}: {int((upper <= t).sum())}" for t in range(10, 25, 2)))
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        for max_crop in (0.0, 0.02, 0.04, 0.05):
            chosen = rng.choice(len(paths), n, replace=False)
            copies = []
            for k, index in enumerate(chosen):
                copies.append(os.path.join(folder, f"{max_crop}_{k}.jpg"))
                with open(copies[-1], "wb") as f:
                    f.write(copy_of(paths[index], rng, max_crop))
            to_all = duplicates.distances(duplicates.image_codes(copies), codes)
            own = to_all[np.arange(n), chosen]
            caught = (own <= duplicates.THRESHOLD).mean()
            print(
                f"{n} copies cropped 0-{max_crop:.0%} per side, resized 40-80 %, JPEG 40-80: distance to the "
                f"original median {np.median(own):.0f}, p95 {np.percentile(own, 95):.0f}, max {own.max()}; "
                f"caught at {duplicates.THRESHOLD}: {caught:.1%}; nearest image is the original: "
                f"{(to_all.argmin(1) == chosen).mean():.1%}"
            )


def picture(found, path, limit=6):
    """The near-duplicate pairs across the split first, then some inside the training part: two pairs a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    across = [g for g in found["groups"] if len(g["sets"]) > 1]
    within = sorted((g for g in found["groups"] if len(g["sets"]) == 1), key=lambda g: -len(g["members"]))
    chosen = (across + within)[:limit]
    distance = {frozenset(p[:2]): p[2] for p in found["pairs"]}
    rows = (len(chosen) + 1) // 2
    figure, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for k, group in enumerate(chosen):
        a, b = group["members"][:2]
        where = "across train/test" if len(group["sets"]) > 1 else "inside train"
        for m, label in enumerate((a, b)):
            part, name = label.split("/")
            axis = axes[k // 2, 2 * (k % 2) + m]
            with Image.open(os.path.join(found["folder"], "images", name)) as image:
                image.thumbnail((200, 200))
                axis.imshow(image)
            axis.set_title(f"{part.split()[-1]} {name[:9]}", fontsize=7)
        axes[k // 2, 2 * (k % 2)].text(
            1.0,
            -0.08,
            f"distance {distance[frozenset((a, b))]}, {where}",
            fontsize=7,
            ha="center",
            transform=axes[k // 2, 2 * (k % 2)].transAxes,
        )
    figure.suptitle(
        f"Kvasir-SEG near-duplicates, PraNet split (distance <= {found['threshold']} of 128 bits)", fontsize=8
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=80)
    small = io.BytesIO()  # a 128-colour palette: a third of the bytes, no visible change at this size
    Image.open(buffer).convert("RGB").quantize(128).save(small, "PNG", optimize=True)
    write_bytes(path, small.getvalue())
    print(f"picture: {path} ({len(small.getvalue()) // 1024} KiB)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=KVASIR)
    p.add_argument("--split_file", help="default: <data>/pranet_kvasir_test_names.txt")
    p.add_argument("--cores", type=int, help="run on this many CPU cores (Linux affinity)")
    p.add_argument("--calibrate", type=int, metavar="N", help="also measure N re-encoded copies per crop level")
    p.add_argument("--picture", metavar="PNG", help="draw a few near-duplicate pairs")
    args = p.parse_args()
    if args.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    split = args.split_file or os.path.join(args.data, "pranet_kvasir_test_names.txt")
    find_dataset(args.data)  # warm the page cache: the timing is of the work, not of the disk
    start = time.perf_counter()
    report = check(args.data, split_file=split)
    seconds = time.perf_counter() - start
    print("\n".join(report_text(report)))
    found = report["near_duplicates"]
    across = [pair for pair in found["pairs"] if pair[0].split("/")[0] != pair[1].split("/")[0]]
    cores = len(os.sched_getaffinity(0))
    print(
        f"\ncheck with near-duplicate search: {seconds:.1f} s on {cores} cores; {len(found['pairs'])} near-duplicate "
        f"pairs at distance <= {found['threshold']}, {len(across)} across the split: {across}"
    )
    if args.calibrate:
        calibrate([pair.image for pair in find_dataset(args.data)], args.calibrate)
    if args.picture:
        picture({**found, "folder": args.data}, args.picture)


if __name__ == "__main__":
    main()
