"""PraNet: Parallel Reverse Attention Network (Fan et al., MICCAI 2020), as in the official lib/PraNet_Res2Net.py.

Layer names follow the original modules (rfb2_1, agg1, ra4 ...) so that checkpoints map one to one.
"""

import logging

import keras
from keras import ops

from tfseg.models.backbones import BACKBONES, build_backbone
from tfseg.models.blocks import ConvBN, ResizeLike, Upsample2x, build_chain, resize_bilinear
from tfseg.models.preset import Preset
from tfseg.models.spec import SPEC_KEY, InferenceSpec, check_input_size, size_pair, without_spec
from tfseg.models.supervision import DeepSupervision

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="tfseg")
class RFB(keras.layers.Layer):
    """Receptive field block (RFB_modified): four conv-BN branches, `relu(conv_cat(concat) + conv_res(x))`."""

    def __init__(self, channels=32, **kwargs):
        super().__init__(**kwargs)
        self.channels = c = channels

        def branch(index, k):  # 1x1, 1xk, kx1, 3x3 dilated by k
            return [
                ConvBN(c, 1, name=f"branch{index}_0"),
                ConvBN(c, (1, k), name=f"branch{index}_1"),
                ConvBN(c, (k, 1), name=f"branch{index}_2"),
                ConvBN(c, 3, k, name=f"branch{index}_3"),
            ]

        self.branches = [[ConvBN(c, 1, name="branch0_0")]] + [branch(i, k) for i, k in ((1, 3), (2, 5), (3, 7))]
        self.conv_cat = ConvBN(c, 3, name="conv_cat")
        self.conv_res = ConvBN(c, 1, name="conv_res")

    def call(self, x, training=None):
        outputs = []
        for convs in self.branches:
            y = x
            for conv in convs:
                y = conv(y, training=training)
            outputs.append(y)
        cat = self.conv_cat(ops.concatenate(outputs, axis=-1), training=training)
        return ops.relu(cat + self.conv_res(x, training=training))

    def build(self, input_shape):
        for convs in self.branches:
            build_chain(convs, input_shape)
        self.conv_cat.build((*input_shape[:3], 4 * self.channels))
        self.conv_res.build(input_shape)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="tfseg")
class PartialDecoder(keras.layers.Layer):
    """Parallel partial decoder (`aggregation`): fuses the stride-32/16/8 RFB features into the global map.

    up = x2 bilinear, align_corners=True. No activation anywhere (the original's relu is never called).
    """

    def __init__(self, channels=32, **kwargs):
        super().__init__(**kwargs)
        self.channels = c = channels
        self.up = Upsample2x(name="upsample")
        self.conv_upsample1, self.conv_upsample2, self.conv_upsample3, self.conv_upsample4 = (
            ConvBN(c, 3, name=f"conv_upsample{i}") for i in range(1, 5)
        )
        self.conv_upsample5 = ConvBN(2 * c, 3, name="conv_upsample5")
        self.conv_concat2 = ConvBN(2 * c, 3, name="conv_concat2")
        self.conv_concat3 = ConvBN(3 * c, 3, name="conv_concat3")
        self.conv4 = ConvBN(3 * c, 3, name="conv4")
        self.conv5 = keras.layers.Conv2D(1, 1, name="conv5")  # plain conv with bias

    def call(self, x1, x2, x3, training=None):  # strides 32, 16, 8
        up, t = self.up, training
        x2_1 = self.conv_upsample1(up(x1), training=t) * x2  # stride 16
        x3_1 = self.conv_upsample2(up(up(x1)), training=t) * self.conv_upsample3(up(x2), training=t) * x3  # 8
        x2_2 = self.conv_concat2(ops.concatenate([x2_1, self.conv_upsample4(up(x1), training=t)], -1), training=t)
        x3_2 = self.conv_concat3(ops.concatenate([x3_1, self.conv_upsample5(up(x2_2), training=t)], -1), training=t)
        return self.conv5(self.conv4(x3_2, training=t))  # (B, H/8, W/8, 1)

    def build(self, x1_shape, x2_shape, x3_shape):
        c, channels = self.channels, lambda shape, n: (*shape[:3], n)
        for conv in (self.conv_upsample1, self.conv_upsample2, self.conv_upsample3, self.conv_upsample4):
            conv.build(channels(x3_shape, c))
        self.conv_upsample5.build(channels(x3_shape, 2 * c))
        self.conv_concat2.build(channels(x2_shape, 2 * c))
        build_chain([self.conv_concat3, self.conv4, self.conv5], channels(x3_shape, 3 * c))

    def compute_output_shape(self, x1_shape, x2_shape, x3_shape):
        return (*x3_shape[:3], 1)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="tfseg")
class ReverseAttention(keras.layers.Layer):
    """Reverse attention branch: `convs((1 - sigmoid(m)) * feature) + m`, m = previous map at the feature's size.

    convs = 1x1 -> `filters`, `num_hidden` kxk convs each followed by ReLU, then an `out_kernel` conv -> 1.
    Every conv is conv + BN; no ReLU after the last one (a ReLU there, as in the earlier TF port, makes the
    residual non-negative so a branch could never remove a false positive).
    RA4: (256, k=5, 3 hidden, out 1x1); RA3, RA2: (64, k=3, 2 hidden, out 3x3).
    """

    def __init__(self, filters, kernel_size, num_hidden, out_kernel, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.num_hidden, self.out_kernel = filters, kernel_size, num_hidden, out_kernel
        self.convs = (
            [ConvBN(filters, 1, name="conv1")]
            + [ConvBN(filters, kernel_size, name=f"conv{i + 2}") for i in range(num_hidden)]
            + [ConvBN(1, out_kernel, name=f"conv{num_hidden + 2}")]
        )

    def call(self, feature, previous, training=None):
        shape = ops.shape(feature)
        m = resize_bilinear(previous, (shape[1], shape[2]))
        x = (1.0 - ops.sigmoid(m)) * feature
        x = self.convs[0](x, training=training)
        for conv in self.convs[1:-1]:
            x = ops.relu(conv(x, training=training))
        return self.convs[-1](x, training=training) + m

    def build(self, feature_shape, previous_shape):
        build_chain(self.convs, feature_shape)

    def compute_output_shape(self, feature_shape, previous_shape):
        return (*feature_shape[:3], 1)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "num_hidden": self.num_hidden,
            "out_kernel": self.out_kernel,
        }


CONVERT_ORIGINAL = (
    "convert the authors' checkpoint PraNet-19.pth (github.com/DengPingFan/PraNet) with `python convert_weights.py "
    "PraNet-19.pth PraNet-19.keras --model pranet` (needs torch: pip install 'tfseg[torch]'), then use PraNet-19.keras "
    "as it is (--model PraNet-19.keras) or save it as a preset: "
    "`keras.models.load_model('PraNet-19.keras').save_to_preset('pranet_res2net50_original')` after `import "
    "tfseg.models`, and load that folder"
)
# What tfseg builds without a hosted preset (tfseg.models.preset); a trained preset hosted on a hub is an entry
# {"description", "handle": "hf://owner/name" or "kaggle://..."}.
PRESETS = {
    "pranet_resnet50_imagenet": {
        "description": "PraNet on ResNet50 with the keras.applications ImageNet weights (downloaded once into "
        "~/.keras/models); the decoder is untrained: a start for training",
        "config": {"backbone": "resnet50", "backbone_weights": "imagenet"},
    },
    "pranet_mobilenetv2_imagenet": {
        "description": "PraNet on MobileNetV2 with the keras.applications ImageNet weights (downloaded once into "
        "~/.keras/models); the decoder is untrained: a start for training",
        "config": {"backbone": "mobilenetv2", "backbone_weights": "imagenet"},
    },
    "pranet_res2net50_original": {
        "description": "The original PraNet-19 (Res2Net-50, trained on Kvasir-SEG + CVC-ClinicDB by Fan et al.), "
        "imported from the authors' PyTorch checkpoint",
        "instructions": CONVERT_ORIGINAL,
    },
}


@keras.saving.register_keras_serializable(package="tfseg")
class PraNet(Preset, InferenceSpec, DeepSupervision, keras.Model):
    """PraNet on a feature-pyramid backbone.

    Input: normalised RGB `(B, H, W, 3)` (`tfseg.preprocessing.normalize` with `model.normalization`), H and W
    divisible by 32.
    Output: four logit maps at the input size, `[global, ra4, ra3, ra2]` (the original's lateral_map_5, 4, 3,
    2); `ra2` (index -1) is the prediction.
    """

    def __init__(self, backbone="resnet50", backbone_weights="imagenet", channels=32, input_size=352, **kwargs):
        check_input_size(input_size, self.size_multiple, "PraNet")
        # === Layers ===
        features = build_backbone(backbone, backbone_weights)
        rfbs = [RFB(channels, name=f"rfb{i}_1") for i in (2, 3, 4)]
        decoder = PartialDecoder(channels, name="agg1")
        ra4 = ReverseAttention(256, 5, 3, 1, name="ra4")
        ra3 = ReverseAttention(64, 3, 2, 3, name="ra3")
        ra2 = ReverseAttention(64, 3, 2, 3, name="ra2")

        # === Functional model ===
        inputs = keras.Input((None, None, 3), name="image")
        pyramid = features(inputs)
        p3, p4, p5 = pyramid["P3"], pyramid["P4"], pyramid["P5"]  # strides 8, 16, 32
        x2, x3, x4 = (rfb(p) for rfb, p in zip(rfbs, (p3, p4, p5)))
        global_map = decoder(x4, x3, x2)  # stride 8
        map4 = ra4(p5, global_map)  # stride 32
        map3 = ra3(p4, map4)  # stride 16
        map2 = ra2(p3, map3)  # stride 8
        names = ("global", "ra4", "ra3", "ra2")
        outputs = [ResizeLike(name=f"{n}_map")(m, inputs) for n, m in zip(names, (global_map, map4, map3, map2))]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.channels = channels
        self.input_size = size_pair(input_size)

    presets = PRESETS

    # === Inference spec (tfseg.models.spec): the training size, the backbone's normalisation ===
    output_names = ("global", "ra4", "ra3", "ra2")
    task = "polyp"
    prediction_output = -1  # ra2
    activation = "sigmoid"
    size_multiple = 32  # the decoder multiplies the x2-upsampled stride-32 map with the stride-16 one

    @property
    def normalization(self):
        return BACKBONES[self.backbone_name].normalization

    def get_config(self):
        return {
            "backbone": self.backbone_name,
            "backbone_weights": self.backbone_weights,
            "channels": self.channels,
            "input_size": list(self.input_size),
            "name": self.name,
            "trainable": self.trainable,
            SPEC_KEY: self.inference_spec(),
        }

    @classmethod
    def from_config(cls, config):
        # A saved model carries its own weights: never fetch the backbone's ImageNet weights again.
        config = {**without_spec(config), "backbone_weights": None}
        try:
            check_input_size(config.get("input_size"), cls.size_multiple, "PraNet")
        except ValueError as error:  # saved before sizes were checked, at one its backbone happened to take
            log.warning("%s; this model was trained at that size: it loads, to run at it", error)
            model = cls(**{**config, "input_size": cls.size_multiple})  # its layers do not depend on the size
            model.input_size = size_pair(config["input_size"])
            return model
        return cls(**config)
