"""`predict_images`: a Predictor over image files -> per image the binary mask, the probability map and an
overlay, as PNGs. Damaged or unreadable files are reported and skipped."""

import glob
import logging
import os
from pathlib import Path

import cv2
from tqdm.auto import tqdm

from tfseg import files
from tfseg.data.imageio import read_rgb, write_png
from tfseg.data.sources import IMAGE_EXTENSIONS, DatasetError, decoded_size
from tfseg.inference.overlay import binary_mask, draw_overlay, to_uint8

log = logging.getLogger(__name__)


def find_images(source):
    """A file, a folder (its image files, sorted) or a glob pattern -> list of paths."""
    path = Path(source)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in sorted(glob.glob(str(source))) if os.path.isfile(p)]
    if not files:
        raise FileNotFoundError(f"No images found at {source}")
    return files


def output_names(files):
    """{path: output name prefix}: the file's stem; the stem and extension (`polyps3_jpg`) for files whose stems
    collide (`polyps3.jpg`, `polyps3.png`); the path below the files' common folder where even names collide
    (a glob over several folders)."""

    def unique(key):
        keys = [key(path) for path in files]
        return len(set(keys)) == len(keys), keys

    stems = [path.stem for path in files]
    with_extension = lambda path: f"{path.stem}_{path.suffix[1:]}" if stems.count(path.stem) > 1 else path.stem
    common = Path(os.path.commonpath([str(path.parent.resolve()) for path in files]))
    below_common = lambda path: str(path.parent.resolve().relative_to(common) / with_extension(path))
    for key in (lambda path: path.stem, with_extension, below_common):
        distinct, names = unique(key)
        if distinct:
            return dict(zip(files, names))
    raise ValueError(f"Two inputs resolve to one file in {common}: give each image once")


def predict_images(predictor, source, output, threshold=0.5, tta=None, progress=True):
    """Writes `<name>_mask.png` (0/255), `<name>_prob.png` (0-255) and `<name>_overlay.png` into `output` for
    every image of `source` (`<name>`: see `output_names`). Damaged or unreadable files are listed and skipped.
    Refuses (OverwriteError) to write over any input. Returns {"written": [names], "failed": {path: reason},
    "files_written": n, "output", "runtime"}."""
    names = output_names(find_images(source))
    outputs = {
        path: [os.path.join(output, f"{name}_{kind}.png") for kind in ("mask", "prob", "overlay")]
        for path, name in names.items()
    }
    files.refuse_overwrite([out for paths in outputs.values() for out in paths], names)
    written, failed = [], {}
    for path, (mask_path, prob_path, overlay_path) in tqdm(
        outputs.items(), desc="images", unit="img", disable=not progress or len(outputs) == 1
    ):
        try:
            problem = decoded_size(path)[1]
            if problem:
                raise DatasetError(f"damaged or unreadable image ({problem})")
            image = read_rgb(path)
        except DatasetError as error:
            log.warning("Skipped %s: %s", path, error)
            failed[str(path)] = str(error)
            continue
        probability = predictor.predict(image, tta=tta)
        mask = binary_mask(probability, threshold)
        write_png(mask_path, mask.astype("uint8") * 255)
        write_png(prob_path, to_uint8(probability))
        write_png(overlay_path, cv2.cvtColor(draw_overlay(image, mask), cv2.COLOR_RGB2BGR))
        written.append(names[path])
    return {
        "written": written,
        "failed": failed,
        "files_written": 3 * len(written),
        "output": output,
        "runtime": predictor.runtime.name,
    }
