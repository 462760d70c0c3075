"""Res2Net-50-v1b-26w-4s (Gao et al., TPAMI 2019), PraNet's backbone, as in the original lib/Res2Net_v1b.py.

Layer names follow the original modules so that checkpoints map one to one (see tfseg.convert):
`stem_conv1/2/3` = conv1.0 + conv1.1, conv1.3 + conv1.4, conv1.6 + bn1; `layer{L}_block{B}` = layer{L}.{B}.
Every stride-2 op pads as torch does, so each stage maps a size n to ceil(n / 2), odd sizes included.
"""

import keras
from keras import ops

from tfseg.models.blocks import ConvBN

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride) of layer1-4
BASE_WIDTH = 26
SCALE = 4  # chunks per block: SCALE - 1 3x3 convs, the last chunk is passed through (or pooled)
EXPANSION = 4  # block output channels = EXPANSION * planes


def stage_output_name(stage):
    """Name of the last block of layer `stage` (1-4), whose output is the stage's feature map."""
    return f"layer{stage}_block{STAGES[stage - 1][1] - 1}"


def avg_pool_counting_padding(x, pool_size, strides):
    """torch AvgPool2d(pool_size, strides, padding=pool_size // 2) with its default count_include_pad=True: the
    zero padding is averaged in (the divisor is always pool_size**2)."""
    pad = pool_size // 2
    x = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return ops.average_pool(x, pool_size, strides, padding="valid")


def avg_pool_ceil(x, size):
    """torch AvgPool2d(size, size, ceil_mode=True, count_include_pad=False): n -> ceil(n / size), a partial last
    window (odd sizes) is averaged over its valid pixels only."""
    pad = ((0, 0), (0, size - 1), (0, size - 1), (0, 0))  # room for the partial window, never a whole one
    total = ops.average_pool(ops.pad(x, pad), size, size, padding="valid")
    valid = ops.average_pool(ops.pad(ops.ones_like(x[..., :1]), pad), size, size, padding="valid")
    return total / valid


@keras.saving.register_keras_serializable(package="tfseg")
class Bottle2neck(keras.layers.Layer):
    """Res2Net bottleneck: 1x1 conv-BN-ReLU to SCALE chunks of `width = floor(planes * 26 / 64)` channels, 3x3
    conv-BN-ReLU over the chunks, concat, 1x1 conv-BN to 4 * planes, plus the shortcut, ReLU.

    Normal block: y0 = conv0(s0), y_i = conv_i(y_{i-1} + s_i), y3 = s3; identity shortcut.
    Stage block (`stage=True`, the first of each layer, stype='stage'): y_i = conv_i(s_i) independently, with the
    layer's stride; y3 = AvgPool2d(3, stride, padding 1)(s3); shortcut (v1b) = AvgPool2d(stride, ceil_mode=True,
    count_include_pad=False) (identity for stride 1) then 1x1 conv-BN.
    """

    def __init__(self, planes, strides=1, stage=False, **kwargs):
        super().__init__(**kwargs)
        self.planes, self.strides, self.stage = planes, strides, stage
        self.width = width = planes * BASE_WIDTH // 64
        self.conv1 = ConvBN(width * SCALE, 1, activation="relu", name="conv1")
        self.split_convs = [
            ConvBN(width, 3, strides=strides, activation="relu", name=f"split_conv{i}") for i in range(SCALE - 1)
        ]
        self.conv3 = ConvBN(EXPANSION * planes, 1, name="conv3")
        self.shortcut = ConvBN(EXPANSION * planes, 1, name="shortcut") if stage else None

    def build(self, input_shape):  # explicit, so that a deserialised block has its weights before loading them
        self.conv1.build(input_shape)
        for conv in self.split_convs:
            conv.build((*input_shape[:3], self.width))
        strided = self.compute_output_shape(input_shape)[:3]
        self.conv3.build((*strided, self.width * SCALE))
        if self.shortcut:
            self.shortcut.build((*strided, input_shape[-1]))

    def call(self, x, training=None):
        chunks = ops.split(self.conv1(x, training=training), SCALE, axis=-1)
        outputs = []
        for conv, chunk in zip(self.split_convs, chunks):
            if outputs and not self.stage:
                chunk = outputs[-1] + chunk  # the hierarchical cascade
            outputs.append(conv(chunk, training=training))
        outputs.append(avg_pool_counting_padding(chunks[-1], 3, self.strides) if self.stage else chunks[-1])
        out = self.conv3(ops.concatenate(outputs, axis=-1), training=training)  # stride `strides`
        if self.stage:
            x = self.shortcut(avg_pool_ceil(x, self.strides) if self.strides > 1 else x, training=training)
        return ops.relu(out + x)

    def compute_output_shape(self, input_shape):
        ceil = lambda n: None if n is None else -(-n // self.strides)
        return (input_shape[0], ceil(input_shape[1]), ceil(input_shape[2]), EXPANSION * self.planes)

    def get_config(self):
        return {**super().get_config(), "planes": self.planes, "strides": self.strides, "stage": self.stage}


def res2net50(weights=None):
    """Res2Net-50-v1b-26w-4s trunk, image -> layer4 (stride 32). `weights`: None (random init) or a
    `.weights.h5` written by `convert_weights.py --model res2net50` (tfseg.convert)."""
    if weights == "imagenet":
        raise FileNotFoundError(
            "There is no Keras download of the Res2Net-50 ImageNet weights. Convert the original "
            "res2net50_v1b_26w_4s-3cf99910.pth: `pip install .[torch]`, then `python convert_weights.py "
            "res2net50_v1b_26w_4s-3cf99910.pth res2net50.weights.h5 --model res2net50`, and pass "
            "res2net50.weights.h5 as the backbone weights (or None to train from scratch)."
        )
    inputs = keras.Input((None, None, 3), name="image")
    x = ConvBN(32, 3, strides=2, activation="relu", name="stem_conv1")(inputs)  # H/2
    x = ConvBN(32, 3, activation="relu", name="stem_conv2")(x)
    x = ConvBN(64, 3, activation="relu", name="stem_conv3")(x)  # conv1.6, bn1, relu
    # MaxPool2d(3, 2, padding=1): after a ReLU, zero padding gives the same maxima as torch's -inf padding.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, name="maxpool")(x)  # H/4
    for stage, (planes, blocks, strides) in enumerate(STAGES, 1):  # H/4, H/8, H/16, H/32
        for block in range(blocks):
            first = block == 0
            x = Bottle2neck(planes, strides if first else 1, stage=first, name=f"layer{stage}_block{block}")(x)
    model = keras.Model(inputs, x, name="res2net50")
    if weights is not None:
        model.load_weights(weights)
    return model
