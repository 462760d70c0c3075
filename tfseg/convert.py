"""Import of the original PyTorch checkpoints into tfseg models.

- "pranet": the released PraNet-19.pth (a state dict of lib/PraNet_Res2Net.py's PraNet) ->
  `PraNet(backbone="res2net50")`.
- "res2net50": the Res2Net ImageNet weights res2net50_v1b_26w_4s-3cf99910.pth (the same backbone keys without
  the 'resnet.' prefix) -> `build_backbone("res2net50")`, usable as PraNet's `backbone_weights`.
- "hrnet_w48", "hrnet_w18", "hrnet_w18_small": the official HRNet ImageNet classification checkpoints
  hrnetv2_w48_imagenet_pretrained.pth, hrnetv2_w18_imagenet_pretrained.pth, hrnet_w18_small_model_v1.pth (state
  dicts of HighResolutionNet, HRNet-Image-Classification lib/models/cls_hrnet.py; NVIDIA's network/hrnetv2.py,
  which EAR-Net forks, has the same trunk keys) -> `hrnet_trunk("w48" | "w18" | "small")`, usable as EAR-Net's
  `backbone_weights`. The classification head (incre_modules, downsamp_modules, final_layer, classifier) is
  reported as unused, as NVIDIA's loader drops it.

Conv kernels OIHW -> HWIO; BatchNorm weight / bias / running_mean / running_var -> gamma / beta / moving_mean /
moving_variance; num_batches_tracked is consumed and ignored; the ImageNet heads (fc.*, which PraNet never calls,
and HRNet's classification head) are reported as unused. Every other key must fill a Keras weight and every
Keras weight must be filled: any mismatch raises `ConversionError`, unless `allow_partial=True`, which converts
what matches and logs the rest. torch is needed only to read the `.pth` file (`pip install .[torch]`).
"""

import dataclasses
import logging

import numpy as np

from tfseg import files
from tfseg.models import PraNet, build_backbone
from tfseg.models.hrnet import HRNET_CONFIGS, IMAGENET_CHECKPOINTS, hrnet_trunk
from tfseg.models.res2net import STAGES

log = logging.getLogger(__name__)

HRNET_KINDS = {kind: config for config, (kind, _) in IMAGENET_CHECKPOINTS.items()}  # {kind: HRNET_CONFIGS name}
MODELS = ("pranet", "res2net50", *HRNET_KINDS)
HRNET_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")  # the classification head
HEADS = {"pranet": ("resnet.fc.",), "res2net50": ("fc.",), **dict.fromkeys(HRNET_KINDS, HRNET_HEAD)}  # unused
BN_VARIABLES = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
STEM = (("stem_conv1", "conv1.0", "conv1.1"), ("stem_conv2", "conv1.3", "conv1.4"), ("stem_conv3", "conv1.6", "bn1"))


class ConversionError(ValueError):
    """The checkpoint does not match the model (missing, unexpected or misshapen tensors)."""


@dataclasses.dataclass
class ConversionReport:
    converted: list  # checkpoint keys copied into the model (num_batches_tracked included: consumed, ignored)
    unused: list  # keys of modules the original forward pass never calls (fc)
    missing: list  # keys the model needs that the checkpoint lacks
    unexpected: list  # keys nothing maps
    unfilled: list  # paths of Keras weights left at their initial values

    def problems(self):
        """One line per kind of mismatch (empty when the checkpoint fills the model exactly)."""
        listed = lambda items: ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")
        kinds = (
            ("missing checkpoint keys", self.missing),
            ("unexpected checkpoint keys", self.unexpected),
            ("Keras weights not filled", self.unfilled),
        )
        return [f"{what}: {listed(items)}" for what, items in kinds if items]


def load_state_dict(path):
    """A PyTorch state dict (`.pth`) as {key: numpy array}. Needs torch, imported here only."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch: pip install .[torch] (or pip install torch)"
        ) from error
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value.detach().numpy() for key, value in state.items()}


def build_model(name):
    """The tfseg model a checkpoint of kind `name` (see MODELS) converts into, with random weights."""
    if name == "pranet":
        return PraNet("res2net50", backbone_weights=None)
    if name == "res2net50":
        return build_backbone("res2net50", weights=None)
    if name in HRNET_KINDS:
        return hrnet_trunk(HRNET_KINDS[name])
    raise ValueError(f"Unknown model {name!r}; expected one of {MODELS}")


def _hwio(kernel):
    return np.transpose(kernel, (2, 3, 1, 0))  # torch OIHW -> Keras HWIO


def _conv_bn(layer, conv_key, bn_prefix):
    """(checkpoint key, Keras variable or None for an ignored key, transform) of a ConvBN layer."""
    yield conv_key, layer.conv.kernel, _hwio
    for torch_name, keras_name in BN_VARIABLES:
        yield f"{bn_prefix}.{torch_name}", getattr(layer.bn, keras_name), None
    yield f"{bn_prefix}.num_batches_tracked", None, None


def _basic_conv(layer, prefix):
    """The original's BasicConv2d: `prefix.conv` + `prefix.bn`."""
    return _conv_bn(layer, f"{prefix}.conv.weight", f"{prefix}.bn")


def _res2net_targets(backbone, prefix):
    for name, conv, bn in STEM:
        yield from _conv_bn(backbone.get_layer(name), f"{prefix}{conv}.weight", f"{prefix}{bn}")
    for stage, (_, blocks, _) in enumerate(STAGES, 1):
        for index in range(blocks):
            block = backbone.get_layer(f"layer{stage}_block{index}")
            key = f"{prefix}layer{stage}.{index}."
            yield from _conv_bn(block.conv1, f"{key}conv1.weight", f"{key}bn1")
            for i, conv in enumerate(block.split_convs):
                yield from _conv_bn(conv, f"{key}convs.{i}.weight", f"{key}bns.{i}")
            yield from _conv_bn(block.conv3, f"{key}conv3.weight", f"{key}bn3")
            if block.shortcut:
                yield from _conv_bn(block.shortcut, f"{key}downsample.1.weight", f"{key}downsample.2")


def _pranet_targets(model):
    yield from _res2net_targets(model.get_layer("res2net50_backbone"), "resnet.")
    for name in ("rfb2_1", "rfb3_1", "rfb4_1"):
        rfb = model.get_layer(name)
        for index, convs in enumerate(rfb.branches):
            for step, conv in enumerate(convs):
                yield from _basic_conv(conv, f"{name}.branch{index}.{step}")
        yield from _basic_conv(rfb.conv_cat, f"{name}.conv_cat")
        yield from _basic_conv(rfb.conv_res, f"{name}.conv_res")
    decoder = model.get_layer("agg1")
    for name in (
        "conv_upsample1",
        "conv_upsample2",
        "conv_upsample3",
        "conv_upsample4",
        "conv_upsample5",
        "conv_concat2",
        "conv_concat3",
        "conv4",
    ):
        yield from _basic_conv(getattr(decoder, name), f"agg1.{name}")
    yield "agg1.conv5.weight", decoder.conv5.kernel, _hwio
    yield "agg1.conv5.bias", decoder.conv5.bias, None
    for name in ("ra4", "ra3", "ra2"):
        for index, conv in enumerate(model.get_layer(name).convs, 1):
            yield from _basic_conv(conv, f"{name}_conv{index}")


def _hrnet_block(trunk, name, key, bottleneck, names):
    """BasicBlock (conv1-2) or Bottleneck (conv1-3), with the 1x1 downsample when it has one (in `names`)."""
    for index in (1, 2, 3) if bottleneck else (1, 2):
        yield from _conv_bn(trunk.get_layer(f"{name}_conv{index}"), f"{key}conv{index}.weight", f"{key}bn{index}")
    if f"{name}_downsample" in names:
        yield from _conv_bn(trunk.get_layer(f"{name}_downsample"), f"{key}downsample.0.weight", f"{key}downsample.1")


def _hrnet_targets(trunk, config):
    """HighResolutionNet's keys, as cls_hrnet.py / hrnetv2.py nest their modules (Sequentials of conv, BN[, ReLU]):
    conv1/bn1, conv2/bn2 (stem); layer1.{b} (bottlenecks); transition{t}.{i}.0/.1 (a branch changing width) or
    .{i}.0.0/.0.1 (the new branch); stage{s}.{m}.branches.{i}.{b}; stage{s}.{m}.fuse_layers.{i}.{j}.0/.1 (j > i)
    and .{i}.{j}.{k}.0/.1 (j < i, the k-th stride-2 conv)."""
    layer, names = trunk.get_layer, {layer.name for layer in trunk.layers}
    yield from _conv_bn(layer("stem_conv1"), "conv1.weight", "bn1")
    yield from _conv_bn(layer("stem_conv2"), "conv2.weight", "bn2")
    for b in range(config.stage1_blocks):
        yield from _hrnet_block(trunk, f"stage1_block{b + 1}", f"layer1.{b}.", True, names)
    widths = [config.stage1_channels * 4]
    for s, (modules, blocks, channels) in enumerate(config.stages, start=2):
        t = f"transition{s - 1}"
        for i, width in enumerate(channels):
            if i >= len(widths):  # the new branch
                yield from _conv_bn(layer(f"{t}_{i}"), f"{t}.{i}.0.0.weight", f"{t}.{i}.0.1")
            elif widths[i] != width:
                yield from _conv_bn(layer(f"{t}_{i}"), f"{t}.{i}.0.weight", f"{t}.{i}.1")
        widths = list(channels)
        for m in range(modules):
            key, name = f"stage{s}.{m}.", f"stage{s}_module{m + 1}"
            for i in range(len(channels)):
                for b in range(blocks):
                    block = f"{name}_branch{i}_block{b + 1}"
                    yield from _hrnet_block(trunk, block, f"{key}branches.{i}.{b}.", False, names)
            for i in range(len(channels)):
                for j in range(len(channels)):
                    fuse = f"{key}fuse_layers.{i}.{j}."
                    if j > i:
                        yield from _conv_bn(layer(f"{name}_fuse_{i}_{j}"), f"{fuse}0.weight", f"{fuse}1")
                    for k in range(i - j):
                        yield from _conv_bn(
                            layer(f"{name}_fuse_{i}_{j}_down{k}"), f"{fuse}{k}.0.weight", f"{fuse}{k}.1"
                        )


def _hrnet_hint(state_dict, name):
    """For an HRNet kind: which kind the checkpoint is, by its first transition conv (out, in) (else nothing)."""
    if name not in HRNET_KINDS or "transition1.0.0.weight" not in state_dict:
        return ""
    shape = tuple(state_dict["transition1.0.0.weight"].shape[:2])
    for kind, config in HRNET_KINDS.items():
        c = HRNET_CONFIGS[config]
        if shape == (c.stages[0][2][0], c.stage1_channels * 4) and kind != name:
            return f" (it looks like a {kind} checkpoint: --model {kind})"
    return ""


def convert_state_dict(state_dict, model, name, allow_partial=False):
    """Fills `model` (from `build_model(name)`) with `state_dict` ({key: array}) in place; returns the report.

    Raises ConversionError on a shape mismatch, and on missing / unexpected keys or unfilled weights unless
    `allow_partial`."""
    if name == "pranet":
        targets = _pranet_targets(model)
    elif name == "res2net50":
        targets = _res2net_targets(model, "")
    elif name in HRNET_KINDS:
        targets = _hrnet_targets(model, HRNET_CONFIGS[HRNET_KINDS[name]])
    else:
        raise ValueError(f"Unknown model {name!r}; expected one of {MODELS}")
    head = HEADS[name]
    converted, missing, filled = [], [], set()
    for key, variable, transform in targets:
        if key not in state_dict:
            if variable is not None:  # num_batches_tracked is optional (checkpoints of torch < 0.4.1 lack it)
                missing.append(key)
            continue
        converted.append(key)
        if variable is None:
            continue
        value = np.asarray(state_dict[key])
        value = transform(value) if transform else value
        if tuple(value.shape) != tuple(variable.shape):
            raise ConversionError(
                f"{key}: shape {tuple(state_dict[key].shape)} (torch order) does not fit "
                f"{variable.path} {tuple(variable.shape)}{_hrnet_hint(state_dict, name)}"
            )
        variable.assign(value.astype(variable.dtype))
        filled.add(id(variable))
    done = set(converted)
    unused = [key for key in state_dict if key.startswith(head)]
    report = ConversionReport(
        converted=converted,
        unused=unused,
        missing=missing,
        unexpected=[key for key in state_dict if key not in done and not key.startswith(head)],
        unfilled=[variable.path for variable in model.weights if id(variable) not in filled],
    )
    problems = report.problems()
    if problems and not allow_partial:
        raise ConversionError(
            f"The checkpoint does not match the {name} model (is it a {name} checkpoint?); " + "; ".join(problems)
        )
    for problem in problems:
        log.warning("Partial conversion, %s", problem)
    if unused:
        log.info("Unused by the original forward pass: %s", ", ".join(unused))
    return report


def convert_checkpoint(source, destination, name="pranet", allow_partial=False):
    """Converts the PyTorch checkpoint `source` (kind `name`, see MODELS) and saves the tfseg model as
    `destination`: weights only (`.weights.h5`) or the whole model (`.keras`). Returns the report."""
    if not destination.endswith((".weights.h5", ".keras")):
        raise ValueError(f"Destination must end with .weights.h5 or .keras: {destination}")
    files.refuse_overwrite([destination], [source])
    state_dict = load_state_dict(source)
    model = build_model(name)
    report = convert_state_dict(state_dict, model, name, allow_partial)
    with files.atomic_path(destination) as temporary:
        (model.save if destination.endswith(".keras") else model.save_weights)(temporary)
    log.info("Converted %d tensors of %s into %s", len(report.converted), source, destination)
    return report
