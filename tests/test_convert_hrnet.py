"""Import of the HRNet ImageNet checkpoints (`convert_weights.py --model hrnet_w18_small | hrnet_w18 | hrnet_w48`)
into tfseg's HRNetV2 trunk, against an independent PyTorch trunk with the official keys (tests/torch_hrnet.py), and
EAR-Net's start from the converted file (`backbone_weights`). Need torch."""

import dataclasses

import keras
import numpy as np
import pytest

from convert_weights import main as convert_main
from tfseg import cli
from tfseg.commands import train_earnet
from tfseg.convert import ConversionError, convert_state_dict, load_state_dict
from tfseg.models.hrnet import TRUNK_LEVELS, hrnet_trunk, trunk_config_of
from tfseg.training import earnet
from tfseg.training.strategy import make_strategy

torch = pytest.importorskip("torch")
from tests import torch_hrnet, torch_pranet  # noqa: E402  (after the torch check)

SIZES = [(64, 64), (65, 97)]  # odd: every stride-2 conv rounds up, every upsampling is to a non-2x size
RELATIVE_TOLERANCE = 1e-5  # max |keras - torch| over max |torch| of each branch: float32 rounding (measured ~1e-6)
HEAD_KEYS = sorted(torch_hrnet.head_state_dict())


def reference(config, tmp_path_factory, seed=0):
    """(PyTorch trunk with random weights and BatchNorm statistics, path of its state dict + the ImageNet head)."""
    torch.set_num_threads(2)
    model = torch_pranet.randomize(torch_hrnet.HRNetTrunk(config), seed=seed).eval()
    path = str(tmp_path_factory.mktemp(config) / f"hrnet_{config}.pth")
    torch.save({**model.state_dict(), **torch_hrnet.head_state_dict(seed)}, path)
    return model, path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small reference, converted as a user does (convert_weights.py), loaded into `hrnet_trunk("small")`:
    (torch model, .pth path, converted .weights.h5 path, Keras trunk)."""
    model, path = reference("small", tmp_path_factory)
    weights = str(tmp_path_factory.mktemp("converted") / "hrnet_small.weights.h5")
    convert_main([path, weights, "--model", "hrnet_w18_small"])
    trunk = hrnet_trunk("small")
    trunk.load_weights(weights)
    return model, path, weights, trunk


@pytest.fixture(scope="module")
def w18(tmp_path_factory):
    """The W18 reference converted into one `hrnet_trunk("w18")` (convert_state_dict: one trunk build, not two),
    saved as a trunk weights file: (torch model, .pth path, .weights.h5 path, Keras trunk, report)."""
    model, path = reference("w18", tmp_path_factory, seed=1)
    trunk = hrnet_trunk("w18")
    report = convert_state_dict(load_state_dict(path), trunk, "hrnet_w18")
    weights = str(tmp_path_factory.mktemp("converted") / "hrnet_w18.weights.h5")
    trunk.save_weights(weights)
    return model, path, weights, trunk, report


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def assert_same_branches(torch_model, trunk, height, width):
    x = np.random.default_rng(height * width).normal(size=(1, height, width, 3)).astype("float32")
    with torch.no_grad():
        expected = [branch.numpy().transpose(0, 2, 3, 1) for branch in torch_model(nchw(x))]
    got = trunk(x, training=False)
    assert list(got) == list(TRUNK_LEVELS)
    for stride, level, e in zip((4, 8, 16, 32), TRUNK_LEVELS, expected):
        g = np.asarray(got[level])
        assert g.shape == e.shape and g.shape[1:3] == (-(-height // stride), -(-width // stride)), level
        assert np.std(e) > 0.5, level  # non-trivial maps
        diff = np.max(np.abs(g - e))
        assert diff <= RELATIVE_TOLERANCE * np.max(np.abs(e)), (level, diff, np.max(np.abs(e)))


def test_reference_has_the_official_keys(small, w18):
    keys = set(small[0].state_dict())
    for key in (
        "conv1.weight",
        "bn2.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "transition1.0.0.weight",
        "transition1.0.1.running_mean",
        "transition1.1.0.0.weight",
        "transition3.3.0.1.bias",
        "stage2.0.branches.1.1.conv2.weight",
        "stage2.0.fuse_layers.0.1.0.weight",
        "stage3.0.fuse_layers.2.0.1.0.weight",  # two stride-2 steps: the first with a ReLU
        "stage4.0.fuse_layers.3.0.2.1.running_var",
    ):
        assert key in keys, key
    assert "transition2.0.0.weight" not in keys  # an existing branch keeps its width: no transition
    assert "stage4.2.branches.3.3.bn2.weight" in w18[0].state_dict()  # W18: 3 modules of 4 blocks in stage 4


@pytest.mark.parametrize("height, width", SIZES)
def test_converted_small_trunk_reproduces_torch(small, height, width):
    assert_same_branches(small[0], small[3], height, width)


def test_converted_w18_trunk_reproduces_torch(w18):
    """Several modules per stage and four blocks per branch; the odd size only (each W18 call takes seconds)."""
    model, _, _, trunk, report = w18
    assert sorted(report.unused) == HEAD_KEYS and report.missing == report.unexpected == report.unfilled == []
    assert len(report.converted) == len(model.state_dict())  # num_batches_tracked included
    assert_same_branches(model, trunk, *SIZES[1])


def test_mismatched_checkpoints_are_errors(small, w18, tmp_path):
    _, path, _, trunk = small
    state = load_state_dict(path)
    missing = {key: value for key, value in state.items() if key != "stage3.0.fuse_layers.2.0.0.1.weight"}
    with pytest.raises(
        ConversionError,
        match=r"missing checkpoint keys: stage3\.0\.fuse_layers\.2\.0\.0\.1\.weight.*"
        r"Keras weights not filled: stage3_module1_fuse_2_0_down0/bn/gamma",
    ):
        convert_state_dict(missing, trunk, "hrnet_w18_small")
    with pytest.raises(ConversionError, match=r"unexpected checkpoint keys: stage2\.0\.extra\.weight"):
        convert_state_dict({**state, "stage2.0.extra.weight": np.zeros(3, "float32")}, trunk, "hrnet_w18_small")
    with pytest.raises(
        ConversionError, match=r"layer1\.0\.conv1\.weight: shape \(64, 64, 1, 1\).*a hrnet_w18 checkpoint"
    ):
        convert_state_dict(load_state_dict(w18[1]), trunk, "hrnet_w18_small")  # another width
    report = convert_state_dict(state, trunk, "hrnet_w18_small")  # the right one fills the trunk again
    assert sorted(report.unused) == HEAD_KEYS and not report.problems()

    torch.save({key: torch.from_numpy(value) for key, value in missing.items()}, str(tmp_path / "bad.pth"))
    with pytest.raises(SystemExit) as exit_info:
        convert_main([str(tmp_path / "bad.pth"), str(tmp_path / "out.weights.h5"), "--model", "hrnet_w18_small"])
    message = str(exit_info.value.code)
    assert message.startswith("error: The checkpoint does not match the hrnet_w18_small model") and "\n" not in message
    assert not list(tmp_path.glob("out*"))


def test_trunk_files_know_their_width(small, w18, tmp_path):
    assert (trunk_config_of(small[2]), trunk_config_of(w18[2])) == ("small", "w18")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save_weights(str(tmp_path / "other.weights.h5"))  # no trunk
    assert trunk_config_of(str(tmp_path / "other.weights.h5")) is None


def test_earnet_stage1_starts_from_the_converted_trunk(small, w18):
    config = earnet.EARNetConfig(data_path="x", config="small", norm="batch", backbone_weights=small[2])
    earnet.check_start(config, (1, 2))
    model = earnet.EARNetTrainer(config, make_strategy("default"), 1, 10).model
    trunk = small[3]
    for layer in trunk.layers:
        for expected, got in zip(layer.get_weights(), model.net.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, expected)
    assert len(trunk.weights) == sum(len(model.net.get_layer(layer.name).weights) for layer in trunk.layers)

    with pytest.raises(ValueError, match=r"holds an HRNet w18 trunk, the model's trunk is small: give --config w18"):
        model.load_trunk_weights(w18[2])
    with pytest.raises(ValueError, match="need norm 'batch', not 'group'"):
        earnet.check_start(dataclasses.replace(config, norm="group"), (1,))
    earnet.check_start(dataclasses.replace(config, norm="group", init_weights="run.weights.h5"), (1,))  # unused
    earnet.check_start(dataclasses.replace(config, backbone_weights=w18[2]), (2,))  # stage 2 starts from stage 1


def test_official_recipe_asks_for_backbone_weights(small, w18, tmp_path):
    def error_of(*flags):
        with pytest.raises(SystemExit) as exit_info:
            train_earnet.main(["--data_path", str(tmp_path), "--logdir", str(tmp_path), "--recipe", "official", *flags])
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message
        return message

    message = error_of()
    assert "convert hrnetv2_w48_imagenet_pretrained.pth with convert_weights.py --model hrnet_w48" in message
    assert "--backbone_weights FILE.weights.h5, or --backbone_weights none" in message
    message = error_of("--config", "small", "--backbone_weights", w18[2])
    assert "holds an HRNet w18 trunk, the model's trunk is small" in message
    message = error_of("--config", "w18", "--backbone_weights", str(tmp_path / "missing.weights.h5"))
    assert "No such HRNet trunk weights file" in message and "--model hrnet_w18)" in message
    assert not list(tmp_path.iterdir())  # refused before any run folder
    damaged = tmp_path / "damaged.weights.h5"
    damaged.write_text("not HDF5")
    message = error_of("--config", "small", "--backbone_weights", str(damaged))
    assert f"{damaged} cannot be read as a Keras weights file" in message

    args = train_earnet.parse_args(["--data_path", "x", "--recipe", "official", "--backbone_weights", "none"])
    config = cli.config_from_args(earnet.EARNetConfig, args, scales=tuple(args.scales))
    earnet.check_start(config, (1, 2))
    assert config.trunk_weights is None and config.recipe_card()["backbone_weights"] == "none"
    with_file = dataclasses.replace(config, config="small", backbone_weights=small[2])
    assert with_file.trunk_weights == small[2]
    assert dataclasses.replace(with_file, init_weights="run.weights.h5").trunk_weights is None
