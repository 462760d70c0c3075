"""Datasets: (image, mask) pairs on disk (sources, layouts), pixel reading (imageio), tf.data pipelines
(pipeline, augment) and synthetic data.

Names are imported lazily (PEP 562), so that the numpy-only parts (sources, layouts, imageio, synthetic) work
without importing TensorFlow: `test_model.py --pred_dir` evaluates prediction maps without it.
"""

import importlib

_EXPORTS = {
    "joint_augment": "augment",
    "binarize_mask": "pipeline",
    "decode_pair": "pipeline",
    "make_dataset": "pipeline",
    "multiscale_sizes": "pipeline",
    "rescale_batch": "pipeline",
    "IMAGE_EXTENSIONS": "sources",
    "DatasetError": "sources",
    "Pair": "sources",
    "check_disjoint": "sources",
    "check_pairs": "sources",
    "find_pairs": "sources",
    "split_by_file": "sources",
    "split_pairs": "sources",
    "find_dataset": "layouts",
    "find_datasets": "layouts",
    "read_rgb": "imageio",
    "read_gray": "imageio",
    "read_mask": "imageio",
    "polyp_sample": "synthetic",
    "write_polyp_dataset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfseg.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tfseg.data.{_EXPORTS[name]}"), name)
