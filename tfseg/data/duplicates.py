"""Near-duplicate images (the same scene re-encoded, resized or slightly cropped) inside a set, across sets, and
between the validation and training images of a run. Pure Python + numpy + imagehash: no TensorFlow.

Each image gets a 128-bit perceptual code: imagehash's pHash of its central 80 % (endoscopy frames share their
black border and overlay boxes, which would make every pHash alike) next to the dHash of the whole image. The
code is taken at three zooms (the central 100 %, 95 % and 90 % of the image), and the distance of two images is
the smallest Hamming distance between one's full view and any zoom of the other: a copy cropped by a few percent
meets the original at a zoom. Two images are near-duplicates at a distance <= THRESHOLDS[task] (docs/DATASETS.md:
16 on Kvasir-SEG catches every copy re-encoded at JPEG quality 40-80, resized to 40-80 % and cropped by 0-4 % per
side, and flags 12 pairs of the 1000 images, all the same scene; fundus photographs, all alike, need 12).
"""

import concurrent.futures
import logging
import os

import imagehash
import numpy as np
from PIL import Image

from tfseg.data.sources import DatasetError

log = logging.getLogger(__name__)

HASH = "phash(central 80%)+dhash, 128 bits, zooms 1/0.95/0.9"
ZOOMS = (1.0, 0.95, 0.9)
PHASH_CENTRE = 0.8
THRESHOLDS = {"polyp": 16, "vessel": 12}  # Hamming distance out of 128 bits: fundus photographs are all alike
THRESHOLD = THRESHOLDS["polyp"]
DECODE_SIZE = 128  # JPEGs are decoded DCT-scaled to at least this size: a fraction of the work
DATA_CHECK = "data_check.json"
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], np.uint8)


def _central(image, fraction):
    width, height = image.size
    margin_x, margin_y = width * (1 - fraction) / 2, height * (1 - fraction) / 2
    return image.crop((round(margin_x), round(margin_y), round(width - margin_x), round(height - margin_y)))


def image_code(path):
    """The image's code: uint8 array (len(ZOOMS), 16), the packed bits of pHash + dHash at each zoom."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (DECODE_SIZE, DECODE_SIZE))  # JPEG only; other formats decode whole
            image = image.convert("RGB")
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...)
        raise DatasetError(f"Cannot read {path} to hash it: {error or type(error).__name__}") from None
    image.thumbnail((4 * DECODE_SIZE, 4 * DECODE_SIZE))
    codes = []
    for zoom in ZOOMS:
        bits = [
            imagehash.phash(_central(image, PHASH_CENTRE * zoom)).hash,
            imagehash.dhash(_central(image, zoom)).hash,
        ]
        codes.append(np.packbits(np.concatenate([b.ravel() for b in bits])))
    return np.stack(codes)


def image_codes(paths, workers=None):
    """Codes of many images (n, len(ZOOMS), 16), hashed in threads (decoding and resizing release the GIL)."""
    paths = list(paths)
    if not paths:
        return np.zeros((0, len(ZOOMS), 16), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(image_code, paths)))


def distances(codes_a, codes_b, chunk=256):
    """(len(a), len(b)) distances: min over zooms z of d(a at 1, b at z) and d(a at z, b at 1)."""
    result = np.empty((len(codes_a), len(codes_b)), np.int32)
    for start in range(0, len(codes_a), chunk):
        a = codes_a[start : start + chunk, None]  # (c, 1, zooms, 16)
        b = codes_b[None]  # (1, m, zooms, 16)
        best = None
        for z in range(len(ZOOMS)):
            for left, right in ((a[:, :, 0], b[:, :, z]), (a[:, :, z], b[:, :, 0])):
                d = _POPCOUNT[np.bitwise_xor(left, right)].sum(-1, dtype=np.int32)
                best = d if best is None else np.minimum(best, d)
        result[start : start + chunk] = best
    return result


def near_pairs(codes_a, codes_b=None, threshold=THRESHOLD):
    """[(i, j, distance)] with distance <= threshold: between a and b, or inside a (i < j) when b is None."""
    same = codes_b is None
    matrix = distances(codes_a, codes_a if same else codes_b)
    if same:
        matrix[np.tril_indices(len(codes_a))] = threshold + 1
    rows, columns = np.nonzero(matrix <= threshold)
    found = [(int(i), int(j), int(matrix[i, j])) for i, j in zip(rows, columns)]
    return sorted(found, key=lambda item: (item[2], item[0], item[1]))


def groups(n, pairs):
    """Connected components (sorted index lists, 2 or more members) of the graph of `pairs` over n nodes."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return sorted((sorted(group) for group in members.values() if len(group) > 1), key=lambda g: g[0])


def find_near_duplicates(named_sets, threshold=THRESHOLD, workers=None):
    """Near-duplicates inside and across sets: `named_sets` is [(set name, image paths)], `threshold` one number
    or {set name: number} (a pair of two sets uses the smaller). Returns {"hash", "threshold", "pairs": [[set/name,
    set/name, distance]], "groups": [{"members": [...], "sets": [...]}]}, a group spanning several sets being a
    leak between them."""
    labels = [f"{name}/{os.path.basename(path)}" for name, paths in named_sets for path in paths]
    owners = [name for name, paths in named_sets for _ in paths]
    codes = image_codes([path for _, paths in named_sets for path in paths], workers)
    limit = threshold if isinstance(threshold, dict) else {name: threshold for name, _ in named_sets}
    pairs = [
        (i, j, d)
        for i, j, d in near_pairs(codes, threshold=max(limit.values(), default=THRESHOLD))
        if d <= min(limit[owners[i]], limit[owners[j]])
    ]
    return {
        "hash": HASH,
        "threshold": threshold,
        "pairs": [[labels[i], labels[j], d] for i, j, d in pairs],
        "groups": [
            {"members": [labels[i] for i in group], "sets": sorted({owners[i] for i in group})}
            for group in groups(len(labels), pairs)
        ],
    }


def check_near_duplicates(train, val, allow=False, threshold=THRESHOLD):
    """The training-start check: logs a WARNING listing the validation images that near-duplicate a training
    image (an INFO line when `allow`) and returns the record that training keeps as `<run>/data_check.json`
    ({"near_duplicates": [[val, train, distance]], "hash", "threshold", ...}). `train`, `val`: `Pair`s."""
    val_codes, train_codes = image_codes(p.image for p in val), image_codes(p.image for p in train)
    found = near_pairs(val_codes, train_codes, threshold) if len(val) and len(train) else []
    name = lambda pair: os.path.basename(pair.image)
    listed = [[name(val[i]), name(train[j]), d] for i, j, d in found]
    record = {
        "near_duplicates": listed,
        "hash": HASH,
        "threshold": threshold,
        "n_val": len(val),
        "n_train": len(train),
        "allowed": bool(allow),
    }
    if listed:
        lines = "\n  ".join(f"{v} ~ {t} (distance {d})" for v, t, d in listed)
        message = (
            f"{len(listed)} validation/training image pair(s) are near-duplicates (the same scene re-encoded, "
            f"resized or cropped; Hamming distance <= {threshold}), so validation scores flatter the model:\n  {lines}"
        )
        if allow:
            log.info("%s\n(allowed by allow_near_duplicates)", message)
        else:
            log.warning("%s\nRemove them from one side, or pass --allow_near_duplicates to silence this.", message)
    else:
        log.info("No validation image near-duplicates a training image (%d val, %d train).", len(val), len(train))
    return record
