"""HRNetV2 + OCR + hierarchical multi-scale attention, as in NVIDIA's semantic-segmentation code that EAR-Net
(Wang et al., DICTA 2021) forks: `network/hrnetv2.py`, `network/ocr_utils.py`, `network/ocrnet.py` (MscaleOCR).

Shapes (input H x W): stem -> ceil(H/4); branch k of the trunk -> ceil(H/2^(k+2)); every lower branch is resized
to its target's exact shape, so odd sizes (DRIVE's 584x565) work. All convs are conv-BN(-ReLU), BN eps 1e-5.
"""

import dataclasses
import os

import keras
from keras import ops

from tfseg.models.blocks import ConvBN, ResizeLike, build_chain, resize_bilinear
from tfseg.models.preset import Preset
from tfseg.models.spec import SPEC_KEY, InferenceSpec, without_spec
from tfseg.models.supervision import DeepSupervision


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
    """Trunk (stem, stage-1 bottlenecks, stages 2-4 as (modules, blocks per branch, branch channels)) and the
    widths of the OCR head (MID, KEY) and of the attention heads."""

    stage1_blocks: int
    stage1_channels: int
    stages: tuple
    mid_channels: int
    key_channels: int
    attention_channels: int
    stem_channels: int = 64


HRNET_CONFIGS = {
    # HRNet-W18-small-v1: one module per stage, 2 blocks per branch; small OCR/attention widths for CPUs
    "small": HRNetConfig(1, 32, ((1, 2, (16, 32)), (1, 2, (16, 32, 64)), (1, 2, (16, 32, 64, 128))), 64, 32, 32),
    "w18": HRNetConfig(4, 64, ((1, 4, (18, 36)), (4, 4, (18, 36, 72)), (3, 4, (18, 36, 72, 144))), 512, 256, 256),
    # the paper's trunk, with OCR MID 512 / KEY 256 and 256-channel attention heads as the official code
    "w48": HRNetConfig(4, 64, ((1, 4, (48, 96)), (4, 4, (48, 96, 192)), (3, 4, (48, 96, 192, 384))), 512, 256, 256),
}
# the official ImageNet checkpoint of each trunk (HRNet-Image-Classification, HRNet-Semantic-Segmentation) and the
# convert_weights.py --model kind that converts it into `hrnet_trunk(config)` weights
IMAGENET_CHECKPOINTS = {
    "small": ("hrnet_w18_small", "hrnet_w18_small_model_v1.pth"),
    "w18": ("hrnet_w18", "hrnetv2_w18_imagenet_pretrained.pth"),
    "w48": ("hrnet_w48", "hrnetv2_w48_imagenet_pretrained.pth"),
}


def residual_block(x, filters, bottleneck, name, norm="batch"):
    """BasicBlock (3x3, 3x3) or Bottleneck (1x1, 3x3, 1x1 to 4x filters); a 1x1 conv-BN shortcut when the
    channels change; ReLU after the sum."""
    out_channels = filters * 4 if bottleneck else filters
    if bottleneck:
        y = ConvBN(filters, 1, activation="relu", norm=norm, name=f"{name}_conv1")(x)
        y = ConvBN(filters, 3, activation="relu", norm=norm, name=f"{name}_conv2")(y)
        y = ConvBN(out_channels, 1, norm=norm, name=f"{name}_conv3")(y)
    else:
        y = ConvBN(filters, 3, activation="relu", norm=norm, name=f"{name}_conv1")(x)
        y = ConvBN(filters, 3, norm=norm, name=f"{name}_conv2")(y)
    shortcut = x if x.shape[-1] == out_channels else ConvBN(out_channels, 1, norm=norm, name=f"{name}_downsample")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def fuse(branches, channels, name, norm="batch"):
    """HighResolutionModule fuse layers: target i sums every branch j brought to it (j > i: 1x1 conv-BN, then
    bilinear resize; j < i: i - j stride-2 3x3 convs, ReLU between them), then ReLU."""
    fused = []
    for i, target in enumerate(branches):
        terms = []
        for j, source in enumerate(branches):
            if j > i:
                lateral = ConvBN(channels[i], 1, norm=norm, name=f"{name}_{i}_{j}")(source)
                source = ResizeLike(name=f"{name}_up{i}_{j}")(lateral, target)
            for k in range(i - j):
                last = k == i - j - 1
                source = ConvBN(
                    channels[i] if last else channels[j],
                    3,
                    strides=2,
                    activation=None if last else "relu",
                    norm=norm,
                    name=f"{name}_{i}_{j}_down{k}",
                )(source)
            terms.append(source)
        fused.append(keras.layers.ReLU(name=f"{name}_relu{i}")(keras.layers.Add(name=f"{name}_add{i}")(terms)))
    return fused


def transition(branches, channels, name, norm="batch"):
    """Existing branches change width by a 3x3 conv-BN-ReLU (when needed); the new one comes from the lowest
    branch by a stride-2 3x3 conv-BN-ReLU."""
    out = [
        x if x.shape[-1] == c else ConvBN(c, 3, activation="relu", norm=norm, name=f"{name}_{i}")(x)
        for i, (x, c) in enumerate(zip(branches, channels))
    ]
    new = ConvBN(channels[-1], 3, strides=2, activation="relu", norm=norm, name=f"{name}_{len(branches)}")
    return out + [new(branches[-1])]


TRUNK_LEVELS = ("P2", "P3", "P4", "P5")  # the four branches of stage 4, strides 4, 8, 16, 32


def hrnet_branches(images, config, norm="batch"):
    """The HRNetV2 trunk (HighResolutionNet up to stage 4): its four branches, high to low resolution."""
    x = ConvBN(config.stem_channels, 3, strides=2, activation="relu", norm=norm, name="stem_conv1")(images)  # H/2
    x = ConvBN(config.stem_channels, 3, strides=2, activation="relu", norm=norm, name="stem_conv2")(x)  # H/4
    for b in range(config.stage1_blocks):
        x = residual_block(x, config.stage1_channels, bottleneck=True, name=f"stage1_block{b + 1}", norm=norm)
    branches = [x]
    for s, (modules, blocks, channels) in enumerate(config.stages, start=2):
        branches = transition(branches, channels, name=f"transition{s - 1}", norm=norm)
        for m in range(modules):
            branches = [
                residual_block_stack(x, c, blocks, f"stage{s}_module{m + 1}_branch{i}", norm)
                for i, (x, c) in enumerate(zip(branches, channels))
            ]
            branches = fuse(branches, channels, name=f"stage{s}_module{m + 1}_fuse", norm=norm)
    return branches  # H/4, H/8, H/16, H/32 (each rounded up)


def hrnet_features(images, config, norm="batch"):
    """The HRNetV2 head input: all four branches resized to the stride-4 branch and concatenated."""
    branches = hrnet_branches(images, config, norm)
    upsampled = [branches[0]] + [ResizeLike(name=f"head_up{i}")(b, branches[0]) for i, b in enumerate(branches[1:], 1)]
    return keras.layers.Concatenate(name="head_concat")(upsampled)


def hrnet_trunk(config="small", norm="batch"):
    """The trunk alone as a functional model, images -> {"P2": stride 4, ..., "P5": stride 32} (`TRUNK_LEVELS`),
    its layers named as in HRNetOCR: what `convert_weights.py --model hrnet_*` saves (`.weights.h5`) and
    `HRNetOCR.load_trunk_weights` loads."""
    images = keras.Input((None, None, 3), name="images")
    branches = hrnet_branches(images, HRNET_CONFIGS[config], norm)
    return keras.Model(images, dict(zip(TRUNK_LEVELS, branches)), name=f"hrnet_{config}_trunk")


def trunk_config_of(path):
    """The HRNET_CONFIGS name of the trunk a weights file holds, recognised by the kernel of its first transition
    conv (stage-1 width -> stage-2 branch-0 width: 128 -> 16, 256 -> 18, 256 -> 48); None when no config's is in
    it (another model's weights); ValueError for a file h5py cannot read. Keras names a file's groups by layer
    class, not layer name, so this looks at the shapes."""
    import h5py  # a Keras dependency

    shapes = set()
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, item: shapes.add(item.shape) if isinstance(item, h5py.Dataset) else None)
    except OSError as error:  # not HDF5, truncated
        raise ValueError(f"{path} cannot be read as a Keras weights file ({error})") from None
    for name, c in HRNET_CONFIGS.items():
        if (3, 3, c.stage1_channels * 4, c.stages[0][2][0]) in shapes:
            return name
    return None


def check_trunk_weights(path, config, norm="batch"):
    """Raises ValueError, in one line, unless `path` holds the weights of `hrnet_trunk(config, norm)`."""
    kind, checkpoint = IMAGENET_CHECKPOINTS[config]
    wanted = f"convert_weights.py {checkpoint} OUT.weights.h5 --model {kind}"
    if not os.path.isfile(path):
        raise ValueError(f"No such HRNet trunk weights file: {path} (written by {wanted})")
    found = trunk_config_of(path)
    if found is None:
        raise ValueError(
            f"{path} holds no HRNet trunk weights (written by {wanted}; a whole model's weights go to --init_weights)"
        )
    if found != config:
        raise ValueError(
            f"{path} holds an HRNet {found} trunk, the model's trunk is {config}: give --config {found}, or a "
            f"{config} trunk ({wanted})"
        )
    if norm != "batch":
        raise ValueError(f"HRNet trunk weights hold BatchNorm statistics: they need norm 'batch', not {norm!r}")


def residual_block_stack(x, channels, blocks, name, norm="batch"):
    for b in range(blocks):
        x = residual_block(x, channels, bottleneck=False, name=f"{name}_block{b + 1}", norm=norm)
    return x


@keras.saving.register_keras_serializable(package="tfseg")
class SpatialGather(keras.layers.Layer):
    """Object regions: a spatial softmax of each class's aux logits weighs the pixel features,
    (B, h, w, C), (B, h, w, K) -> (B, K, C)."""

    def call(self, features, logits):
        batch, channels, classes = ops.shape(features)[0], ops.shape(features)[-1], ops.shape(logits)[-1]
        probs = ops.softmax(ops.reshape(logits, (batch, -1, classes)), axis=1)  # over the h*w positions
        return ops.einsum("bpk,bpc->bkc", probs, ops.reshape(features, (batch, -1, channels)))

    def compute_output_shape(self, features_shape, logits_shape):
        return (features_shape[0], logits_shape[-1], features_shape[-1])


@keras.saving.register_keras_serializable(package="tfseg")
class ObjectAttention(keras.layers.Layer):
    """Pixel-object attention (ObjectAttentionBlock): queries from pixels, keys and values from the object
    regions, softmax(q k^T / sqrt(KEY)) v, back to MID channels by f_up; 1x1 conv-ReLU transforms.

    The original puts BatchNorm in all of them. Those of the K region vectors (f_object, f_down) and of the
    context (f_up, whose input at every pixel mixes the K value vectors) then see only batch x K distinct
    vectors: with K = 2 classes and a small batch their statistics are degenerate and inference mode disagrees
    with training (validation AUC below 0.5 in inference mode, 0.70 with batch statistics, early in a STARE
    run). `region_batchnorm=True` restores the original; by default these three use a bias instead of BN, the
    pixel queries keep theirs (BN or, with `norm="group"`, GroupNorm)."""

    def __init__(self, key_channels, out_channels, region_batchnorm=False, norm="batch", **kwargs):
        super().__init__(**kwargs)
        self.key_channels, self.out_channels = key_channels, out_channels
        self.region_batchnorm, self.norm = region_batchnorm, norm
        unit = lambda c, n: ConvBN(c, 1, activation="relu", norm=norm, name=n)
        region_unit = unit if region_batchnorm else (lambda c, n: keras.layers.Conv2D(c, 1, activation="relu", name=n))
        self.query = [unit(key_channels, "f_pixel1"), unit(key_channels, "f_pixel2")]
        self.key = [region_unit(key_channels, "f_object1"), region_unit(key_channels, "f_object2")]
        self.value = region_unit(key_channels, "f_down")
        self.up = region_unit(out_channels, "f_up")  # its input mixes the K value vectors only

    def call(self, features, regions, training=None):
        shape = ops.shape(features)
        regions = ops.expand_dims(regions, 1)  # (B, 1, K, C): the regions as a 1 x K "image"
        q, k = features, regions
        for layer in self.query:
            q = layer(q, training=training)
        for layer in self.key:
            k = layer(k, training=training)
        v = self.value(regions, training=training)
        q = ops.reshape(q, (shape[0], -1, self.key_channels))
        attention = ops.softmax(ops.einsum("bpc,bkc->bpk", q, k[:, 0]) * self.key_channels**-0.5, axis=-1)
        context = ops.reshape(
            ops.einsum("bpk,bkc->bpc", attention, v[:, 0]), (shape[0], shape[1], shape[2], self.key_channels)
        )
        return self.up(context, training=training)

    def build(self, features_shape, regions_shape):
        regions_shape = (regions_shape[0], 1, *regions_shape[1:])
        build_chain(self.query, features_shape)
        build_chain(self.key, regions_shape)
        self.value.build(regions_shape)
        self.up.build((*features_shape[:3], self.key_channels))

    def compute_output_shape(self, features_shape, regions_shape):
        return (*features_shape[:3], self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "key_channels": self.key_channels,
            "out_channels": self.out_channels,
            "region_batchnorm": self.region_batchnorm,
            "norm": self.norm,
        }


def ocr_head(features, num_classes, mid, key, region_batchnorm=False, norm="batch"):
    """OCR (Yuan et al., ECCV 2020) as `OCR_block`: returns (class logits, aux soft-region logits, OCR features),
    all at the features' stride 4. Without `region_batchnorm` the layers fed by the object regions (see
    ObjectAttention) and the final 1x1 fuse of [context, features] use a bias instead of BatchNorm: with BN
    in that fuse the class probabilities came out far too small in inference mode (validation F1 0 at
    threshold 0.5 where batch statistics gave 0.54)."""
    feats = ConvBN(mid, 3, activation="relu", norm=norm, name="ocr_conv3x3")(features)
    aux = ConvBN(features.shape[-1], 1, activation="relu", norm=norm, name="aux_head_conv")(features)
    aux = keras.layers.Conv2D(num_classes, 1, name="aux_head_cls")(aux)
    regions = SpatialGather(name="ocr_gather")(feats, aux)
    context = ObjectAttention(key, mid, region_batchnorm, norm, name="ocr_object_attention")(feats, regions)
    fuse = (
        ConvBN(mid, 1, activation="relu", norm=norm, name="ocr_distri_fuse")
        if region_batchnorm
        else keras.layers.Conv2D(mid, 1, activation="relu", name="ocr_distri_fuse")
    )  # half its input is the context
    ocr = fuse(keras.layers.Concatenate(name="ocr_distri_concat")([context, feats]))
    ocr = keras.layers.Dropout(0.05, name="ocr_distri_dropout")(ocr)
    return keras.layers.Conv2D(num_classes, 1, name="cls_head")(ocr), aux, ocr


def attention_head(features, channels, name, norm="batch"):
    """An attention head on the OCR features (scale attention; EAR-Net adds its error attention): 3x3
    conv-BN-ReLU x2, 1x1 -> 1, sigmoid."""
    x = ConvBN(channels, 3, activation="relu", norm=norm, name=f"{name}_conv1")(features)
    x = ConvBN(channels, 3, activation="relu", norm=norm, name=f"{name}_conv2")(x)
    return keras.layers.Conv2D(1, 1, use_bias=False, activation="sigmoid", name=f"{name}_out")(x)


def single_scale_network(config, num_classes, attention_heads, region_batchnorm=False, norm="batch"):
    """The network at one scale: {"cls", "aux", and an output per attention head} at the input size.
    `attention_heads`: {output name: layer name prefix}."""
    images = keras.Input((None, None, 3), name="images")
    features = hrnet_features(images, config, norm)
    cls, aux, ocr = ocr_head(features, num_classes, config.mid_channels, config.key_channels, region_batchnorm, norm)
    outputs = {
        "cls": cls,
        "aux": aux,
        **{
            output: attention_head(ocr, config.attention_channels, prefix, norm)
            for output, prefix in attention_heads.items()
        },
    }
    outputs = {k: ResizeLike(name=f"{k}_up")(v, images) for k, v in outputs.items()}
    return keras.Model(images, outputs, name="single_scale")


def rescale(x, scale):
    """NVIDIA's ResizeX: bilinear (align_corners=False) to floor(size * scale)."""
    if scale == 1.0:
        return x
    shape = ops.shape(x)
    size = [ops.cast(ops.floor(ops.cast(shape[i], "float32") * scale), "int32") for i in (1, 2)]
    return resize_bilinear(x, size)


def scale_as(x, reference):
    shape = ops.shape(reference)
    return resize_bilinear(x, (shape[1], shape[2]))


@keras.saving.register_keras_serializable(package="tfseg")
class HRNetOCR(Preset, InferenceSpec, DeepSupervision, keras.Model):
    """HRNetV2-OCR with hierarchical multi-scale attention (Tao et al., 2020): EAR-Net's stage-1 network.

    Outputs, in training and inference alike: {"pred", "aux", "pred_05", "pred_10"}, logits with `num_classes`
    channels at the input size. Training (`training=True`) fuses two scales, `J = up(a_0.5 * p_0.5) + (1 -
    up(a_0.5)) * p_1.0` ("pred"; likewise the aux logits, "aux"). Inference fuses `scales` from high to low
    (running the 1x and 0.5x passes in any case):
    `P = p_s1`, then `P = a_s * p_s + (1 - a_s) * down(P)` for s >= 1 and `P = up(a_s * p_s) + (1 - up(a_s)) * P`
    for s < 1. "pred_05" and "pred_10" are the single-scale logits of the 0.5x and 1x passes (the deep supervision
    of training).

    `norm`: "batch" (BatchNorm everywhere, as the original, trained there with batches of 8-16 large crops) or
    "group" (GroupNorm, see ConvBN): with batches of 2 (the CPU recipe) BatchNorm's inference statistics, shared
    by the 0.5x and 1x passes, disagree with training and its class probabilities come out too small (on STARE
    after 300 steps: validation F1 at threshold 0.5 of 0.33 against 0.46 at the best threshold); GroupNorm has
    no such gap and learns faster (docs/BENCHMARKS.md).

    Extensions (EARNet) add attention heads on the OCR features (`extra_heads`: their outputs are the 1x pass's,
    also returned) and `modulate` logits: in training the fused ones by the 1x pass, at inference every pass's
    before fusion.
    """

    # Inference spec (tfseg.models.spec): any size, ImageNet mean/std as NVIDIA's code, softmax logits whose
    # channel 1 is the foreground
    output_names = ("pred", "aux", "pred_05", "pred_10")
    task = "vessel"
    prediction_output = "pred"
    activation = "softmax"
    normalization = "torch"
    extra_heads = {}  # {output name: layer name prefix} of attention heads besides the scale attention

    def __init__(
        self, config="small", num_classes=2, scales=(2.0, 1.0, 0.5), region_batchnorm=False, norm="batch", **kwargs
    ):
        super().__init__(**kwargs)
        self.config_name, self.num_classes = config, num_classes
        self.scales = tuple(sorted(scales, reverse=True))
        self.region_batchnorm, self.norm = region_batchnorm, norm
        heads = {"scale_attention": "scale_attn", **self.extra_heads}
        self.net = single_scale_network(HRNET_CONFIGS[config], num_classes, heads, region_batchnorm, norm)

    def load_trunk_weights(self, path):
        """Fills the trunk's layers with `path`, the weights of an `hrnet_trunk` of this config (e.g. the ImageNet
        weights converted by `convert_weights.py --model hrnet_w48`); the OCR and attention heads keep theirs.
        Raises ValueError (`check_trunk_weights`) for another width's trunk or another model's weights."""
        check_trunk_weights(path, self.config_name, self.norm)
        self.trunk().load_weights(path)

    def trunk(self):
        """The trunk of the single-scale network as a model of its own layers, images -> {"P2", ..., "P5"}: the
        graph of `hrnet_trunk`, so its weights files load into it."""
        stages = HRNET_CONFIGS[self.config_name].stages
        last = f"stage{len(stages) + 1}_module{stages[-1][0]}_fuse_relu"  # the last fuse's ReLU of each branch
        outputs = {level: self.net.get_layer(f"{last}{i}").output for i, level in enumerate(TRUNK_LEVELS)}
        return keras.Model(self.net.input, outputs, name=f"hrnet_{self.config_name}_trunk")

    def modulate(self, logits, outputs):
        """The logits of one pass, before fusion (EARNet modulates them)."""
        return logits

    def call(self, images, training=False):
        scales = (1.0, 0.5) if training else sorted({*self.scales, 1.0, 0.5}, reverse=True)  # 1x, 0.5x: always
        passes = {scale: self.net(rescale(images, scale), training=training) for scale in scales}
        high = passes[1.0]
        if training:  # the fused logits, modulated by the 1x pass (EARNet)
            fused = {key: self.modulate(self.fuse(passes, (1.0, 0.5), key), high) for key in ("cls", "aux")}
        else:  # every scale's logits modulated, then fused
            fused = {key: self.fuse(passes, self.scales, key, modulated=True) for key in ("cls", "aux")}
        outputs = {
            "pred": scale_as(fused["cls"], images),
            "aux": scale_as(fused["aux"], images),
            "pred_05": scale_as(passes[0.5]["cls"], images),
            "pred_10": scale_as(high["cls"], images),
        }
        return {**outputs, **{name: scale_as(high[name], images) for name in self.extra_heads}}

    def fuse(self, passes, scales, key, modulated=False):
        """Hierarchical fusion of the `key` logits of `passes` ({scale: net outputs}) over `scales` (high to
        low; see the class), each pass's logits `modulated` first if asked."""
        fused = None
        for scale in scales:
            logits, attention = passes[scale][key], passes[scale]["scale_attention"]
            logits = self.modulate(logits, passes[scale]) if modulated else logits
            if fused is None:
                fused = logits
            elif scale >= 1.0:
                fused = attention * logits + (1 - attention) * scale_as(fused, logits)
            else:
                fused = scale_as(attention * logits, fused) + (1 - scale_as(attention, fused)) * fused
        return fused

    def get_config(self):
        return {
            **super().get_config(),
            "config": self.config_name,
            "num_classes": self.num_classes,
            "scales": list(self.scales),
            "region_batchnorm": self.region_batchnorm,
            "norm": self.norm,
            SPEC_KEY: self.inference_spec(),
        }

    @classmethod
    def from_config(cls, config):
        config = without_spec(config)
        config.pop("error_attention", None)  # a setting of HRNetOCR before EARNet had its own class
        return cls(**config)
