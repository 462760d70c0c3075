"""Retinal-vessel training data: k-fold splits and the samples of EAR-Net's recipe (random scale 0.5-2.0,
random crop padded with the ignore label, flips, rotation, colour jitter 0.25) on the shared pipeline core
(`tfseg.data.pipeline.batches`).

Labels are int32 maps: 0 background, 1 vessel, IGNORE_LABEL where no loss looks (crop padding). Stage 2 adds
the error maps (0/255 PNGs named like the images, read as {0, 1}), augmented with the same geometry and padded
with IGNORE_LABEL too (the official code pads them with the vessel mask: a bug not copied).
"""

import numpy as np
import tensorflow as tf

from tfseg.data.augment import jitter_colour, random_transform
from tfseg.data.pipeline import batches, decode_columns, file_columns
from tfseg.data.sources import DatasetError
from tfseg.preprocessing import IGNORE_LABEL, normalize


def kfold_split(pairs, folds, fold, seed=0):
    """(train, val) for fold `fold` of `folds` (STARE's usual 4-fold or leave-one-out protocols): a seeded
    shuffle cut into `folds` near-equal parts; every image is validated exactly once over the folds."""
    if not 0 <= fold < folds <= len(pairs):
        raise DatasetError(f"fold must be in [0, {folds}) and folds <= {len(pairs)} images, got fold {fold}")
    order = np.random.default_rng(seed).permutation(len(pairs))
    val_index = set(np.array_split(order, folds)[fold].tolist())
    return ([p for i, p in enumerate(pairs) if i not in val_index], [p for i, p in enumerate(pairs) if i in val_index])


def make_vessel_dataset(
    pairs,
    normalization,
    batch_size,
    crop,
    training,
    error_maps=None,
    seed=0,
    input_context=None,
    scale_range=(0.5, 2.0),
    max_rotation=15.0,
    jitter=0.25,
    repeat=False,
):
    """Training: batches (images (B, crop, crop, 3), labels (B, crop, crop)[, errors (B, crop, crop)]), images
    normalised as `normalization` (tfseg.preprocessing), augmented per sample (`augment_sample`); order, sharding
    and `repeat` as `pipeline.batches`. Eval: one full-size image per batch, (images (1, H, W, 3), labels (1, H,
    W)), no augmentation. `error_maps`: a path per pair (stage 2)."""

    def sample(row, sample_seed):
        image, *targets = _decode(row)
        if training:
            return augment_sample(image, targets, sample_seed, crop, normalization, scale_range, max_rotation, jitter)
        return normalize(image, normalization), targets[0]

    return batches(
        file_columns(pairs, error_maps),
        batch_size if training else 1,
        training,
        sample,
        seed,
        input_context,
        repeat=repeat,
    )


def _decode(row):
    """(image float [0, 255], labels (H, W) int32[, errors (H, W) int32]) of one row of file columns."""
    image, mask = decode_columns(*row[:4])
    outputs = (image, tf.cast(mask[..., 0], tf.int32))
    if len(row) > 4:
        _, errors = decode_columns(row[0], row[1], row[4], row[5])
        outputs += (tf.cast(errors[..., 0], tf.int32),)
    return outputs


def augment_sample(image, targets, seed, crop, normalization, scale_range=(0.5, 2.0), max_rotation=15.0, jitter=0.25):
    """(normalised image (crop, crop, 3), *targets (crop, crop) int32): random scale (bilinear for the image,
    nearest for the label maps), flips and rotation (one projective transform; label maps filled with
    IGNORE_LABEL), padding to `crop` (image 0, label maps IGNORE_LABEL) and a random crop, then brightness,
    contrast and saturation jitter of +-`jitter` on the image."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    scale = tf.random.stateless_uniform([], seeds[0], *scale_range)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, size, "bilinear")
    labels = tf.cast(tf.image.resize(tf.stack(targets, -1), size, "nearest"), tf.float32)
    transform = random_transform(size, seeds[1], True, True, max_rotation, False, (1.0, 1.0))[None]
    warp = lambda x, fill, mode: tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None],
        transforms=transform,
        output_shape=size,
        fill_value=fill,
        interpolation=mode,
        fill_mode="CONSTANT",
    )[0]
    image, labels = warp(image, 0.0, "BILINEAR"), warp(labels, float(IGNORE_LABEL), "NEAREST")
    pad = [[0, tf.maximum(crop - size[0], 0)], [0, tf.maximum(crop - size[1], 0)], [0, 0]]
    image, labels = tf.pad(image, pad), tf.pad(labels, pad, constant_values=float(IGNORE_LABEL))
    limit = tf.shape(image)[:2] - crop + 1
    offset = tf.random.stateless_uniform([2], seeds[2], maxval=tf.int32.max, dtype=tf.int32) % limit
    image = tf.slice(image, [offset[0], offset[1], 0], [crop, crop, 3])
    labels = tf.cast(tf.slice(labels, [offset[0], offset[1], 0], [crop, crop, len(targets)]), tf.int32)
    if jitter:
        image = jitter_colour(image, seeds[3], jitter, (1 - jitter, 1 + jitter), (1 - jitter, 1 + jitter), None)
    return (normalize(image, normalization), *tf.unstack(labels, axis=-1))
