"""Presets (tfseg.models.preset): save_to_preset -> from_preset round trips, the folder's files and its atomic,
non-destructive writes, hub handles (their packages faked: no download ever runs), the registry, a training run's
preset with its model card, and the inference commands on it."""

import json
import os
import shutil
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import export_model
import infer_image
import test_model
from tests.helpers import max_abs_diff, random_images
from tfseg import files
from tfseg.files import ModelFileError
from tfseg.inference import Predictor
from tfseg.models import EARNet, HRNetOCR, PraNet, preset
from tfseg.models.preset import PresetError

SIZE = 64


@pytest.fixture(scope="module")
def pranet_preset(tmp_path_factory):
    """A PraNet-MobileNetV2 (random weights) and its preset folder."""
    keras.utils.set_random_seed(0)
    model = PraNet("mobilenetv2", backbone_weights=None, input_size=SIZE)
    folder = tmp_path_factory.mktemp("presets") / "pranet"
    assert model.save_to_preset(folder) == str(folder)
    return model, folder


def test_pranet_round_trip_and_the_folders_files(pranet_preset):
    model, folder = pranet_preset
    assert sorted(os.listdir(folder)) == sorted(preset.PRESET_FILES)
    config = json.loads((folder / "config.json").read_text())
    assert {key: config[key] for key in ("module", "class_name", "registered_name")} == {
        "module": "tfseg.models.pranet",
        "class_name": "PraNet",
        "registered_name": "tfseg>PraNet",
    }
    assert "build_config" not in config and "compile_config" not in config
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["keras_version"] == keras.version() and metadata["parameter_count"] == model.count_params()
    assert set(metadata) == {"keras_version", "tfseg_version", "parameter_count", "date_saved"}
    spec = json.loads((folder / "tfseg.json").read_text())
    assert {key: spec[key] for key in model.inference_spec()} == model.inference_spec()
    assert spec["files"]["weights"]["fingerprint"] == files.fingerprint(folder / "model.weights.h5")
    card = (folder / "README.md").read_text()
    assert "PraNet.from_preset" in card and "no training record" in card

    loaded = PraNet.from_preset(str(folder))
    assert type(loaded) is PraNet and loaded.get_config() == {**model.get_config(), "backbone_weights": None}
    x = random_images(2, SIZE, SIZE)
    assert max_abs_diff(model(x, training=False), loaded(x, training=False)) == 0.0


def test_earnet_round_trip_and_the_class_is_checked(pranet_preset, tmp_path):
    keras.utils.set_random_seed(1)
    model = EARNet("small", scales=(1.0, 0.5), norm="group")
    x = random_images(1, SIZE, SIZE)
    expected = model(x, training=False)
    model.save_to_preset(tmp_path / "earnet")
    loaded = EARNet.from_preset(tmp_path / "earnet")
    assert loaded.get_config() == model.get_config()
    outputs = loaded(x, training=False)
    assert sorted(outputs) == sorted(expected)
    assert max(max_abs_diff(expected[k], outputs[k]) for k in expected) == 0.0
    assert isinstance(HRNetOCR.from_preset(tmp_path / "earnet"), EARNet)  # an EARNet is an HRNetOCR
    with pytest.raises(PresetError, match="holds a model of class PraNet, not EARNet"):
        EARNet.from_preset(pranet_preset[1])


def test_save_refuses_other_folders_and_other_presets_and_is_atomic(pranet_preset, tmp_path, monkeypatch):
    model, source = pranet_preset
    other = PraNet("mobilenetv2", backbone_weights=None, input_size=SIZE)  # other random weights
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(PresetError, match="holds no preset"):
        other.save_to_preset(user)
    assert os.listdir(user) == ["notes.txt"]

    folder = tmp_path / "preset"
    model.save_to_preset(folder)
    (folder / "NOTES.md").write_text("kept")
    before = files.fingerprint(folder)
    with pytest.raises(PresetError, match="another model"):
        other.save_to_preset(folder)
    assert files.fingerprint(folder) == before
    model.save_to_preset(folder)  # the same model again: allowed
    assert files.fingerprint(folder / "model.weights.h5") == files.fingerprint(source / "model.weights.h5")

    def broken(*args, **kwargs):  # a failure in the middle of the write
        raise OSError("disk full")

    monkeypatch.setattr(other, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        other.save_to_preset(folder, overwrite=True)
    assert files.fingerprint(folder / "model.weights.h5") == files.fingerprint(source / "model.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["preset", "user"]  # no temporary folder left
    monkeypatch.undo()
    other.save_to_preset(folder, overwrite=True)
    assert (folder / "NOTES.md").read_text() == "kept"
    x = random_images(1, SIZE, SIZE)
    assert max_abs_diff(other(x)[-1], PraNet.from_preset(folder)(x)[-1]) == 0.0


def test_changed_weights_are_refused(pranet_preset, tmp_path):
    folder = tmp_path / "copy"
    os.makedirs(folder)
    for name in preset.PRESET_FILES:
        (folder / name).write_bytes((pranet_preset[1] / name).read_bytes())
    PraNet("mobilenetv2", backbone_weights=None, input_size=SIZE).save_weights(folder / "model.weights.h5")
    with pytest.raises(ModelFileError, match="fingerprint differs"):
        PraNet.from_preset(folder)


def fake_hub(monkeypatch, package, **functions):
    module = types.ModuleType(package)
    for name, function in functions.items():
        setattr(module, name, function)
    monkeypatch.setitem(sys.modules, package, module)


def error_named(name):
    return type(name, (Exception,), {})


def test_hub_handles_missing_package_offline_and_not_found(pranet_preset, monkeypatch):
    for handle, extra, package in (
        ("hf://owner/pranet", "hf", "huggingface_hub"),
        ("kaggle://owner/pranet/keras/base", "kaggle", "kagglehub"),
    ):
        monkeypatch.setitem(sys.modules, package, None)  # not installed
        with pytest.raises(PresetError, match=rf"pip install 'tfseg\[{extra}\]'"):
            PraNet.from_preset(handle)

    def offline(**kwargs):
        raise error_named("LocalEntryNotFoundError")("cannot reach huggingface.co and no cached copy")

    fake_hub(monkeypatch, "huggingface_hub", snapshot_download=offline)
    with pytest.raises(PresetError, match="Is the machine offline"):
        PraNet.from_preset("hf://owner/pranet")

    def missing(**kwargs):
        raise error_named("RepositoryNotFoundError")("404")

    fake_hub(monkeypatch, "huggingface_hub", snapshot_download=missing)
    with pytest.raises(PresetError, match="was not found"):
        PraNet.from_preset("hf://owner/pranet")
    with pytest.raises(PresetError, match="expected hf://owner/name"):
        PraNet.from_preset("hf://pranet")

    def no_network(handle):
        raise ConnectionError("Name or service not known")

    fake_hub(monkeypatch, "kagglehub", model_download=no_network)
    with pytest.raises(PresetError, match="ConnectionError.*offline"):
        PraNet.from_preset("kaggle://owner/pranet/keras/base")
    with pytest.raises(PresetError, match="Unknown preset handle"):
        PraNet.from_preset("s3://bucket/pranet")


def test_hub_handles_load_the_downloaded_folder(pranet_preset, monkeypatch):
    model, folder = pranet_preset
    asked = []
    fake_hub(monkeypatch, "huggingface_hub", snapshot_download=lambda repo_id: asked.append(repo_id) or str(folder))
    fake_hub(monkeypatch, "kagglehub", model_download=lambda handle: asked.append(handle) or str(folder))
    predictor = Predictor.load("hf://owner/pranet")
    assert predictor.source == "hf://owner/pranet" and predictor.input_size == (SIZE, SIZE)
    x = random_images(1, SIZE, SIZE)
    assert max_abs_diff(model(x)[-1], predictor.runtime(x)) < 1e-6  # tf.function vs eager
    assert isinstance(PraNet.from_preset("kaggle://owner/pranet/keras/base/2"), PraNet)
    assert asked == ["owner/pranet", "owner/pranet/keras/base/2"]


def test_registry(pranet_preset, monkeypatch):
    assert set(PraNet.presets) == {
        "pranet_resnet50_imagenet",
        "pranet_mobilenetv2_imagenet",
        "pranet_res2net50_original",
    }
    assert all(entry["description"] for entry in PraNet.presets.values())
    with pytest.raises(PresetError, match="not a name of the PraNet registry.*pranet_resnet50_imagenet"):
        PraNet.from_preset("pranet_resnet18_imagenet")
    with pytest.raises(PresetError, match="convert_weights.py PraNet-19.pth"):
        PraNet.from_preset("pranet_res2net50_original")

    def fetch_failure(**kwargs):  # what keras.utils.get_file raises offline
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(keras.applications, "MobileNetV2", fetch_failure)
    with pytest.raises(PresetError, match="could not be built offline.*ImageNet weights of MobileNetV2"):
        PraNet.from_preset("pranet_mobilenetv2_imagenet")
    monkeypatch.undo()

    hosted = {"pranet_hosted": {"description": "trained", "handle": str(pranet_preset[1])}}  # a hosted entry
    built = {
        "pranet_tiny": {"description": "untrained", "config": {"backbone": "mobilenetv2", "backbone_weights": None}}
    }
    monkeypatch.setattr(PraNet, "presets", {**PraNet.presets, **hosted, **built})
    x = random_images(1, SIZE, SIZE)
    assert max_abs_diff(pranet_preset[0](x)[-1], PraNet.from_preset("pranet_hosted")(x)[-1]) == 0.0
    tiny = PraNet.from_preset("pranet_tiny")
    assert tiny.backbone_name == "mobilenetv2" and tiny.input_size == (352, 352)


def test_cli_error_is_one_line(pranet_preset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(SystemExit) as exit_info:
        infer_image.main(["--model", "hf://owner/pranet", "--image", str(tmp_path), "--output", str(tmp_path / "o")])
    message = str(exit_info.value)
    assert message.startswith("error: hf://owner/pranet") and "tfseg[hf]" in message and "\n" not in message
    with pytest.raises(SystemExit, match="error: .*preset.*runs with --runtime keras"):
        infer_image.main(
            ["--model", str(pranet_preset[1]), "--runtime", "onnx", "--image", str(tmp_path), "--output", "o"]
        )


@pytest.fixture(scope="module")
def trained_run(polyp_dir, tmp_path_factory):
    """A one-epoch PraNet run (its export stubbed out: the preset is what is tested) and its folder."""
    from tfseg.training import PraNetConfig, loop, train_pranet

    logdir = tmp_path_factory.mktemp("runs")
    config = PraNetConfig(
        polyp_dir,
        epochs=1,
        batch_size=4,
        steps_per_epoch=1,
        backbone="mobilenetv2",
        backbone_weights=None,
        input_size=SIZE,
        val_fraction=0.25,
        logdir=str(logdir),
        run_name="run",
    )
    exported = loop.export_model
    loop.export_model = lambda model, folder, training=None: {}
    tf.config.run_functions_eagerly(True)
    try:
        result = train_pranet(config, progress=False)
    finally:
        loop.export_model = exported
        tf.config.run_functions_eagerly(False)
    return result, logdir / "run"


def test_training_writes_its_best_model_as_a_preset_with_its_card(trained_run):
    result, run = trained_run
    folder = run / "preset"
    assert result["export"]["preset"] == str(folder)
    assert sorted(os.listdir(folder)) == sorted(preset.PRESET_FILES)
    model = PraNet.from_preset(folder)
    best = PraNet("mobilenetv2", backbone_weights=None, input_size=SIZE)
    best.load_weights(run / "best.weights.h5")
    x = random_images(1, SIZE, SIZE)
    assert max_abs_diff(best(x)[-1], model(x)[-1]) == 0.0  # the best weights
    training = json.loads((folder / "tfseg.json").read_text())["training"]
    args = json.loads((run / "args.json").read_text())
    assert training["settings"] == args and training["checkpoint"]["epoch"] == 1
    assert set(training["metrics"]) == {"val_dice"} and training["validation"]["images"] == 6
    card = (folder / "README.md").read_text()
    for text in (
        f"`{args['data_path']}`",  # data
        "a seeded 0.25 of the training images (seed 0) (6 images)",  # split
        "mean per-image Dice of sigmoid(ra2) > 0.5",  # validation protocol
        "best val_dice on the validation images: epoch 1 of 1",  # the checkpoint
        f"| {training['metrics']['val_dice']:.4f} |",  # the validation numbers
        f"{training['threshold']['value']:g}, chosen on the 6 validation images",
        "Command line:",
    ):
        assert text in card, text


def test_inference_commands_take_the_preset_folder(trained_run, polyp_dir, tmp_path, capsys):
    _, run = trained_run
    folder = str(run / "preset")
    data = tmp_path / "data"  # four of the run's images (training or validation ones)
    for kind in ("images", "masks"):
        os.makedirs(data / kind)
        for name in sorted(os.listdir(os.path.join(polyp_dir, kind)))[:4]:
            shutil.copy(os.path.join(polyp_dir, kind, name), data / kind / name)
    infer_image.main(
        ["--model", folder, "--image", str(data / "images"), "--output", str(tmp_path / "masks")]
        + ["--threshold", "auto", "--quiet"]
    )
    assert "4 image(s) segmented with keras" in capsys.readouterr().out
    assert len([name for name in os.listdir(tmp_path / "masks") if name.endswith("_mask.png")]) == 4

    test_model.main(
        ["--model", folder, "--data_path", str(data), "--output", str(tmp_path / "eval")]
        + ["--workers", "1", "--no_plots", "--bootstrap", "0", "--quiet"]
    )
    assert "meanDice" in capsys.readouterr().out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["protocol"]["task"] == "polyp"
    assert results["protocol"]["checkpoint"]["epoch"] == 1  # the training record came with the preset:
    assert results["protocol"]["comparable"] is False  # these are its training and validation images

    export_model.main(["--model", folder, "--formats", "keras", "--output", str(tmp_path / "export")])
    exported = Predictor.load(str(tmp_path / "export"))
    image = (np.random.default_rng(0).uniform(0, 255, (70, 90, 3))).astype("uint8")
    assert max_abs_diff(exported.predict(image), Predictor.load(folder).predict(image)) < 1e-5
    assert exported.threshold == Predictor.load(folder).threshold is not None
