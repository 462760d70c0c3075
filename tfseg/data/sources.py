"""Finding, checking and splitting (image, mask) file pairs on disk. Pure Python: no TensorFlow.

Layout: `root/images/<id>.<ext>` and `root/masks/<id>[_mask].<ext>`, matched by file stem (Kvasir-SEG,
the PraNet TrainDataset/TestDataset folders and most polyp sets use it; Kaggle-style sets add `_mask`).
"""

import concurrent.futures
import hashlib
import os
import random
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
MASK_SUFFIX = "_mask"
MAX_LISTED = 20


class DatasetError(ValueError):
    """A dataset on disk is missing, inconsistent or unreadable; the message says where and what."""


class Pair(NamedTuple):
    stem: str
    image: str
    mask: str
    fov: str | None = None  # field-of-view mask (retinal images), when the dataset has one


def format_names(names, limit=MAX_LISTED):
    """'a, b, c' for at most `limit` sorted names, then '... and N more'."""
    names = sorted(names)
    listed = ", ".join(names[:limit])
    return listed + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def raise_listing(header, groups):
    """Raises DatasetError(header, then 'N <description>: <names>' per group) unless every group is empty.

    groups: (names, description) pairs."""
    lines = [f"{len(names)} {description}: {format_names(names)}" for names, description in groups if names]
    if lines:  # one problem fits on one line
        raise DatasetError(f"{header} {lines[0]}" if len(lines) == 1 else "\n  ".join([header, *lines]))


def find_pairs(root, images="images", masks="masks", mask_suffix=MASK_SUFFIX):
    """Pairs of `root/images` and `root/masks` files with the same stem (a mask stem may add `mask_suffix`),
    sorted by stem.

    Any file whose extension is in IMAGE_EXTENSIONS (any case) counts; hidden and other files are ignored.
    Raises DatasetError for a missing folder, no images, unmatched files on either side, or two files of one
    folder claiming the same stem (`a.jpg` and `a.png`).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}")
    image_dir, mask_dir = root / images, root / masks
    return match_files(
        root, files_by_key(image_dir), image_dir, files_by_key(mask_dir, strip_suffix(mask_suffix)), mask_dir
    )


def match_files(root, image_files, image_dir, mask_files, mask_dir):
    """Pairs of two {key: path} maps, sorted by key; raises DatasetError listing the unmatched files."""
    lonely_images = [os.path.basename(image_files[key]) for key in image_files.keys() - mask_files.keys()]
    lonely_masks = [os.path.basename(mask_files[key]) for key in mask_files.keys() - image_files.keys()]
    raise_listing(
        f"Images and masks of {root} do not match:",
        [
            (lonely_images, f"image(s) in {image_dir} without a mask"),
            (lonely_masks, f"mask(s) in {mask_dir} without an image"),
        ],
    )
    return [Pair(key, image_files[key], mask_files[key]) for key in sorted(image_files)]


def strip_suffix(suffix):
    """A `files_by_key` key: the stem without `suffix` at its end."""
    return lambda stem: stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem


def files_by_key(folder, key=lambda stem: stem):
    """{key(stem): path} of the image files in `folder`; files whose key is None are skipped.

    Raises DatasetError for a missing folder, no files, or two files with one key (`a.jpg` and `a.png`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"Folder not found: {folder}")
    by_key, broken = {}, []
    for entry in os.scandir(folder):
        stem, ext = os.path.splitext(entry.name)
        if entry.name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            if not entry.is_file():
                continue
        except OSError as error:  # a symbolic link loop, or an entry that cannot be examined
            broken.append(f"{entry.name} ({error.strerror})")
            continue
        if (file_key := key(stem)) is not None:
            by_key.setdefault(file_key, []).append(entry.path)
    raise_listing(f"Unusable entries in {folder}:", [(broken, "file(s) that cannot be opened")])
    if not by_key:
        raise DatasetError(f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    ambiguous = [os.path.basename(path) for paths in by_key.values() if len(paths) > 1 for path in paths]
    raise_listing(f"Several files share a stem in {folder} (keep one of each):", [(ambiguous, "file(s)")])
    return {file_key: paths[0] for file_key, paths in by_key.items()}


def check_pairs(pairs, allow_size_mismatch=False, decoded=None):
    """Decodes every file (PIL; a JPEG at 1/8 scale, which still reads all of its data, so a truncated file is
    found: `verify()` alone does not decode JPEG data) and raises DatasetError listing the unreadable or damaged
    files, and the pairs whose image and mask sizes differ. Mismatched sizes are refused, never resized
    silently: a mask of another size usually belongs to another image. With `allow_size_mismatch` they are
    returned instead (the caller warns). Returns the mismatched pairs' descriptions. `decoded`: a dict of
    `decode_all` results to reuse and fill (a file checked for one purpose is not decoded again for another)."""
    files = list(dict.fromkeys(path for pair in pairs for path in (pair.image, pair.mask)))
    decoded = decode_all(files, {} if decoded is None else decoded)
    unreadable = [f"{path} ({decoded[path][1]})" for path in files if decoded[path][1]]
    mismatched = []
    for pair in pairs:
        image_size, mask_size = decoded[pair.image][0], decoded[pair.mask][0]
        if image_size and mask_size and image_size != mask_size:
            (iw, ih), (mw, mh) = image_size, mask_size
            mismatched.append(f"{pair.stem}: image {iw}x{ih}, mask {mw}x{mh}")
    raise_listing(
        "Unusable image/mask files:",
        [
            (unreadable, "unreadable or damaged file(s)"),
            ([] if allow_size_mismatch else mismatched, "pair(s) whose image and mask sizes differ"),
        ],
    )
    return mismatched


def decode_all(paths, decoded):
    """`decoded` ({path: `decoded_size(path)`}) filled for the `paths` not in it yet, decoded in threads (the
    decoders release the GIL); returns it."""
    missing = [path for path in dict.fromkeys(paths) if path not in decoded]
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded.update(zip(missing, pool.map(decoded_size, missing)))
    return decoded


def decoded_size(path):
    """((width, height), None) when the file passes PIL's `verify()` (chunk checksums, truncation of PNGs) and
    decodes whole, else (None, what is wrong)."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            size = image.size
            if image.format == "JPEG":  # DCT scaling: a fraction of the work, every byte still read
                image.draft(image.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
        return size, None
    except UnidentifiedImageError:
        return None, "not an image file PIL can read"
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        return None, str(error) or type(error).__name__


def split_pairs(pairs, val_fraction, seed):
    """(train, val): a seeded shuffle of `pairs` cut at round(len * val_fraction), each part sorted by stem.

    Deterministic for a seed whatever the input order; with val_fraction > 0 and at least two pairs each part
    gets at least one pair.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    shuffled = sorted(pairs)
    random.Random(seed).shuffle(shuffled)
    n_val = round(len(shuffled) * val_fraction)
    if val_fraction > 0 and len(shuffled) >= 2:
        n_val = min(max(n_val, 1), len(shuffled) - 1)
    return sorted(shuffled[n_val:]), sorted(shuffled[:n_val])


def split_by_file(pairs, split_file):
    """(train, val): the pairs whose stems `split_file` lists (one id a line, blank lines ignored, an image
    extension on an id tolerated) are val, all others train. Unknown ids raise DatasetError."""
    path = Path(split_file)
    if not path.is_file():
        raise DatasetError(f"Split file not found: {path}")
    val_ids = {_strip_image_extension(line.strip()) for line in path.read_text().splitlines() if line.strip()}
    if not val_ids:
        raise DatasetError(f"Split file {path} lists no ids")
    unknown = val_ids - {pair.stem for pair in pairs}
    raise_listing(f"The split file {path} names ids that are not in the dataset:", [(unknown, "unknown id(s)")])
    return [p for p in pairs if p.stem not in val_ids], [p for p in pairs if p.stem in val_ids]


def _strip_image_extension(name):
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def check_disjoint(train, val):
    """Raises DatasetError if an image file (by real path) or an identical image (by content) is in both
    `train` and `val`. Equal file names alone are allowed: datasets such as CVC-ClinicDB and CVC-ColonDB both
    number their files 1.png, 2.png, ..."""
    shared_files = _real_paths(train) & _real_paths(val)
    train_digests = _image_digests(train)
    shared_images = {p.image for p in val if _digest(p.image) in train_digests}
    raise_listing("Train and val overlap:", [(shared_files, "shared file(s)"), (shared_images, "identical image(s)")])


def _real_paths(pairs):
    return {os.path.realpath(path) for pair in pairs for path in (pair.image, pair.mask)}


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).digest()


def _image_digests(pairs):
    return {_digest(p.image) for p in pairs}
