"""Building blocks shared by tfseg models: conv-BN units and torch-exact bilinear resizing.

Everything here uses `keras.ops` only, so it runs on any Keras 3 backend.
"""

import math

import keras
from keras import ops

# PyTorch's BatchNorm2d defaults (eps=1e-5, momentum=0.1) in Keras terms.
TORCH_BN = {"epsilon": 1e-5, "momentum": 0.9}
GROUP_NORM_GROUPS = 16  # norm="group": gcd(channels, 16) groups (Wu & He, ECCV 2018, use 32 on wider layers)


def _source_indices(in_size, out_size, align_corners):
    """Neighbour indices and weights of `F.interpolate(mode='bilinear')` along one axis.

    align_corners=True:  src = dst * (in - 1) / (out - 1)
    align_corners=False: src = max((dst + 0.5) * in / out - 0.5, 0)   (half-pixel centres, no antialias)
    """
    dst = ops.arange(out_size, dtype="float32")
    in_f = ops.cast(in_size, "float32")
    out_f = ops.cast(out_size, "float32")
    if align_corners:
        src = dst * (in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0)
    else:
        src = ops.maximum((dst + 0.5) * in_f / out_f - 0.5, 0.0)
    low = ops.floor(src)
    frac = src - low
    low = ops.cast(low, "int32")
    high = ops.minimum(low + 1, ops.cast(in_size, "int32") - 1)
    return low, high, frac


def _resize_axis(x, out_size, axis, align_corners):
    low, high, frac = _source_indices(ops.shape(x)[axis], out_size, align_corners)
    frac = ops.cast(frac, x.dtype)
    frac = ops.reshape(frac, (-1, 1) if axis == 1 else (-1,))  # broadcast over (W, C) or (C,)
    frac = ops.expand_dims(frac, -1)
    return ops.take(x, low, axis=axis) * (1 - frac) + ops.take(x, high, axis=axis) * frac


def resize_bilinear(x, size, align_corners=False):
    """Bilinear resize of an NHWC tensor to `size` (dynamic sizes allowed), as torch's F.interpolate."""
    x = _resize_axis(x, size[0], 1, align_corners)
    return _resize_axis(x, size[1], 2, align_corners)


@keras.saving.register_keras_serializable(package="tfseg")
class ResizeLike(keras.layers.Layer):
    """Resizes `x` to the spatial size of `reference` (bilinear, align_corners=False)."""

    def call(self, x, reference):
        shape = ops.shape(reference)
        return resize_bilinear(x, (shape[1], shape[2]))

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="tfseg")
class Upsample2x(keras.layers.Layer):
    """x2 bilinear upsampling with align_corners=True (PraNet's `nn.Upsample` in the decoder)."""

    def call(self, x):
        shape = ops.shape(x)
        return resize_bilinear(x, (2 * shape[1], 2 * shape[2]), align_corners=True)

    def compute_output_shape(self, shape):
        double = lambda n: None if n is None else 2 * n
        return (shape[0], double(shape[1]), double(shape[2]), shape[3])


@keras.saving.register_keras_serializable(package="tfseg")
class ConvBN(keras.layers.Layer):
    """Conv2d(bias=False) + BatchNorm2d (+ optional activation). Strided convs pad `dilation * (k // 2)` on
    every side as torch does (Keras' "same" would pad only bottom/right for even inputs).

    Without activation it is PraNet's BasicConv2d (whose ReLU is never called); with "relu" the conv-BN-ReLU
    unit of HRNet and OCR. `norm="group"` puts GroupNormalization (gcd(filters, 16) groups, eps 1e-5) in the
    place of BatchNorm (the attribute keeps the name `bn`): no batch statistics, for batches of one or two."""

    def __init__(self, filters, kernel_size, dilation_rate=1, strides=1, activation=None, norm="batch", **kwargs):
        super().__init__(**kwargs)
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        self.filters, self.kernel_size, self.dilation_rate = filters, kernel_size, dilation_rate
        self.strides, self.activation, self.norm = strides, activation, norm
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        pad = tuple(dilation_rate * (k // 2) for k in kernel)
        self.pad = keras.layers.ZeroPadding2D(pad, name="pad") if strides > 1 and any(pad) else None
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation_rate,
                                        padding="valid" if self.pad else "same", use_bias=False, name="conv")
        self.bn = keras.layers.BatchNormalization(**TORCH_BN, name="bn") if norm == "batch" else \
            keras.layers.GroupNormalization(math.gcd(filters, GROUP_NORM_GROUPS), epsilon=TORCH_BN["epsilon"],
                                            name="gn")
        self.act = keras.layers.Activation(activation, name="act") if activation else None

    def build(self, input_shape):
        if self.pad:
            self.pad.build(input_shape)
            input_shape = self.pad.compute_output_shape(input_shape)
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = self.bn(self.conv(self.pad(x) if self.pad else x), training=training)
        return self.act(x) if self.act else x

    def compute_output_shape(self, input_shape):
        if self.pad:
            input_shape = self.pad.compute_output_shape(input_shape)
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate, "strides": self.strides, "activation": self.activation,
                "norm": self.norm}
