"""Reading and writing single images as numpy arrays (OpenCV, PIL for what OpenCV cannot open). No TensorFlow.

Used by evaluation and inference, where every image keeps its own size. The rules match the tf.data decoders
of `tfseg.data.pipeline`: RGB channel order, 16-bit files scaled by 1/257 to the 8-bit range, STARE's
greyscale `.ppm` labels read as they are. Floating-point files are only read as prediction maps (probabilities).
"""

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from tfseg.data.sources import DatasetError, decoded_size
from tfseg.files import atomic_path


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


def _read_gray_stored(path):
    """HxW grey as `cv2.imread(path, IMREAD_GRAYSCALE)` reads it (the pysodmetrics reference reader; JPEGs are
    decoded straight to luma), keeping the stored depth: uint8, uint16 or floating point."""
    gray = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    if gray is None:
        pixels = _read_raw(path)
        gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels[..., :3], cv2.COLOR_BGR2GRAY)
    return gray


def _eight_or_sixteen_bit(gray, path):
    """`gray`, if uint8 or uint16; DatasetError for other pixel types (a float mask has no agreed threshold)."""
    if gray.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"Unsupported pixel type {gray.dtype} in {path} (expected 8 or 16 bit)")
    return gray


def read_gray(path):
    """HxW uint8 grey: how the evaluation toolboxes read prediction maps."""
    return _to_uint8(_eight_or_sixteen_bit(_read_gray_stored(path), path))


def read_prediction(path):
    """A prediction map: HxW uint8 grey as `read_gray` reads it, or, from a floating-point file (e.g. a float32
    TIFF), HxW float32 probabilities. Floats must lie in [0, 1]: other values raise DatasetError naming the file."""
    gray = _read_gray_stored(path)
    if gray.dtype.kind != "f":
        return _to_uint8(_eight_or_sixteen_bit(gray, path))
    finite = np.isfinite(gray).all()
    if not finite or gray.min() < 0 or gray.max() > 1:
        found = f"values from {gray.min():g} to {gray.max():g}" if finite else "NaN or infinite values"
        raise DatasetError(f"The floating-point prediction map {path} has {found}: expected probabilities in [0, 1]")
    return gray.astype(np.float32)


def read_mask(path):
    """HxW bool ground truth: grey > 128 on the 8-bit scale, the polyp protocol's rule (MATLAB toolbox,
    pysodmetrics). A mask whose maximum is at most 1 is a 0/1 label map: foreground = grey > 0, as in
    `tfseg.data.pipeline.binarize_mask` (which, for training, takes a colour mask's brightest channel
    rather than its luma). Masks must be 8 or 16 bit (DatasetError otherwise)."""
    gray = _eight_or_sixteen_bit(_read_gray_stored(path), path)
    if gray.max() <= 1:
        return gray > 0
    return _to_uint8(gray) > 128


def read_problem(path, decoding=None):
    """Why `path` cannot be read whole, or None. PIL must decode all of it (`sources.decoded_size`, or its result
    `decoding` when known: a truncated JPEG, which OpenCV decodes half grey without a word, is found); a file in a
    format PIL cannot open (a float64 or multi-channel float TIFF) must be read by OpenCV instead."""
    problem = (decoding or decoded_size(path))[1]
    if problem is None:
        return None
    try:
        with Image.open(path):
            return problem  # PIL knows the format: the file is damaged
    except UnidentifiedImageError:
        return None if cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED) is not None else problem
    except Exception:  # PIL raises many types (OSError, SyntaxError, ...)
        return problem


def image_size(path):
    """(height, width) from the file header (PIL, no decoding); reads the pixels when PIL cannot."""
    try:
        with Image.open(path) as image:
            width, height = image.size
        return height, width
    except Exception:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        return _read_raw(path).shape[:2]


def write_png(path, gray_uint8):
    """Writes an HxW uint8 map (or an HxWx3 BGR image) as PNG, whole or not at all (`tfseg.files.atomic_path`),
    creating the folder; raises OSError when it cannot."""
    with atomic_path(path) as temporary:
        if not cv2.imwrite(temporary, np.ascontiguousarray(gray_uint8)):
            raise OSError(f"Cannot write {path}")
