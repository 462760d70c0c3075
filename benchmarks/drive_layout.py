#!/usr/bin/env python
"""A DRIVE-layout folder from CHASE_DB1, for the DRIVE protocol's checks where DRIVE itself is not at hand
(issue 17): the first 20 images become `training/` (numbers 21-40, as DRIVE's training set), the last 8 `test/`
(01-08), at DRIVE's size unless told: `images/NN_<split>.tif`, `1st_manual/NN_manual1.gif` (1st observer),
`mask/NN_<split>_mask.gif` (the FOV, `estimate_fov` of the full-size image, as CHASE_DB1 ships none). Images are
resized with area averaging, labels and FOV masks by nearest neighbour. The output folder must not exist (it is
written under a temporary name and renamed when whole); keep it outside the project (the data's licence allows
no redistribution).

    python benchmarks/drive_layout.py --chase ../shared/data/CHASEDB1 --out /tmp/chase_drive
    python benchmarks/drive_layout.py --chase ../shared/data/CHASEDB1 --out /tmp/chase_drive_full --size 0 0
"""

import argparse
import os

import cv2
import numpy as np
from PIL import Image

from tfseg.data.fov import estimate_fov
from tfseg.data.imageio import read_mask, read_rgb
from tfseg.data.layouts import find_dataset
from tfseg.training.earnet import CHASE_TRAIN

DRIVE_SIZE = (565, 584)  # width, height


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chase", default=os.path.join("..", "shared", "data", "CHASEDB1"))
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, nargs=2, default=DRIVE_SIZE, metavar=("WIDTH", "HEIGHT"), help="0 0: as is")
    args = p.parse_args()
    if os.path.exists(args.out):
        raise SystemExit(f"error: {args.out} exists; give a new folder")
    pairs = find_dataset(args.chase)
    size = tuple(args.size) if all(args.size) else None
    splits = {"training": (pairs[:CHASE_TRAIN], 21), "test": (pairs[CHASE_TRAIN:], 1)}
    staging = f"{args.out.rstrip(os.sep)}.partial-{os.getpid()}"
    for split, (chosen, first) in splits.items():
        for number, pair in enumerate(chosen, first):
            image = read_rgb(pair.image)
            layers = {
                f"images/{number:02d}_{split}.tif": resized(image, size, cv2.INTER_AREA),
                f"1st_manual/{number:02d}_manual1.gif": resized(read_mask(pair.mask) * 255, size, cv2.INTER_NEAREST),
                f"mask/{number:02d}_{split}_mask.gif": resized(estimate_fov(image) * 255, size, cv2.INTER_NEAREST),
            }
            for name, pixels in layers.items():
                path = os.path.join(staging, split, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(pixels).save(path)  # PIL: OpenCV cannot write GIFs
        print(f"{split}: {len(chosen)} images ({chosen[0].stem} ... {chosen[-1].stem})")
    os.replace(staging, args.out)


def resized(pixels, size, interpolation):
    pixels = pixels.astype(np.uint8)
    return pixels if size is None else cv2.resize(pixels, size, interpolation=interpolation)


if __name__ == "__main__":
    main()
