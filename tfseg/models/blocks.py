"""Building blocks shared by tfseg models: conv-BN units (tiled convolutions) and torch-exact bilinear resizing.

Everything here uses `keras.ops` only, so it runs on any Keras 3 backend.
"""

import math

import keras
from keras import ops

# PyTorch's BatchNorm2d defaults (eps=1e-5, momentum=0.1) in Keras terms.
TORCH_BN = {"epsilon": 1e-5, "momentum": 0.9}
GROUP_NORM_GROUPS = 16  # norm="group": gcd(channels, 16) groups (Wu & He, ECCV 2018, use 32 on wider layers)
CONV_TILE = 128  # output tile side of `tiled_conv`
TILED_CONV_WEIGHTS = 2**15  # kernels this large are tiled (half of a 256 KiB L2 cache, in floats)


def _tile_windows(length, kernel, stride, tile):
    """One axis of `tiled_conv`: (tiles, outputs per tile, window length, total outputs); Python ints for a
    static length, tensors otherwise."""
    outputs = (length - kernel) // stride + 1
    count = (outputs + tile - 1) // tile
    size = (outputs + count - 1) // count
    return count, size, (size - 1) * stride + kernel, outputs


def _window_indices(length, count, size, stride, window):
    """The input rows (or columns) of each tile's window, tile after tile, clamped to the input (then cropped)."""
    index = ops.arange(count)[:, None] * (size * stride) + ops.arange(window)[None]
    return ops.minimum(ops.reshape(index, (-1,)), length - 1)


def tiled_conv(conv, x, tile=CONV_TILE):
    """A "valid" Conv2D; with a kernel of TILED_CONV_WEIGHTS or more, on tiles of at most `tile` x `tile` outputs
    stacked along the batch (the same sums per output).

    oneDNN's f32 NHWC convolution (TF's CPU default) splits its im2col buffer into L2-sized blocks only for
    kernels under half the L2 cache; a larger kernel gets a buffer for the whole image, and past 1 GiB a naive
    reference loop: the small EAR-Net's 3x3 OCR conv (240 -> 64) ran for minutes on a 1920 x 2000 input."""
    if math.prod(conv.kernel.shape) < TILED_CONV_WEIGHTS:
        return conv(x)
    batch, height, width, channels = ops.shape(x)
    (kh, kw), (sh, sw) = [(k - 1) * d + 1 for k, d in zip(conv.kernel_size, conv.dilation_rate)], conv.strides
    nh, th, wh, oh = _tile_windows(height, kh, sh, tile)
    nw, tw, ww, ow = _tile_windows(width, kw, sw, tile)
    if isinstance(nh, int) and isinstance(nw, int) and nh == nw == 1:  # a static shape, one tile: no index ops
        return conv(x)
    ih, iw = _window_indices(height, nh, th, sh, wh), _window_indices(width, nw, tw, sw, ww)
    x = ops.reshape(ops.take(ops.take(x, ih, axis=1), iw, axis=2), (batch, nh, wh, nw, ww, channels))
    y = conv(ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4, 5)), (-1, wh, ww, channels)))
    y = ops.transpose(ops.reshape(y, (batch, nh, nw, th, tw, conv.filters)), (0, 1, 3, 2, 4, 5))
    return ops.reshape(y, (batch, nh * th, nw * tw, conv.filters))[:, :oh, :ow]


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


def _interpolation_matrix(in_size, out_size, align_corners, dtype):
    """(out, in) matrix of `_source_indices`' weights: resizing one axis is a matmul with it."""
    low, high, frac = _source_indices(in_size, out_size, align_corners)
    frac = ops.cast(frac, dtype)[:, None]
    return ops.one_hot(low, in_size, dtype=dtype) * (1 - frac) + ops.one_hot(high, in_size, dtype=dtype) * frac


def resize_bilinear(x, size, align_corners=False):
    """Bilinear resize of an NHWC tensor to `size` (dynamic sizes allowed), as torch's F.interpolate.

    With static sizes (eager calls, traced steps, fixed-size exports) native ops replace the gathers, which
    TFLite and ONNX Runtime run slowly: `ops.image.resize` (half-pixel centres, no antialiasing: torch's
    align_corners=False on every backend), or two small interpolation matmuls for align_corners=True."""
    if all(isinstance(n, int) for n in (*size, *x.shape[1:3])):
        if not align_corners:
            return ops.cast(ops.image.resize(x, size, "bilinear"), x.dtype)
        rows = _interpolation_matrix(x.shape[1], size[0], True, x.dtype)
        columns = _interpolation_matrix(x.shape[2], size[1], True, x.dtype)
        return ops.einsum("oh,bhwc,pw->bopc", rows, x, columns)
    x = _resize_axis(x, size[0], 1, align_corners)
    return _resize_axis(x, size[1], 2, align_corners)


def build_chain(layers, input_shape):
    """Builds `layers` applied one after the other to `input_shape`: a layer holding them has its weights at
    construction, without Keras tracing its `call` on symbolic inputs to find them (seconds per layer)."""
    for layer in layers:
        layer.build(input_shape)
        input_shape = layer.compute_output_shape(input_shape)


def _normalize_with_batch_statistics(x, mean, variance, gamma, beta, epsilon, axes):
    """gamma (x - mean) / sqrt(variance + epsilon) + beta over the batch statistics `mean`, `variance` (of x over
    `axes`, given without their own gradient), with the closed-form gradient that counts their dependence on x
    (Ioffe & Szegedy 2015, section 3): dx = gamma / sigma (dy - mean(dy) - x_hat mean(dy x_hat))."""

    @ops.custom_gradient
    def normalize(x, mean, variance, gamma, beta):
        inverse_std = ops.rsqrt(variance + epsilon)
        x_hat = (x - mean) * inverse_std

        def gradient(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            d_beta = ops.sum(dy, axes)
            d_gamma = ops.sum(dy * x_hat, axes)
            count = ops.cast(ops.size(x) // ops.shape(x)[-1], x.dtype)
            dx = (gamma * inverse_std) * (dy - (d_beta + x_hat * d_gamma) / count)
            return dx, ops.zeros_like(mean), ops.zeros_like(variance), d_gamma, d_beta

        return x_hat * gamma + beta, gradient

    return normalize(x, mean, variance, gamma, beta)


@keras.saving.register_keras_serializable(package="tfseg")
class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step normalises with a hand-written gradient
    (`_normalize_with_batch_statistics`): the same outputs, moving averages and gradients (to float32 rounding)
    in half the graph of Keras' decomposed BN and its automatic gradient, which made 60 % of a traced PraNet-
    Res2Net-50 training step (docs/BENCHMARKS.md). Channels last, float32, no mask, renorm or synchronized
    statistics; anything else, and inference, is Keras' own `call`."""

    def call(self, inputs, training=None, mask=None):
        channels_last = self.axis in (-1, len(inputs.shape) - 1)
        plain = mask is None and not self.renorm and not self.synchronized and self.scale and self.center
        if not (
            training
            and self.trainable
            and plain
            and channels_last
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
        ):
            return super().call(inputs, training=training, mask=mask)
        mean, variance = ops.moments(inputs, axes=self._reduction_axes)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return _normalize_with_batch_statistics(
            inputs,
            ops.stop_gradient(mean),
            ops.stop_gradient(variance),
            ops.cast(self.gamma, inputs.dtype),  # read here: a variable read inside needs tf.custom_gradient's
            ops.cast(self.beta, inputs.dtype),  # `variables` argument
            self.epsilon,
            self._reduction_axes,
        )


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
    """Conv2d(bias=False) + BatchNorm2d (+ optional activation). Convs wider than 1 x 1 pad `dilation * (k // 2)`
    on every side as torch does (Keras' "same" would pad only bottom/right for strided convs on even inputs) and
    run as `tiled_conv`.

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
        self.pad = keras.layers.ZeroPadding2D(pad, name="pad") if any(pad) else None
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, dilation_rate=dilation_rate, use_bias=False, name="conv"
        )
        self.bn = (
            BatchNorm(**TORCH_BN, name="bn")
            if norm == "batch"
            else keras.layers.GroupNormalization(
                math.gcd(filters, GROUP_NORM_GROUPS), epsilon=TORCH_BN["epsilon"], name="gn"
            )
        )
        self.act = keras.layers.Activation(activation, name="act") if activation else None

    def build(self, input_shape):
        if self.pad:
            self.pad.build(input_shape)
            input_shape = self.pad.compute_output_shape(input_shape)
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = self.bn(tiled_conv(self.conv, self.pad(x)) if self.pad else self.conv(x), training=training)
        return self.act(x) if self.act else x

    def compute_output_shape(self, input_shape):
        if self.pad:
            input_shape = self.pad.compute_output_shape(input_shape)
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "strides": self.strides,
            "activation": self.activation,
            "norm": self.norm,
        }
