"""Datasets: (image, mask) pairs on disk (sources), tf.data pipelines (pipeline, augment), synthetic polyps."""

from tfseg.data.augment import joint_augment
from tfseg.data.pipeline import binarize_mask, decode_pair, make_dataset, multiscale_sizes, rescale_batch
from tfseg.data.sources import (
    IMAGE_EXTENSIONS,
    DatasetError,
    Pair,
    check_disjoint,
    check_pairs,
    find_pairs,
    split_by_file,
    split_pairs,
)
from tfseg.data.synthetic import polyp_sample, write_polyp_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "Pair",
    "binarize_mask",
    "check_disjoint",
    "check_pairs",
    "decode_pair",
    "find_pairs",
    "joint_augment",
    "make_dataset",
    "multiscale_sizes",
    "polyp_sample",
    "rescale_batch",
    "split_by_file",
    "split_pairs",
    "write_polyp_dataset",
]
