"""tf.data pipelines of (image, mask) pairs: the core every dataset shares (`batches`: seeded order, sharding,
endless passes, per-sample seeds, batching), the decoders, and PraNet's dataset (`make_dataset`: resize,
augment, normalise). The vessel dataset (tfseg.data.vessels) is the same core with other samples.

Every file is decoded to RGB float32 on the 8-bit scale [0, 255] by a decoder picked in Python from its
extension: TF's own decoders for jpg/jpeg/bmp/gif (8-bit) and png (read as 16-bit, so 16-bit files keep their
precision), OpenCV through `tf.numpy_function` for tif/tiff/ppm/pgm (STARE labels are greyscale PGM files named
`.ppm`; `cv2.IMREAD_UNCHANGED` reads them). Images keep the three channels (grey replicated, alpha dropped);
masks become one channel (see `binarize_mask`).
"""

import os

import cv2
import numpy as np
import tensorflow as tf

from tfseg.data.augment import joint_augment
from tfseg.data.sources import DatasetError
from tfseg.preprocessing import normalize

TF_8BIT, TF_16BIT, OPENCV = range(3)  # decoders, the branches of `_decode_rgb`
DECODER_BY_EXTENSION = {
    **dict.fromkeys((".jpg", ".jpeg", ".bmp", ".gif"), TF_8BIT),
    ".png": TF_16BIT,
    **dict.fromkeys((".tif", ".tiff", ".ppm", ".pgm"), OPENCV),
}
MULTISCALE_RATES = (0.75, 1.0, 1.25)


def decode_pair(image_path, mask_path):
    """(image HxWx3 float32 in [0, 255], mask HxWx1 float32 in {0, 1}) of two files."""
    indices = tf.constant([decoder_index(image_path), decoder_index(mask_path)])
    return decode_columns(tf.constant(str(image_path)), indices[0], tf.constant(str(mask_path)), indices[1])


def decoder_index(path):
    """The DECODER_BY_EXTENSION branch that reads `path` (picked in Python, before tf.data)."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in DECODER_BY_EXTENSION:
        raise DatasetError(f"Unsupported image extension {ext!r}: {path}")
    return DECODER_BY_EXTENSION[ext]


def decode_columns(image_path, image_decoder, mask_path, mask_decoder):
    """(image HxWx3 float32 in [0, 255], mask HxWx1 in {0, 1}) from path and decoder-index tensors."""
    image = _decode_rgb(image_path, image_decoder)
    mask = binarize_mask(tf.reduce_max(_decode_rgb(mask_path, mask_decoder), axis=-1, keepdims=True))
    return image, mask


def _decode_rgb(path, decoder):
    """HxWx3 float32 on the 8-bit scale, by the decoder (an int tensor) picked from DECODER_BY_EXTENSION."""
    return tf.switch_case(
        decoder,
        {
            TF_8BIT: lambda: _decode_tf(path, tf.uint8),
            TF_16BIT: lambda: _decode_tf(path, tf.uint16),
            OPENCV: lambda: _decode_cv2(path),
        },
    )


def _decode_tf(path, dtype):
    raw = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=dtype, expand_animations=False)
    return tf.cast(raw, tf.float32) / (257.0 if dtype == tf.uint16 else 1.0)  # 65535 / 257 = 255


def _decode_cv2(path):
    pixels = tf.numpy_function(_read_cv2_rgb, [path], tf.float32, stateful=False)
    pixels.set_shape([None, None, 3])
    return pixels


def _read_cv2_rgb(path):
    """numpy side of `_decode_cv2`: OpenCV's BGR(A)/grey, 8 or 16 bit -> RGB float32 on the 8-bit scale."""
    path = os.fsdecode(np.asarray(path).item())  # bytes in a tf.data graph, a 0-d array when eager
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"OpenCV cannot read {path}")
    pixels = raw.astype(np.float32) / (257.0 if raw.dtype == np.uint16 else 1.0)
    if pixels.ndim == 2 or pixels.shape[-1] < 3:
        return np.repeat(pixels.reshape(*pixels.shape[:2], -1)[..., :1], 3, axis=-1)
    return np.ascontiguousarray(pixels[..., 2::-1])  # BGR(A) -> RGB


def binarize_mask(gray):
    """Foreground = gray > 128 on the 8-bit scale, the threshold of the PraNet evaluation protocol (colour masks
    use their brightest channel, 16-bit ones are scaled by 1/257). A mask whose maximum is at most 1 is a 0/1
    label map (8 or 16 bit): there foreground = gray > 0."""
    threshold = tf.where(tf.reduce_max(gray) <= 1.0, 0.0, 128.0)
    return tf.cast(gray > threshold, tf.float32)


def make_dataset(
    pairs,
    normalization,
    input_size,
    batch_size,
    training,
    augment=False,
    seed=0,
    input_context=None,
    drop_remainder=None,
    repeat=False,
):
    """Batches `(images (B, h, w, 3) normalised as `normalization` (tfseg.preprocessing), masks (B, h, w, 1) in
    {0, 1})`, float32, resized to `input_size`. Training: optionally augmented (`joint_augment`); see `batches`
    for order, sharding, repetition and batching. Eval: file order, no augmentation."""
    size = _height_width(input_size)

    def sample(row, sample_seed):
        image, mask = _decode_resized(row, size)
        if training and augment:
            image, mask = joint_augment(image, mask, sample_seed)
        return normalize(image, normalization), mask

    return batches(file_columns(pairs), batch_size, training, sample, seed, input_context, drop_remainder, repeat)


def batches(columns, batch_size, training, sample, seed=0, input_context=None, drop_remainder=None, repeat=False):
    """The pipeline core: `columns` (lists with an entry per sample, e.g. `file_columns`) -> batches of
    `sample(row, seed)`, where `seed` is the sample's own stateless seed, derived from (seed, input pipeline,
    position). Deterministic: training takes the samples in a seeded order fixed however often the dataset is
    iterated (the trainers build one per epoch with seed + epoch, so a resumed run sees the same order), eval in
    file order. `repeat` (training): endless, every pass reshuffled and sampled afresh (a plain `.repeat()`
    afterwards would replay the first pass's augmentations). `input_context` (tf.distribute.InputContext) shards
    the samples and turns `batch_size` (global) into the per-replica batch size. drop_remainder defaults to
    `training`."""
    columns = [list(column) for column in columns]
    if not columns[0]:
        raise DatasetError("The dataset has no samples")
    if training:
        order = np.random.default_rng(seed).permutation(len(columns[0]))
        columns = [[column[i] for i in order] for column in columns]
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    drop_remainder = training if drop_remainder is None else drop_remainder
    n_local = len(range(pipeline_id, len(columns[0]), num_pipelines))
    if drop_remainder and n_local < batch_size:
        raise DatasetError(f"{n_local} sample(s) per input pipeline cannot fill one batch of {batch_size}")
    dataset = tf.data.Dataset.from_tensor_slices(tuple(columns)).shard(num_pipelines, pipeline_id)
    if training and repeat:
        dataset = endless(dataset, n_local, seed)
    base_seed = tf.constant([seed, pipeline_id], tf.int64)
    dataset = dataset.enumerate().map(
        lambda index, row: sample(row, tf.random.experimental.stateless_fold_in(base_seed, index)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.batch(batch_size, drop_remainder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def endless(dataset, size, seed):
    """`dataset` repeated forever, each pass after the first in a new seeded order (the first keeps its own)."""
    return dataset.concatenate(dataset.shuffle(max(size, 1), seed=seed, reshuffle_each_iteration=True).repeat())


def file_columns(pairs, extra=None):
    """(image paths, image decoders, mask paths, mask decoders[, extra paths, extra decoders]): a row per pair,
    the decoders chosen here, in Python; `extra`: one more file per pair (e.g. an error map)."""
    pairs = list(pairs)
    columns = [
        [p.image for p in pairs],
        [decoder_index(p.image) for p in pairs],
        [p.mask for p in pairs],
        [decoder_index(p.mask) for p in pairs],
    ]
    if extra is not None:
        columns += [list(extra), [decoder_index(path) for path in extra]]
    return columns


def _decode_resized(columns, size):
    """Image: bilinear with antialiasing (as PIL's bilinear resize in PraNet's loader); mask: same, then > 0.5."""
    image, mask = decode_columns(*columns)
    image = tf.image.resize(image, size, "bilinear", antialias=True)
    mask = tf.cast(tf.image.resize(mask, size, "bilinear", antialias=True) > 0.5, tf.float32)
    return image, mask


def _height_width(size):
    height, width = (size, size) if np.ndim(size) == 0 else size
    return int(height), int(width)


def multiscale_sizes(input_size, rates=MULTISCALE_RATES):
    """PraNet's multi-scale training sizes: `int(round(input_size * rate / 32) * 32)`, 352 -> [256, 352, 448]."""
    return [int(round(input_size * rate / 32) * 32) for rate in rates]


def rescale_batch(images, masks, size):
    """Both batches resized to `size` (int or (h, w)) bilinearly with align_corners=True, as PraNet's
    `F.upsample(..., mode='bilinear', align_corners=True)`; masks stay soft, as there."""
    size = _height_width(size)
    return tuple(tf.raw_ops.ResizeBilinear(images=batch, size=size, align_corners=True) for batch in (images, masks))
