"""Quantised exports (tfseg.quantization): every quantised format runs wherever a float one does, the Dice check
refuses a file that loses too much and leaves the previous export whole, and an export folder runs the runtime
timed fastest (pick_export). On a few trained convolutions with PraNet's inference spec, which export, quantise
and train in seconds (PraNet's own export is tested in test_inference.py)."""

import dataclasses
import json
import logging
import os
import shutil
import time

import cv2
import keras
import numpy as np
import pytest

import export_model
import infer_image
from tests.helpers import tree_state
from tfseg.cli import RUNTIMES
from tfseg.data import layouts
from tfseg.data.synthetic import polyp_sample, write_polyp_dataset
from tfseg.export import export_model as export
from tfseg.files import ModelFileError, write_json
from tfseg.inference import Predictor, runtimes
from tfseg.inference.predictor import EXPORT_FILES
from tfseg.inference.runtimes import interleaved_times, machine
from tfseg.models.blocks import ResizeLike
from tfseg.models.spec import SPEC_KEY, InferenceSpec, size_pair, without_spec
from tfseg.preprocessing import normalize
from tfseg.quantization import QuantizationError, QuantizationSettings, dice_scores
from tfseg.training import PraNetConfig

INPUT_SIZE = 64
QUANTIZED = ("tflite_int8", "tflite_fp16", "onnx_int8")


@keras.saving.register_keras_serializable("tests")
class TinySegmenter(InferenceSpec, keras.Model):
    """Three convolutions: a coarse logit map at half the input's size and, resized to the input's, the prediction."""

    task, prediction_output, activation, normalization = "polyp", -1, "sigmoid", "tf"
    output_names = ("coarse", "fine")

    def __init__(self, input_size=INPUT_SIZE, **kwargs):
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)  # (B, H/2, W/2, 16)
        x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
        coarse = keras.layers.Conv2D(1, 1)(x)
        fine = keras.layers.Conv2D(1, 1)(ResizeLike()(x, inputs))
        super().__init__(inputs=inputs, outputs=[coarse, fine], **kwargs)
        self.input_size = size_pair(input_size)

    def get_config(self):
        config = {"input_size": list(self.input_size), "name": self.name, "trainable": self.trainable}
        return {**config, SPEC_KEY: self.inference_spec()}

    @classmethod
    def from_config(cls, config):
        return cls(**without_spec(config))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(training, validation, blank) folders: synthetic polyps, and black images with empty masks."""
    root = tmp_path_factory.mktemp("polyps")
    blank = root / "blank"
    for folder in ("images", "masks"):
        (blank / folder).mkdir(parents=True)
        for index in range(4):
            cv2.imwrite(str(blank / folder / f"blank_{index}.png"), np.zeros((64, 64), np.uint8))
    return (
        str(write_polyp_dataset(root / "train", 48, size=(64, 64), seed=0)),
        str(write_polyp_dataset(root / "val", 8, size=(72, 88), seed=1)),
        str(blank),
    )


@pytest.fixture(scope="module")
def model():
    """TinySegmenter trained on 64 synthetic polyps (a few seconds)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, masks = zip(*(polyp_sample(rng, INPUT_SIZE, INPUT_SIZE) for _ in range(64)))
    model = TinySegmenter()
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-2), [loss, loss])
    targets = (np.stack(masks)[..., None] > 127).astype("float32")
    x = normalize(np.stack(images).astype("float32"), "tf")
    model.fit(x, [targets[:, ::2, ::2], targets], batch_size=16, epochs=30, verbose=0)
    return model


@pytest.fixture(scope="module")
def exported(model, data, tmp_path_factory):
    """The float and quantised ONNX and TFLite files of `model`, checked with the default --max_dice_drop."""
    folder = tmp_path_factory.mktemp("export") / "all"
    settings = QuantizationSettings(calibration=data[0], validation=data[1])
    results = export(model, folder, ["onnx", "tflite", *QUANTIZED], quantization_settings=settings)
    return folder, results


@pytest.fixture(scope="module")
def image():
    return polyp_sample(np.random.default_rng(3), 75, 103)[0]


def test_every_quantised_format_is_checked_timed_and_runs_like_a_float_one(exported, data, image, tmp_path, capsys):
    folder, results = exported
    metadata = json.loads((folder / "tfseg.json").read_text())
    assert set(os.listdir(folder)) == {
        "tfseg.json",
        "model.onnx",
        "model.tflite",
        *(f"model_{n}" for n in ("int8.tflite", "fp16.tflite", "int8.onnx")),
    }
    assert set(metadata["files"]) == {"onnx", "tflite", *QUANTIZED}
    timing = metadata["timing"]
    assert set(timing["median_ms"]) == set(metadata["files"]) and timing["machine"] == machine()
    assert timing["input_size"] == [INPUT_SIZE] * 2 and all(ms > 0 for ms in timing["median_ms"].values())
    for name in QUANTIZED:
        report = metadata["quantization"][name]
        assert report["reference"] == name.split("_")[0] and report["validation"]["images"] == 8
        for key in ("meanDice", "dice@0.5"):
            assert 0 <= report["quantized"][key] <= 1 and 0 <= report["float"][key] <= 1
            assert report["change"][key] == pytest.approx(report["quantized"][key] - report["float"][key])
        reference = timing["median_ms"][report["reference"]]
        assert report["speedup"] == pytest.approx(reference / timing["median_ms"][name])
        assert results[name]["quantization"] == report
    assert metadata["quantization"]["tflite_int8"]["calibration"]["images"] == 48
    assert "input_size_change" not in metadata  # made for the training size
    float_map = Predictor.load(folder, runtime="tflite").predict(image)
    for name in QUANTIZED:
        predictor = Predictor.load(folder, runtime=name)
        assert predictor.runtime.name == name
        probability = predictor.predict(image)
        assert probability.shape == image.shape[:2] and probability.dtype == np.float32
        assert np.mean(np.abs(probability - float_map)) < (1e-3 if name == "tflite_fp16" else 0.1), name
    alone = tmp_path / "alone"  # the int8 ONNX file carries the spec as the float one does
    alone.mkdir()
    os.link(folder / "model_int8.onnx", alone / "model_int8.onnx")
    np.testing.assert_allclose(
        Predictor.load(alone / "model_int8.onnx").predict(image),
        Predictor.load(folder, runtime="onnx_int8").predict(image),
        atol=1e-6,
    )
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sorted(os.scandir(os.path.join(data[1], "images")), key=lambda e: e.name)[0].path, images)
    infer_image.main(
        ["--model", str(folder), "--runtime", "tflite_int8", "--image", str(images), "--output", str(tmp_path / "out")]
    )
    assert "segmented with tflite_int8" in capsys.readouterr().out


def test_a_file_losing_more_dice_than_allowed_is_refused_and_nothing_written(exported, model, data, tmp_path):
    folder, _ = exported
    before = tree_state(folder)
    settings = QuantizationSettings(calibration=data[2], validation=data[1])  # calibrated on black images
    with pytest.raises(QuantizationError, match=r"^tflite_int8 loses .*dice@0.5 .* more than --max_dice_drop 0.01"):
        export(model, folder, ["tflite", "tflite_int8"], quantization_settings=settings)
    assert tree_state(folder) == before  # the previous export, whole
    assert not [name for name in os.listdir(folder.parent) if name.startswith(".tmp")]
    source = tmp_path / "source"
    export(model, source, ["keras"])
    with pytest.raises(SystemExit, match=r"^error: tflite_fp16 loses meanDice .* \(\+?-?\d\.\d+\)"):
        export_model.main(
            [
                "--model",
                str(source),
                "--formats",
                "tflite_fp16",
                "--output",
                str(tmp_path / "out"),
                "--validation",
                data[1],
                "--max_dice_drop",
                "-1",
            ]
        )
    assert not (tmp_path / "out").exists()


def test_an_export_for_another_input_size_reports_the_dice_it_costs(model, data, tmp_path, caplog):
    """Made for 32 x 32 instead of the training size (64), as one would for real time on a slower CPU: the float
    model's Dice at both sizes is scored and stored beside the quantisation check, a loss beyond --max_dice_drop
    is a warning, and the export is written."""
    caplog.set_level(logging.INFO, logger="tfseg")
    settings = QuantizationSettings(validation=data[1])
    export(model, tmp_path / "small", ["tflite_fp16"], input_size=32, quantization_settings=settings)
    metadata = json.loads((tmp_path / "small" / "tfseg.json").read_text())
    report = metadata["input_size_change"]
    assert report["training_size"] == [64, 64] and report["export_size"] == [32, 32] == metadata["input_size"]
    assert report["validation"] == {"images": 8, "source": data[1]}
    float_at_export = metadata["quantization"]["tflite_fp16"]["float"]  # the float file, at 32
    for key in ("meanDice", "dice@0.5"):
        assert report["at_export_size"][key] == pytest.approx(float_at_export[key], abs=1e-3)
        assert report["change"][key] == pytest.approx(report["at_export_size"][key] - report["at_training_size"][key])
    assert "Input size 64 x 64 -> 32 x 32 (the float model, 8 validation images): meanDice" in caplog.text
    lost = max(-change for change in report["change"].values()) > 0.01
    assert lost == ("Made for 32 x 32 instead of its training size 64 x 64, the float model loses more" in caplog.text)
    caplog.clear()  # a float format alone is scored too; without validation images it is written unscored
    export(model, tmp_path / "float", ["tflite"], input_size=32, quantization_settings=settings)
    metadata = json.loads((tmp_path / "float" / "tfseg.json").read_text())
    assert metadata["input_size_change"]["at_export_size"] == report["at_export_size"]
    assert "quantization" not in metadata
    export(model, tmp_path / "unscored", ["tflite"], input_size=32)
    assert "Made for 32 x 32 instead of its training size 64 x 64: what that costs in Dice is not scored" in caplog.text
    assert "input_size_change" not in json.loads((tmp_path / "unscored" / "tfseg.json").read_text())
    run = tmp_path / "run"  # a training run whose data has gone: written, unscored, the reason said
    write_json(run / "args.json", dataclasses.asdict(PraNetConfig(data_path=str(tmp_path / "gone"))))
    export(model, tmp_path / "gone_data", ["tflite"], input_size=32, training={"run_dir": str(run)})
    assert f"not scored: The data of the run {run} (its args.json)" in caplog.text
    assert (tmp_path / "gone_data" / "model.tflite").is_file()


def test_the_images_come_from_the_training_run_or_must_be_named(model, data, tmp_path, capsys):
    source = tmp_path / "model"
    export(model, source, ["keras"])
    with pytest.raises(SystemExit, match="^error: tflite_int8: the images .* give --calibration and --validation"):
        export_model.main(["--model", str(source), "--formats", "tflite_int8", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"^error: tflite_fp16: the images to check on .* give --validation \("):
        export_model.main(["--model", str(source), "--formats", "tflite_fp16", "--output", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    run = tmp_path / "runs" / "pranet"  # a training run's folder: args.json, export/
    write_json(run / "args.json", dataclasses.asdict(PraNetConfig(data_path=data[0], val_path=data[1])))
    shutil.copytree(source, run / "export")
    export_model.main(
        [
            "--model",
            str(run / "export"),
            "--formats",
            "tflite_int8",
            "--output",
            str(tmp_path / "q"),
            "--max_dice_drop",
            "1",
            "--calibration_images",
            "4",
        ]
    )
    assert "Quantised vs float on 8 validation images (the validation images of the run" in capsys.readouterr().out
    report = json.loads((tmp_path / "q" / "tfseg.json").read_text())["quantization"]["tflite_int8"]
    assert report["calibration"] == {"images": 4, "source": f"the training images of the run {run}"}


def with_timing(folder, target, **changes):
    """A copy of the export `folder` at `target` whose tfseg.json "timing" has `changes`."""
    shutil.copytree(folder, target)
    metadata = json.loads((target / "tfseg.json").read_text())
    metadata["timing"].update(changes)
    write_json(target / "tfseg.json", metadata)
    return target


def test_the_fastest_runtime_as_timed_is_picked_and_runtime_overrides(exported, tmp_path, caplog):
    folder, _ = exported
    assert set(RUNTIMES) == set(EXPORT_FILES)  # --runtime offers every format
    caplog.set_level(logging.INFO, logger="tfseg")
    for fastest in ("onnx", "tflite_fp16", "onnx_int8"):
        latencies = {name: 5.0 for name in ("onnx", "tflite", *QUANTIZED)} | {fastest: 1.0}
        copy = with_timing(folder, tmp_path / fastest, median_ms=latencies)
        assert Predictor.load(copy).runtime.name == fastest
        assert Predictor.load(copy, runtime="tflite").runtime.name == "tflite"
    assert "the fastest here as timed at export" in caplog.text
    caplog.clear()
    elsewhere = with_timing(folder, tmp_path / "elsewhere", machine={**machine(), "cpu": "another CPU"})
    assert Predictor.load(elsewhere).runtime.name in ("onnx", "tflite", *QUANTIZED)
    assert "timed now" in caplog.text and "timed at export on another machine" in caplog.text
    with open(elsewhere / "model_fp16.tflite", "ab") as f:  # changed after the export: never run, not even timed
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="model_fp16.tflite is not the file exported with"):
        Predictor.load(elsewhere)


def test_a_timing_on_a_cpu_of_the_same_name_without_its_vector_features_is_redone(
    exported, tmp_path, caplog, monkeypatch
):
    """Two KVM hosts both called "AMD EPYC", one with AVX-512 VNNI: int8 ran 3.6x float32 on it, 1.9x without."""
    folder, _ = exported
    cpuinfo = {"model name": ["AMD EPYC"], "flags": ["fpu sse avx2 avx512f avx512_vnni avx512bw"]}
    monkeypatch.setattr(runtimes, "_cpuinfo", lambda key: cpuinfo.get(key, []))
    here = machine()
    assert here["cpu"] == "AMD EPYC" and here["cpu_flags"] == ["avx2", "avx512f", "avx512_vnni"]
    caplog.set_level(logging.INFO, logger="tfseg")
    same = with_timing(folder, tmp_path / "same", machine=here)
    Predictor.load(same)
    assert "the fastest here as timed at export" in caplog.text
    caplog.clear()
    older = with_timing(folder, tmp_path / "older", machine={**here, "cpu_flags": ["avx2"]})
    Predictor.load(older)
    assert "timed now" in caplog.text and "timed at export on another machine" in caplog.text


def test_timing_stops_after_its_budget_with_the_minimum_rounds():
    slow = lambda x: time.sleep(0.02)
    times = interleaved_times({"a": slow, "b": slow}, None, runs=10, warmup=1, budget_s=0.01, min_runs=3)
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}
    times = interleaved_times({"a": lambda x: None}, None, runs=10, warmup=0, budget_s=60)
    assert len(times["a"]) == 10


def test_each_runtime_is_timed_after_it_has_run_alone_a_while():
    """A runtime called right after another ran up to 2x slower until it had run a few times (TFLite after ONNX
    Runtime, docs/BENCHMARKS.md). Stand-ins: `b` takes 20 ms on its first call after `a`, 1 ms after that. Timed
    call by call in turn, `b` looked 20 ms; timed after it has run alone a while, 1 ms."""
    last = {"name": None}

    def a(x):
        last["name"] = "a"

    def b(x):
        time.sleep(0.02 if last["name"] != "b" else 0.001)
        last["name"] = "b"

    times = interleaved_times({"a": a, "b": b}, None, runs=6, warmup=1)
    assert {name: len(t) for name, t in times.items()} == {"a": 6, "b": 6}
    assert np.median(times["b"]) < 5


class MaskRuntime:
    """A runtime whose logits are the image's first channel: images that are their masks are segmented exactly."""

    input_size = None

    def __init__(self, channels):
        self.channels = channels

    def __call__(self, x):
        logits = 10 * x[..., :1]  # normalised: +10 on the mask, -10 off it
        return logits if self.channels == 1 else np.concatenate([np.zeros_like(logits), logits], -1)


@pytest.mark.parametrize("task, activation, channels", [("polyp", "sigmoid", 1), ("vessel", "softmax", 2)])
def test_the_dice_check_scores_by_the_protocol_of_the_task(tmp_path, task, activation, channels):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for index in range(3):
        mask = np.zeros((40, 56), np.uint8)
        mask[5 + index : 20 + 3 * index, 10:30] = 255
        cv2.imwrite(str(tmp_path / "images" / f"case{index}.png"), mask)
        cv2.imwrite(str(tmp_path / "masks" / f"case{index}.png"), mask)
    metadata = {"task": task, "activation": activation, "normalization": "tf", "input_size": None}
    scores = dice_scores(MaskRuntime(channels), metadata, layouts.find_dataset(tmp_path))
    assert scores["dice@0.5"] == pytest.approx(1.0) and 0.99 < scores["meanDice"] < 1.0
