"""Field-of-view masks for fundus datasets that ship none (STARE, CHASE_DB1). numpy + OpenCV, no TensorFlow."""

import cv2
import numpy as np


def estimate_fov(image_rgb, threshold=20, erosion=5):
    """A FOV mask for datasets without one (STARE, CHASE_DB1): red channel > threshold, largest component,
    eroded by `erosion` pixels to drop the rim."""
    bright = (image_rgb[..., 0] > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    if count > 1:
        bright = (labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erosion + 1, 2 * erosion + 1))
    return cv2.erode(bright, kernel).astype(bool)
