"""Reading and writing single images as numpy arrays (OpenCV, PIL for what OpenCV cannot open). No TensorFlow.

Used by evaluation and inference, where every image keeps its own size. The rules match the tf.data decoders
of `tfseg.data.pipeline`: RGB channel order, 16-bit files scaled by 1/257 to the 8-bit range, STARE's
greyscale `.ppm` labels read as they are.
"""

import os

import cv2
import numpy as np
from PIL import Image

from tfseg.data.sources import DatasetError


def _read_raw(path):
    """The file's pixels as stored: HxW or HxWxC (BGR/BGRA order), uint8 or uint16."""
    path = os.fspath(path)
    pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if pixels is None:  # formats OpenCV's wheel lacks; PIL gives RGB(A), turned to OpenCV's order
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image if image.mode in ("L", "I;16", "RGB", "RGBA") else image.convert("RGB"))
        except Exception as error:  # PIL raises many types for unreadable files
            raise DatasetError(f"Cannot read image {path}: {error}") from None
        if pixels.ndim == 3 and pixels.shape[-1] >= 3:
            pixels = np.ascontiguousarray(pixels[..., [2, 1, 0, *range(3, pixels.shape[-1])]])
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"Unsupported pixel type {pixels.dtype} in {path} (expected 8 or 16 bit)")
    return pixels


def _to_uint8(pixels):
    return pixels if pixels.dtype == np.uint8 else np.rint(pixels / 257.0).astype(np.uint8)


def read_rgb(path):
    """HxWx3 uint8 RGB (grey replicated, alpha dropped)."""
    pixels = _to_uint8(_read_raw(path))
    if pixels.ndim == 2 or pixels.shape[-1] == 1:
        return np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, axis=-1)
    return np.ascontiguousarray(pixels[..., 2::-1])


def _read_gray_any_depth(path):
    """HxW grey, uint8 or uint16, as `cv2.imread(path, IMREAD_GRAYSCALE)` reads it (the pysodmetrics
    reference reader; JPEGs are decoded straight to luma), keeping 16-bit depth."""
    gray = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if gray is None:
        pixels = _read_raw(path)
        gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels[..., :3], cv2.COLOR_BGR2GRAY)
    return gray


def read_gray(path):
    """HxW uint8 grey: how the evaluation toolboxes read prediction maps."""
    return _to_uint8(_read_gray_any_depth(path))


def read_mask(path):
    """HxW bool ground truth: grey > 128 on the 8-bit scale, the polyp protocol's rule (MATLAB toolbox,
    pysodmetrics). A mask whose maximum is at most 1 is a 0/1 label map: foreground = grey > 0, as in
    `tfseg.data.pipeline.binarize_mask` (which, for training, takes a colour mask's brightest channel
    rather than its luma)."""
    gray = _read_gray_any_depth(path)
    if gray.max() <= 1:
        return gray > 0
    return _to_uint8(gray) > 128


def image_size(path):
    """(height, width) from the file header (PIL, no decoding); reads the pixels when PIL cannot."""
    try:
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except Exception:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        return _read_raw(path).shape[:2]


def write_png(path, gray_uint8):
    """Writes an HxW uint8 map (or an HxWx3 BGR image) as PNG, creating the folder; raises OSError when it cannot."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(os.fspath(path), np.ascontiguousarray(gray_uint8)):
        raise OSError(f"Cannot write {path}")
