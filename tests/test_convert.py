"""Res2Net-50 and the import of the original PyTorch checkpoints (tfseg.convert), against numpy and against an
independent PyTorch reference of the original PraNet (tests/torch_pranet.py; those tests need torch)."""

import os

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from convert_weights import main as convert_main
from tests.helpers import ROOT, max_abs_diff
from tfseg.convert import ConversionError, build_model, convert_checkpoint, convert_state_dict, load_state_dict
from tfseg.inference import Predictor
from tfseg.models import PraNet, normalize
from tfseg.models.res2net import Bottle2neck, avg_pool_ceil, avg_pool_counting_padding

TSV = os.path.join(ROOT, "..", "shared", "reference", "pranet_res2net_state_dict.tsv")
needs_tsv = pytest.mark.skipif(not os.path.isfile(TSV), reason="../shared/reference is absent")
PARITY_SIZES = [(352, 352), (288, 320)]
MAX_DIFF, MEAN_DIFF = 5e-3, 5e-4


def tsv_rows():
    """(key, shape, dtype) of every state-dict entry of the original PraNet, in state-dict order."""
    with open(TSV) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    return [(key, tuple(int(n) for n in shape.split(",") if n), dtype) for key, shape, dtype, _ in rows]


def synthetic_state_dict(seed=0):
    """Random values in the original layout; running variances positive and weights small, so a model holding
    them computes finite outputs (later tests evaluate it whether or not torch reloads it first)."""
    rng = np.random.default_rng(seed)
    draw = {"running_var": lambda shape: rng.uniform(0.5, 1.5, shape)}
    return {
        key: (
            draw.get(key.rsplit(".", 1)[-1], lambda shape: rng.normal(scale=0.05, size=shape))(shape).astype(dtype)
            if dtype == "float32"
            else np.array(7, dtype)
        )
        for key, shape, dtype in tsv_rows()
    }


def torch_input(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def value(tensor):
    """A Keras variable or output as numpy, on any backend."""
    return keras.ops.convert_to_numpy(tensor)


def nhwc(torch_tensor):
    return torch_tensor.detach().numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def keras_pranet():
    """One PraNet-Res2Net that every test converts its checkpoint into (conversion overwrites every weight)."""
    return build_model("pranet")


@pytest.fixture(scope="module")
def torch_pranet(tmp_path_factory):
    """(reference model, path of its saved state dict)."""
    torch = pytest.importorskip("torch")
    from tests import torch_pranet

    torch.set_num_threads(2)
    model = torch_pranet.randomize(torch_pranet.PraNet(), seed=0).eval()
    path = str(tmp_path_factory.mktemp("torch") / "pranet.pth")
    torch.save(model.state_dict(), path)
    return model, path


# === key mapping and accounting (numpy only) ===


@needs_tsv
def test_synthetic_checkpoint_lands_in_the_right_weights(keras_pranet):
    state = synthetic_state_dict()
    report = convert_state_dict(state, keras_pranet, "pranet")
    assert report.unused == ["resnet.fc.weight", "resnet.fc.bias"]
    assert report.missing == report.unexpected == report.unfilled == []
    assert len(report.converted) == len(state) - 2  # everything else, num_batches_tracked included

    backbone = keras_pranet.get_layer("res2net50_backbone")
    stem_kernel = value(backbone.get_layer("stem_conv1").conv.kernel)  # HWIO (3, 3, 3, 32) from OIHW
    assert stem_kernel.shape == (3, 3, 3, 32)
    assert stem_kernel[0, 2, 1, 5] == state["resnet.conv1.0.weight"][5, 1, 0, 2]
    np.testing.assert_array_equal(stem_kernel, state["resnet.conv1.0.weight"].transpose(2, 3, 1, 0))
    block = backbone.get_layer("layer3_block0")
    np.testing.assert_array_equal(
        value(block.split_convs[2].conv.kernel)[1, 0, 7, 3], state["resnet.layer3.0.convs.2.weight"][3, 7, 1, 0]
    )
    np.testing.assert_array_equal(block.split_convs[2].bn.moving_variance, state["resnet.layer3.0.bns.2.running_var"])
    np.testing.assert_array_equal(
        backbone.get_layer("layer2_block0").shortcut.bn.moving_mean, state["resnet.layer2.0.downsample.2.running_mean"]
    )
    np.testing.assert_array_equal(backbone.get_layer("stem_conv3").bn.gamma, state["resnet.bn1.weight"])
    rfb_kernel = value(keras_pranet.get_layer("rfb3_1").branches[2][1].conv.kernel)  # the 1x5 conv
    assert rfb_kernel.shape == (1, 5, 32, 32)
    np.testing.assert_array_equal(rfb_kernel, state["rfb3_1.branch2.1.conv.weight"].transpose(2, 3, 1, 0))
    decoder = keras_pranet.get_layer("agg1")
    np.testing.assert_array_equal(decoder.conv_upsample5.bn.beta, state["agg1.conv_upsample5.bn.bias"])
    np.testing.assert_array_equal(decoder.conv5.bias, state["agg1.conv5.bias"])
    np.testing.assert_array_equal(keras_pranet.get_layer("ra4").convs[-1].bn.gamma, state["ra4_conv5.bn.weight"])


@needs_tsv
def test_missing_extra_and_misshapen_keys_are_errors(keras_pranet):
    state = synthetic_state_dict()
    del state["ra3_conv2.bn.running_var"]
    with pytest.raises(
        ConversionError,
        match=r"missing checkpoint keys: ra3_conv2\.bn\.running_var.*"
        r"Keras weights not filled: ra3/conv2/bn/moving_variance",
    ):
        convert_state_dict(state, keras_pranet, "pranet")
    report = convert_state_dict(state, keras_pranet, "pranet", allow_partial=True)
    assert report.missing == ["ra3_conv2.bn.running_var"] and len(report.unfilled) == 1

    state = {**synthetic_state_dict(), "rfb2_1.extra.weight": np.zeros(3, "float32")}
    with pytest.raises(ConversionError, match=r"unexpected checkpoint keys: rfb2_1\.extra\.weight"):
        convert_state_dict(state, keras_pranet, "pranet")
    assert convert_state_dict(state, keras_pranet, "pranet", True).unexpected == ["rfb2_1.extra.weight"]

    state = {**synthetic_state_dict(), "ra2_conv4.conv.weight": np.zeros((1, 64, 1, 1), "float32")}
    with pytest.raises(ConversionError, match=r"ra2_conv4\.conv\.weight: shape \(1, 64, 1, 1\)"):
        convert_state_dict(state, keras_pranet, "pranet", allow_partial=True)


# === the Res2Net block and its pooling, against numpy and torch ===


def np_conv_bn(x, layer, strides=1, relu=True):
    """Conv (torch padding k // 2, no bias) + inference BatchNorm with torch's epsilon 1e-5, NHWC."""
    kernel = value(layer.conv.kernel)
    pad = kernel.shape[0] // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))[:, ::strides, ::strides]
    y = np.einsum("bhwcij,ijco->bhwo", windows, kernel)
    bn = layer.bn
    y = (y - value(bn.moving_mean)) / np.sqrt(value(bn.moving_variance) + 1e-5) * value(bn.gamma) + value(bn.beta)
    return np.maximum(y, 0) if relu else y


def np_avg_pool3_zeros_counted(x, strides):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::strides, ::strides].mean(axis=(-2, -1))


def np_avg_pool2_ceil(x):
    h, w = -(-x.shape[1] // 2), -(-x.shape[2] // 2)
    return np.stack(
        [
            np.stack([x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2)) for j in range(w)], 1)
            for i in range(h)
        ],
        1,
    )  # slices end at the border: partial windows average valid pixels


def np_bottle2neck(block, x):
    s0, s1, s2, s3 = np.split(np_conv_bn(x, block.conv1), 4, axis=-1)
    c0, c1, c2 = block.split_convs
    if block.stage:
        s = block.strides
        y0, y1, y2 = np_conv_bn(s0, c0, s), np_conv_bn(s1, c1, s), np_conv_bn(s2, c2, s)
        y3 = np_avg_pool3_zeros_counted(s3, s)
        shortcut = np_conv_bn(np_avg_pool2_ceil(x) if s == 2 else x, block.shortcut, relu=False)
    else:
        y0 = np_conv_bn(s0, c0)
        y1 = np_conv_bn(y0 + s1, c1)
        y2 = np_conv_bn(y1 + s2, c2)
        y3, shortcut = s3, x
    return np.maximum(np_conv_bn(np.concatenate([y0, y1, y2, y3], -1), block.conv3, relu=False) + shortcut, 0)


@pytest.mark.parametrize("stage, strides, in_channels", [(False, 1, 64), (True, 2, 24), (True, 1, 8)])
def test_bottle2neck_matches_numpy(stage, strides, in_channels):
    """planes 16: width floor(16 * 26 / 64) = 6, 4 chunks. Odd sizes; running variances close to the epsilon,
    so Keras' default epsilon (1e-3) instead of torch's 1e-5 would show."""
    rng = np.random.default_rng(1)
    block = Bottle2neck(16, strides, stage)
    x = rng.normal(size=(2, 7, 9, in_channels)).astype("float32")
    block(x)
    draw = {
        "gamma": lambda shape: rng.uniform(0.5, 1.5, shape),
        "moving_variance": lambda shape: rng.uniform(1e-5, 1e-3, shape),
    }
    for variable in block.weights:
        kind = variable.path.rsplit("/", 1)[-1]
        random = draw.get(kind, lambda shape: rng.normal(scale=0.3, size=shape))(variable.shape)
        variable.assign(random.astype("float32"))
    expected = np_bottle2neck(block, x.astype("float64"))
    got = value(block(x, training=False))
    assert got.shape == expected.shape == (2, 7 if strides == 1 else 4, 9 if strides == 1 else 5, 64)
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))


def test_res2net_batchnorm_epsilon_is_torch_default(keras_pranet):
    backbone = keras_pranet.get_layer("res2net50_backbone")
    bns = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 3 + 16 * 5 + 4  # stem, 16 blocks (bn1, 3 split bns, bn3), 4 shortcuts: 87 of the 153
    assert {(layer.epsilon, layer.momentum) for layer in bns} == {(1e-5, 0.9)}


@pytest.mark.parametrize("height, width", [(5, 7), (6, 9), (1, 2)])
def test_pooling_matches_torch_on_odd_sizes(height, width):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).normal(size=(2, height, width, 3)).astype("float32")
    t = torch_input(x)
    np.testing.assert_allclose(
        avg_pool_ceil(x, 2), nhwc(torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(t)), atol=1e-6
    )
    for strides in (1, 2):
        np.testing.assert_allclose(
            avg_pool_counting_padding(x, 3, strides), nhwc(torch.nn.AvgPool2d(3, strides, padding=1)(t)), atol=1e-6
        )


# === the whole network against the PyTorch reference ===


@needs_tsv
def test_torch_reference_has_the_original_state_dict(torch_pranet):
    model, _ = torch_pranet
    listed = [
        (key, tuple(value.shape), str(value.dtype).removeprefix("torch.")) for key, value in model.state_dict().items()
    ]
    assert listed == tsv_rows()


@pytest.mark.parametrize("height, width", PARITY_SIZES)
def test_converted_pranet_reproduces_the_original(torch_pranet, keras_pranet, height, width):
    import torch

    model, path = torch_pranet
    report = convert_state_dict(load_state_dict(path), keras_pranet, "pranet")
    assert report.unused == ["resnet.fc.weight", "resnet.fc.bias"]
    x = np.random.default_rng(height).normal(size=(1, height, width, 3)).astype("float32")
    with torch.no_grad():
        expected = [nhwc(o) for o in model(torch_input(x))]
    got = [value(o) for o in keras_pranet(x, training=False)]
    for name, e, g in zip(("global", "ra4", "ra3", "ra2"), expected, got):
        assert g.shape == e.shape == (1, height, width, 1)
        assert np.std(e) > 1.0  # non-trivial maps
        diff = np.abs(g - e)
        assert diff.max() <= MAX_DIFF and diff.mean() <= MEAN_DIFF, (name, diff.max(), diff.mean())


def test_res2net_checkpoint_converts_by_cli_into_the_backbone(tmp_path):
    """The ImageNet checkpoint layout (no 'resnet.' prefix, fc included) -> convert_weights.py -> PraNet's
    backbone_weights (build_backbone), on an odd size where every stride-2 op rounds up."""
    torch = pytest.importorskip("torch")
    from tests import torch_pranet

    reference = torch_pranet.randomize(torch_pranet.Res2Net50(), seed=1).eval()
    source, weights = str(tmp_path / "res2net.pth"), str(tmp_path / "res2net50.weights.h5")
    torch.save(reference.state_dict(), source)
    convert_main([source, weights, "--model", "res2net50"])
    backbone = PraNet("res2net50", backbone_weights=weights).get_layer("res2net50_backbone")
    x = np.random.default_rng(3).normal(size=(1, 50, 70, 3)).astype("float32")
    with torch.no_grad():
        expected = [nhwc(o) for o in reference(torch_input(x))]
    got = backbone(x, training=False)
    for level, e in zip(("P3", "P4", "P5"), expected):
        assert got[level].shape == e.shape  # 7x9, 4x5, 2x3
        assert np.max(np.abs(value(got[level]) - e)) <= 1e-4 * np.max(np.abs(e)), level

    whole = str(tmp_path / "res2net50.keras")  # the whole model: a Keras round trip of the Res2Net layers
    convert_checkpoint(source, whole, "res2net50")
    reloaded = keras.models.load_model(whole)(x, training=False)
    assert max_abs_diff([reloaded[k] for k in sorted(got)], [got[k] for k in sorted(got)]) == 0.0


def test_converted_weights_evaluate_with_a_backbone_name(keras_pranet, tmp_path):
    """The README's path: a converted PraNet .weights.h5 -> test_model.py --model FILE --backbone res2net50."""
    path = str(tmp_path / "pranet_res2net.weights.h5")
    keras_pranet.save_weights(path)
    with pytest.raises(ValueError, match="holds weights only"):
        Predictor.load(path)
    predictor = Predictor.load(path, input_size=64, backbone="res2net50")
    assert predictor.normalization == "torch"
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3)).astype("uint8")
    logits = keras_pranet(normalize(image[None].astype("float32"), "torch"), training=False)[-1]
    assert np.isfinite(logits).all() and np.std(logits) > 0
    assert max_abs_diff(predictor.predict(image), 1 / (1 + np.exp(-np.asarray(logits)[0, ..., 0]))) < 1e-5


def test_imagenet_res2net_says_how_to_convert():
    with pytest.raises(FileNotFoundError, match="convert_weights.py res2net50_v1b_26w_4s-3cf99910.pth"):
        PraNet("res2net50", backbone_weights="imagenet")
