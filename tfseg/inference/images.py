"""`predict_images`: a Predictor over image files -> per image the binary mask, the probability map and an
overlay, as PNGs. Unreadable files are reported and skipped."""

import glob
import logging
import os
from pathlib import Path

import cv2
from tqdm.auto import tqdm

from tfseg.data.imageio import read_rgb, write_png
from tfseg.data.sources import IMAGE_EXTENSIONS, DatasetError
from tfseg.inference.overlay import binary_mask, draw_overlay, to_uint8

log = logging.getLogger(__name__)


def find_images(source):
    """A file, a folder (its image files, sorted) or a glob pattern -> list of paths."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        files = [Path(p) for p in sorted(glob.glob(str(source))) if os.path.isfile(p)]
    if not files:
        raise FileNotFoundError(f"No images found at {source}")
    return files


def predict_images(predictor, source, output, threshold=0.5, tta=None, progress=True):
    """Writes `<stem>_mask.png` (0/255), `<stem>_prob.png` (0-255) and `<stem>_overlay.png` into `output` for
    every image of `source`. Returns {"written": [stems], "failed": {path: reason}, "output", "runtime"}."""
    files = find_images(source)
    os.makedirs(output, exist_ok=True)
    written, failed = [], {}
    for path in tqdm(files, desc="images", unit="img", disable=not progress or len(files) == 1):
        try:
            image = read_rgb(path)
        except DatasetError as error:
            log.warning("Skipped %s: %s", path, error)
            failed[str(path)] = str(error)
            continue
        probability = predictor.predict(image, tta=tta)
        mask = binary_mask(probability, threshold)
        stem = os.path.join(output, path.stem)
        write_png(f"{stem}_mask.png", mask.astype("uint8") * 255)
        write_png(f"{stem}_prob.png", to_uint8(probability))
        write_png(f"{stem}_overlay.png", cv2.cvtColor(draw_overlay(image, mask), cv2.COLOR_RGB2BGR))
        written.append(path.stem)
    return {"written": written, "failed": failed, "output": output, "runtime": predictor.runtime.name}
