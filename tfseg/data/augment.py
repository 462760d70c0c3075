"""Joint image/mask augmentation: stateless, seeded, one sample at a time (TF ops, runs inside tf.data).

The geometry (flips, rotation, zoom with a random crop/shift) is one projective transform applied to the image
and the mask stacked together, so they cannot drift apart; the colour jitter touches the image only.
"""

import math

import tensorflow as tf


def joint_augment(
    image,
    mask,
    seed,
    *,
    flip_horizontal=True,
    flip_vertical=True,
    max_rotation=15.0,
    rotate90=False,
    zoom=(0.75, 1.25),
    brightness=0.1,
    contrast=(0.8, 1.2),
    saturation=(0.8, 1.2),
    hue=0.02,
):
    """Augmented (image HxWx3 in [0, 255], mask HxWx1 in {0, 1}) of the same size, a pure function of `seed`.

    seed: shape-[2] integer tensor. Geometry: each flip with probability 1/2, a rotation uniform in
    +-max_rotation degrees (plus a random multiple of 90 degrees if rotate90), a zoom factor uniform in `zoom`
    (> 1 crops, < 1 shrinks) with a random shift that keeps a zoomed-in view inside the image; bilinear
    sampling, zero fill, the mask thresholded at 0.5 afterwards. Colour (on [0, 1], as tf.image): brightness
    +-delta, contrast/saturation factor ranges, hue +-delta; None disables one.
    """
    geometry_seed, colour_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    height_width = tf.shape(image)[:2]
    transform = random_transform(
        height_width, geometry_seed, flip_horizontal, flip_vertical, max_rotation, rotate90, zoom
    )
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.concat([image, mask], axis=-1)[None],
        transforms=transform[None],
        output_shape=height_width,
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    out_image = jitter_colour(warped[..., :3], colour_seed, brightness, contrast, saturation, hue)
    out_mask = tf.cast(warped[..., 3:] > 0.5, tf.float32)
    out_image.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out_image, out_mask


def random_transform(height_width, seed, flip_horizontal, flip_vertical, max_rotation, rotate90, zoom):
    """The 8 projective coefficients mapping output pixel (x, y) to input pixel c + shift + A (p - c), where
    c is the image centre and A = rotation @ flips / zoom (ImageProjectiveTransformV3's convention)."""
    u = tf.random.stateless_uniform([7], seed)
    flip_x = -1.0 if flip_horizontal else 1.0
    flip_y = -1.0 if flip_vertical else 1.0
    sign_x = tf.where(u[0] < 0.5, flip_x, 1.0)
    sign_y = tf.where(u[1] < 0.5, flip_y, 1.0)
    degrees = (2.0 * u[2] - 1.0) * max_rotation + (90.0 * tf.floor(4.0 * u[3]) if rotate90 else 0.0)
    angle = degrees * (math.pi / 180.0)
    scale = zoom[0] + u[4] * (zoom[1] - zoom[0])
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a00, a01, a10, a11 = cos * sign_x, -sin * sign_y, sin * sign_x, cos * sign_y
    centre_y, centre_x = tf.unstack((tf.cast(height_width, tf.float32) - 1.0) / 2.0)
    room = tf.abs(1.0 - 1.0 / scale)  # how far (as a fraction of the half-size) the view may move
    shift_x = (2.0 * u[5] - 1.0) * room * centre_x
    shift_y = (2.0 * u[6] - 1.0) * room * centre_y
    return tf.stack(
        [
            a00,
            a01,
            centre_x + shift_x - a00 * centre_x - a01 * centre_y,
            a10,
            a11,
            centre_y + shift_y - a10 * centre_x - a11 * centre_y,
            0.0,
            0.0,
        ]
    )


def jitter_colour(image, seed, brightness, contrast, saturation, hue):
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    pixels = image / 255.0
    if brightness:
        pixels = tf.image.stateless_random_brightness(pixels, brightness, seeds[0])
    if contrast:
        pixels = tf.image.stateless_random_contrast(pixels, *contrast, seeds[1])
    pixels = tf.clip_by_value(pixels, 0.0, 1.0)  # the HSV conversions below expect [0, 1]
    if saturation:
        pixels = tf.image.stateless_random_saturation(pixels, *saturation, seeds[2])
    if hue:
        pixels = tf.image.stateless_random_hue(pixels, hue, seeds[3])
    return tf.clip_by_value(pixels, 0.0, 1.0) * 255.0
