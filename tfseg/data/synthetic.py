"""Synthetic data for tests and demos (numpy + OpenCV): polyp-like endoscopy frames and fundus-like vessel images.

A pinkish-red mucosa with low-frequency shading, vignetting, darker vessel-like curves and specular highlights;
one (sometimes two) polyps: smooth irregular blobs (an ellipse whose radius carries a few low-order Fourier
terms) with their own colour, dome shading, a soft darker rim and highlights. Polyp and mucosa colours overlap a
little, so a model must use shape and rim cues too, yet a small CNN learns it in a few hundred steps.
"""

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

MUCOSA_RGB = np.array([196.0, 92.0, 82.0], np.float32)
POLYP_TINT = np.array([18.0, 22.0, 16.0], np.float32)  # polyps: on average a little paler than the mucosa
VESSEL_RGB = np.array([120.0, 40.0, 50.0], np.float32)


def polyp_sample(rng, height, width):
    """(uint8 HxWx3 RGB image, uint8 HxW mask in {0, 255}) drawn from `rng` (a numpy Generator)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    mucosa_rgb = MUCOSA_RGB + rng.normal(0.0, 12.0, 3).astype(np.float32)
    image = _mucosa(rng, mucosa_rgb, y, x)
    mask = np.zeros((height, width), bool)
    for _ in range(2 if rng.random() < 0.2 else 1):
        mask |= _add_polyp(rng, image, mucosa_rgb + POLYP_TINT, y, x)
    _add_highlights(rng, image, count=rng.integers(2, 6))
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def _smooth_field(rng, height, width, cells=4):
    """Low-frequency noise in about [-1, 1]: a cells x cells random grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _mucosa(rng, colour, y, x):
    """The float HxWx3 background: `colour` with shading, vignetting and vessels."""
    height, width = y.shape
    shading = 1.0 + 0.15 * _smooth_field(rng, height, width)
    radius2 = ((x / width - 0.5) ** 2 + (y / height - 0.5) ** 2) / 0.5
    vignette = 1.0 - np.float32(rng.uniform(0.3, 0.6)) * radius2
    image = colour * (shading * vignette)[..., None]
    vessels = np.zeros((height, width), np.float32)
    for _ in range(rng.integers(2, 6)):
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.25, 24))  # a gently bending path
        steps = np.cumsum(0.04 * min(height, width) * np.stack([np.cos(heading), np.sin(heading)], 1), axis=0)
        points = (steps + rng.uniform(0, 1, 2) * (width, height)).astype(np.int32)
        cv2.polylines(vessels, [points], False, 1.0, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    vessels = cv2.GaussianBlur(vessels, (0, 0), 1.0)[..., None] * np.float32(rng.uniform(0.3, 0.6))
    return image * (1.0 - vessels) + VESSEL_RGB * vessels


def _add_polyp(rng, image, colour, y, x):
    """Paints one polyp into `image` (float HxWx3, in place); returns its boolean mask."""
    height, width = y.shape
    size = min(height, width)
    centre_y, centre_x = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    radius = rng.uniform(0.1, 0.25) * size
    aspect, tilt = rng.uniform(0.7, 1.0), rng.uniform(0.0, np.pi)
    dy, dx = y - centre_y, x - centre_x
    u = (dx * math.cos(tilt) + dy * math.sin(tilt)) / radius
    v = (-dx * math.sin(tilt) + dy * math.cos(tilt)) / (radius * aspect)
    theta = np.arctan2(v, u)
    boundary = 1.0 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 5))
    distance = np.hypot(u, v) / boundary  # < 1 inside, 1 on the contour
    inside = distance < 1.0
    dome = np.sqrt(np.clip(1.0 - distance**2, 0.0, 1.0))
    light_angle = rng.uniform(0.0, 2 * np.pi)
    light = 1.0 + 0.3 * (u * math.cos(light_angle) + v * math.sin(light_angle))
    colour = colour + rng.normal(0.0, 14.0, 3).astype(np.float32)
    body = colour * (0.75 + 0.35 * dome * light)[..., None]
    alpha = np.clip((1.0 - distance) * 8.0, 0.0, 1.0)[..., None]  # ~one-eighth of the radius to blend in
    rim = 1.0 - rng.uniform(0.15, 0.35) * np.exp(-(((distance - 1.0) / 0.08) ** 2))
    image[:] = (image * (1.0 - alpha) + body * alpha) * rim[..., None]
    _add_highlights(rng, image, count=rng.integers(1, 4), where=inside)
    return inside


def _add_highlights(rng, image, count, where=None):
    """Small blurred white specular spots, at random pixels of `where` (default anywhere)."""
    height, width = image.shape[:2]
    candidates = np.argwhere(where if where is not None and where.any() else np.ones((height, width), bool))
    spots = np.zeros((height, width), np.float32)
    for _ in range(count):
        cy, cx = candidates[rng.integers(len(candidates))]
        axes = tuple(int(a) for a in rng.integers(1, max(2, min(height, width) // 40), 2))
        cv2.ellipse(spots, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    spots = cv2.GaussianBlur(spots, (0, 0), 1.0)[..., None]
    image[:] = image * (1.0 - spots) + 255.0 * spots


def write_polyp_dataset(root, n, size=(256, 256), seed=0, image_ext=".jpg", mask_ext=".png"):
    """Writes `root/images/synth_0000<image_ext>` and `root/masks/synth_0000<mask_ext>` ... for n samples of
    `size` (H, W), or of random sizes between 192x224 and 384x448 when size is None. Deterministic for a seed
    (sample i uses numpy's default_rng([seed, i])). Returns root as a Path."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        height, width = size if size is not None else (rng.integers(192, 385), rng.integers(224, 449))
        image, mask = polyp_sample(rng, int(height), int(width))
        name = f"synth_{index:04d}"
        cv2.imwrite(str(root / "images" / f"{name}{image_ext}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{name}{mask_ext}"), mask)
    return root


def write_polyp_video(path, frames=24, size=(128, 160), fps=25.0, seed=0):
    """An mp4v clip panning across one synthetic polyp scene (half as wide again as a frame) for `frames`
    frames of `size` (H, W). Returns (path, the scene's mask cropped like each frame: list of HxW uint8)."""
    height, width = size
    scene, mask = polyp_sample(np.random.default_rng(seed), height, width + width // 2)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"Cannot write {path}")
    masks = []
    try:
        for index in range(frames):
            left = round(index * (width // 2) / max(frames - 1, 1))
            writer.write(cv2.cvtColor(np.ascontiguousarray(scene[:, left : left + width]), cv2.COLOR_RGB2BGR))
            masks.append(mask[:, left : left + width])
    finally:
        writer.release()
    return Path(path), masks


FUNDUS_RGB = np.array([205.0, 95.0, 45.0], np.float32)
DISC_RGB = np.array([250.0, 215.0, 140.0], np.float32)
RETINAL_VESSEL_RGB = np.array([120.0, 30.0, 20.0], np.float32)


def vessel_sample(rng, height, width):
    """(uint8 HxWx3 RGB fundus-like image, uint8 HxW vessel mask, uint8 HxW FOV mask), masks in {0, 255}:
    branching vessel trees leaving a bright optic disc, on an orange retina inside a dark circular FOV."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    size = min(height, width)
    fov = ((y - height / 2) ** 2 + (x - width / 2) ** 2) <= (0.47 * size) ** 2
    disc = np.array([height / 2 + rng.uniform(-0.1, 0.1) * size, width / 2 + rng.choice([-1, 1]) * 0.22 * size])
    vessels = np.zeros((height, width), np.uint8)
    for angle in rng.uniform(0, 2 * np.pi, rng.integers(4, 7)):
        _draw_branch(rng, vessels, disc[::-1].copy(), angle, max(2.0, size / 60), 0.05 * size, depth=0)
    vessels &= fov.astype(np.uint8)
    radius2 = ((y - disc[0]) ** 2 + (x - disc[1]) ** 2) / (0.07 * size) ** 2
    shading = (1.0 + 0.1 * _smooth_field(rng, height, width))[..., None]
    image = (
        FUNDUS_RGB
        * shading
        * (1 - 0.35 * ((y - height / 2) ** 2 + (x - width / 2) ** 2)[..., None] / (0.5 * size) ** 2)
    )
    glow = np.exp(-radius2)[..., None]
    image = image * (1 - glow) + DISC_RGB * glow
    contrast = np.float32(rng.uniform(0.5, 0.8))
    soft = cv2.GaussianBlur(vessels.astype(np.float32), (0, 0), 0.7)[..., None] * contrast
    image = image * (1 - soft) + RETINAL_VESSEL_RGB * soft
    image = (image + rng.normal(0.0, 5.0, image.shape).astype(np.float32)) * fov[..., None]
    return np.clip(image, 0, 255).astype(np.uint8), vessels * 255, fov.astype(np.uint8) * 255


def _draw_branch(rng, canvas, start, heading, thickness, step, depth):
    """A random-walk vessel from `start` (x, y), thinning as it goes, forking now and then (recursive)."""
    point = start
    for _ in range(int(rng.integers(8, 16))):
        heading += rng.normal(0.0, 0.25)
        end = point + step * np.array([np.cos(heading), np.sin(heading)])
        cv2.line(canvas, tuple(int(v) for v in point), tuple(int(v) for v in end), 1, max(1, round(thickness)))
        point, thickness = end, thickness * 0.96
        if depth < 3 and rng.random() < 0.15:
            _draw_branch(
                rng,
                canvas,
                point.copy(),
                heading + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9),
                thickness * 0.7,
                step * 0.8,
                depth + 1,
            )


def write_vessel_dataset(root, n, size=(96, 96), seed=0, layout="generic"):
    """n synthetic fundus images in the generic layout (`images/ masks/ fov/`, png) or DRIVE's (`images/
    NN_training.tif`, `1st_manual/NN_manual1.gif`, `mask/NN_training_mask.gif`). Returns root as a Path."""
    root = Path(root)
    for index in range(n):
        rng = np.random.default_rng([seed, index, 7])
        image, vessels, fov = vessel_sample(rng, *size)
        if layout == "drive":
            number = f"{index + 21:02d}"
            files = {
                f"images/{number}_training.tif": image,
                f"1st_manual/{number}_manual1.gif": vessels,
                f"mask/{number}_training_mask.gif": fov,
            }
        else:
            name = f"vessel_{index:04d}.png"
            files = {f"images/{name}": image, f"masks/{name}": vessels, f"fov/{name}": fov}
        for path, pixels in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / path)  # PIL: OpenCV cannot write GIFs
    return root
