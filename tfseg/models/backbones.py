"""Backbones as feature pyramids and their input normalisation.

`build_backbone(name, weights)` returns a `keras.Model` mapping an RGB image to a dict of features keyed by
stride, `{"P3": stride 8, "P4": stride 16, "P5": stride 32}`; heads pick levels by key.

Each backbone names the input normalisation of its ImageNet weights (`tfseg.preprocessing`): resnet50 "caffe"
(keras.applications.resnet50), mobilenetv2 "tf" (keras.applications.mobilenet_v2), res2net50 "torch" (the
original PraNet's torchvision Normalize).
"""

import dataclasses
import functools
import os

import keras

from tfseg.models.blocks import TORCH_BN
from tfseg.models.res2net import res2net50, stage_output_name


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    trunk: callable  # weights ("imagenet" | None | path) -> keras.Model holding the tap layers
    taps: dict  # pyramid level -> layer name
    normalization: str  # "caffe" | "tf" | "torch": tfseg.preprocessing


def keras_application(application, weights):
    """A keras.applications model without its top; a failed ImageNet download says how to work offline."""
    try:
        return getattr(keras.applications, application)(include_top=False, weights=weights, input_shape=(None, None, 3))
    except Exception as error:  # keras.utils.get_file raises a bare Exception on network failure
        if weights != "imagenet" or "fetch failure" not in str(error).lower():
            raise
        raise ConnectionError(
            f"Could not download the ImageNet weights of {application} ({error}). On a machine without "
            f"internet, download the '{application}' no-top weights elsewhere and pass their path as "
            "backbone_weights (or use backbone_weights=None to train from scratch)."
        ) from error


BACKBONES = {
    "resnet50": BackboneSpec(
        functools.partial(keras_application, "ResNet50"),
        {"P3": "conv3_block4_out", "P4": "conv4_block6_out", "P5": "conv5_block3_out"},  # 512/1024/2048 ch
        "caffe",
    ),
    # The expansion ReLU at the start of the first stride-2 block of each level is the richest feature at that
    # stride (192/576 channels), as the standard MobileNetV2 segmentation taps; out_relu is the 1280-ch head.
    "mobilenetv2": BackboneSpec(
        functools.partial(keras_application, "MobileNetV2"),
        {"P3": "block_6_expand_relu", "P4": "block_13_expand_relu", "P5": "out_relu"},
        "tf",
    ),
    # PraNet's own backbone: the outputs of layer2, layer3, layer4 (512/1024/2048 ch).
    "res2net50": BackboneSpec(
        res2net50,
        {"P3": stage_output_name(2), "P4": stage_output_name(3), "P5": stage_output_name(4)},
        "torch",
    ),
}


def build_backbone(name, weights="imagenet"):
    """Feature pyramid `{"P3", "P4", "P5"}` of a backbone.

    weights: None (random init), "imagenet" (keras.applications backbones: downloaded by Keras and cached in
    ~/.keras/models; res2net50 has no download and says how to convert the original weights) or a path: for
    keras.applications backbones a weights file of the same application without its top (`*_notop.h5` or a
    `.weights.h5`), for res2net50 the `.weights.h5` written by `convert_weights.py --model res2net50`.
    """
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    if weights not in ("imagenet", None) and not os.path.isfile(weights):
        raise FileNotFoundError(f"Backbone weights file not found: {weights}")
    spec = BACKBONES[name]
    model = spec.trunk(weights)
    # Keras' applications update their BatchNorm statistics with momentum 0.99-0.999, so a short or from-scratch
    # run ends with inference statistics far from the trained ones. The original trains its backbone with
    # PyTorch's default (0.1, i.e. Keras 0.9). The epsilon stays: it belongs to the pretrained weights.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = TORCH_BN["momentum"]
    features = {level: model.get_layer(layer).output for level, layer in spec.taps.items()}
    return keras.Model(model.input, features, name=f"{name}_backbone")
