"""Conventions that data, models, losses, export and inference share, defined once: the input normalisations
and the ignore label. Plain arithmetic: works on TensorFlow tensors, any Keras backend's tensors and numpy
arrays alike, and imports no framework.

`normalize(images, mode)` turns RGB values in [0, 255] into what a model's weights expect; a model names its mode
(`model.normalization`, from its backbone for PraNet), the data pipeline and the exported and inference paths
apply it, never a layer inside the model:

| mode    | normalisation                                       | used by                                     |
|---------|-----------------------------------------------------|---------------------------------------------|
| "caffe" | RGB -> BGR, minus the ImageNet BGR mean, no scaling | Keras' ResNet50 weights                     |
| "tf"    | x / 127.5 - 1                                       | Keras' MobileNetV2 weights                  |
| "torch" | (x / 255 - mean) / std, ImageNet mean and std       | torchvision's Normalize: Res2Net, HRNet-OCR |
"""

import numpy as np

NORMALIZATIONS = ("caffe", "tf", "torch")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], "float32")
IGNORE_LABEL = 255  # label maps: pixels no loss or metric sees (crop padding), as torch's ignore_index=255


def normalize(images, mode):
    """RGB in [0, 255] (float) -> the input of a model trained with the normalisation `mode` (module table)."""
    if mode == "caffe":
        return images[..., ::-1] - CAFFE_BGR_MEAN
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "torch":
        return (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    raise ValueError(f"Unknown normalisation {mode!r}; expected one of {NORMALIZATIONS}")
