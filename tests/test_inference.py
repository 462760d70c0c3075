"""Export to every format, the Predictor over each, infer_image.py and infer_video.py (tfseg.inference)."""

import json
import os

import cv2
import keras
import numpy as np
import pytest

import export_model
import infer_image
import infer_video
from tfseg.data.synthetic import polyp_sample, write_polyp_video
from tfseg.export import ExportMismatchError, export_model as export
from tfseg.inference import Predictor, segment_video
from tfseg.models import PraNet

INPUT_SIZE = 64
FORMATS = ("keras", "savedmodel", "onnx", "tflite")


def moved_batchnorm_statistics(model, seed=0):
    """Moving statistics far from their initial values, so an export in training mode would show."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.3, 3.0, n))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A PraNet-MobileNetV2 saved as .keras, then export_model.py into all four formats."""
    folder = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)  # the same weights every run: the overlay checks below see the same masks
    model = moved_batchnorm_statistics(PraNet("mobilenetv2", backbone_weights=None))
    export(model, str(folder / "source"), ["keras"], INPUT_SIZE)
    export_model.main(["--model", str(folder / "source"), "--formats", ",".join(FORMATS), "--output",
                       str(folder / "all")])
    return model, folder / "all"


@pytest.fixture(scope="module")
def image():
    return polyp_sample(np.random.default_rng(3), 75, 103)[0]


def test_every_format_is_written_with_metadata(exported):
    _, folder = exported
    assert {p.name for p in folder.iterdir()} == {"model.keras", "savedmodel", "model.onnx", "model.tflite",
                                                  "tfseg.json"}
    metadata = json.loads((folder / "tfseg.json").read_text())
    assert metadata["input_size"] == [INPUT_SIZE] * 2 and metadata["normalization"] == "tf"
    import onnx
    embedded = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert json.loads(embedded["tfseg"]) == metadata


def test_four_formats_give_the_same_probabilities(exported, image):
    model, folder = exported
    maps = {}
    for runtime in FORMATS:
        predictor = Predictor.load(folder, runtime=runtime)
        assert predictor.runtime.name == runtime and predictor.input_size == (INPUT_SIZE, INPUT_SIZE)
        maps[runtime] = predictor.predict(image)
        assert maps[runtime].shape == image.shape[:2] and maps[runtime].dtype == np.float32
    # the Keras model itself, in inference mode, through the same preprocessing
    x = Predictor.load(folder / "model.keras").prepare(image[None])
    logits = keras.ops.convert_to_numpy(model(x, training=False)[-1])
    expected = cv2.resize(logits[0, ..., 0], (103, 75), interpolation=cv2.INTER_LINEAR)  # half-pixel bilinear
    np.testing.assert_allclose(maps["keras"], 1 / (1 + np.exp(-expected)), atol=1e-5)
    assert np.std(maps["keras"]) > 1e-3  # a non-trivial map
    for runtime in FORMATS[1:]:
        assert np.max(np.abs(maps[runtime] - maps["keras"])) < 1e-5, runtime


def test_fastest_runtime_is_the_default_and_files_load_alone(exported, image):
    _, folder = exported
    assert Predictor.load(folder).runtime.name == "tflite"  # on a CPU
    onnx_alone = folder.parent / "alone"
    onnx_alone.mkdir()
    os.link(folder / "model.onnx", onnx_alone / "model.onnx")  # no tfseg.json: the embedded metadata serves
    np.testing.assert_allclose(Predictor.load(onnx_alone / "model.onnx").predict(image),
                               Predictor.load(folder, runtime="onnx").predict(image), atol=1e-6)
    with pytest.raises(ValueError, match=r"exported for input size \(64, 64\), not \(96, 96\)"):
        Predictor.load(folder / "model.tflite", input_size=96)
    assert Predictor.load(folder / "savedmodel", input_size=96).predict(image).shape == (75, 103)


def test_batch_and_flip_tta(exported, image):
    _, folder = exported
    predictor = Predictor.load(folder, runtime="tflite")
    flipped = np.ascontiguousarray(image[:, ::-1])
    batch = predictor.predict_batch(np.stack([image, flipped]))  # TFLite resizes its input to batch 2
    np.testing.assert_allclose(batch[0], predictor.predict(image), atol=1e-6)
    tta = predictor.predict(image, tta=True)
    np.testing.assert_allclose(tta, (batch[0] + batch[1][:, ::-1]) / 2, atol=1e-6)
    assert np.max(np.abs(tta - batch[0])) > 1e-4
    assert predictor.model_seconds > 0


def test_export_fails_loudly_beyond_the_tolerance(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ExportMismatchError, match="keras export .* differs from the Keras model"):
        export(model, str(tmp_path / "x"), ["keras"], INPUT_SIZE, tolerance=-1.0)
    with pytest.raises(SystemExit, match="Model not found"):
        export_model.main(["--model", str(tmp_path / "missing.keras"), "--output", str(tmp_path / "y")])


def test_infer_image_writes_masks_and_overlays_and_skips_a_corrupt_file(exported, tmp_path, capsys):
    _, folder = exported
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        rgb = polyp_sample(np.random.default_rng(index), 80 + 10 * index, 96)[0]
        cv2.imwrite(str(images / f"polyp{index}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    probability = Predictor.load(folder).predict(rgb)
    threshold = float(np.median(probability))  # about half of the image in the mask: an overlay to see
    infer_image.main(["--model", str(folder), "--image", str(images), "--output", str(tmp_path / "out"),
                      "--threshold", str(threshold), "--quiet"])
    printed = capsys.readouterr().out
    assert "2 image(s) segmented with tflite" in printed and "1 skipped" in printed and "broken.png" in printed
    mask = cv2.imread(str(tmp_path / "out" / "polyp1_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(mask)) == {0, 255} and mask.shape == (90, 96)
    np.testing.assert_array_equal(mask > 0, probability >= threshold)
    stored = cv2.imread(str(tmp_path / "out" / "polyp1_prob.png"), cv2.IMREAD_GRAYSCALE)
    assert np.max(np.abs(stored / 255.0 - probability)) <= 0.5 / 255 + 1e-6
    overlay = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "polyp1_overlay.png")), cv2.COLOR_BGR2RGB)
    inside = (mask > 0) & (cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0)  # away from the contour line
    assert overlay[inside, 1].astype(int).mean() > rgb[inside, 1].astype(int).mean() + 40  # green fill
    outside = cv2.dilate(mask, np.ones((7, 7), np.uint8)) == 0  # away from the contour line: untouched
    decoded = cv2.cvtColor(cv2.imread(str(images / "polyp1.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(overlay[outside], decoded[outside])


def test_infer_video_overlays_every_frame_and_reports(exported, tmp_path, capsys):
    _, folder = exported
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=12, size=(96, 128))
    capture = cv2.VideoCapture(str(clip))
    first = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB)
    capture.release()
    threshold = float(np.median(Predictor.load(folder).predict(first)))
    report_path = tmp_path / "report.json"
    infer_video.main(["--model", str(folder), "--video", str(clip), "--output", str(tmp_path / "out" / "o.mp4"),
                      "--threshold", str(threshold), "--batchsize", "4", "--smooth", "0.5",
                      "--report", str(report_path)])
    report = json.loads(report_path.read_text())
    assert report["frames_in"] == report["frames_out"] == 12
    assert report["runtime"] == "tflite" and report["codec"] in ("avc1", "mp4v") and not report["interrupted"]
    for key in ("model_ms_mean", "model_ms_p95", "e2e_fps", "model_fps"):
        assert report[key] > 0
    assert '"frames_out": 12' in capsys.readouterr().out
    capture = cv2.VideoCapture(str(tmp_path / "out" / "o.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    out = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB)
    capture.release()
    # the overlay's green fill shows, and the HUD darkens a band at the top left
    assert out[30:, :, 1].astype(int).mean() > first[30:, :, 1].astype(int).mean() + 10
    assert out[:8, :40].mean() < first[:8, :40].mean() - 20


class Interrupting:
    """A Predictor stand-in whose model raises KeyboardInterrupt (Ctrl-C) on its third batch."""

    runtime, tta, model_seconds = type("Runtime", (), {"name": "fake"})(), False, 0.01

    def __init__(self):
        self.calls = 0

    def prepare(self, images):
        return images

    def logits(self, x, tta=None):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return np.full((*x.shape[:3], 1), 2.0, np.float32)

    def finish(self, logits, size, count=None):
        return 1 / (1 + np.exp(-logits[..., 0]))


def test_ctrl_c_keeps_the_frames_done_and_releases_the_video(tmp_path):
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=10, size=(48, 64))
    report = segment_video(Interrupting(), str(clip), str(tmp_path / "o.avi"))
    assert report["interrupted"] and report["frames_out"] == 2 and report["codec"] == "MJPG"
    capture = cv2.VideoCapture(str(tmp_path / "o.avi"))  # finalised, so readable
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 2
    capture.release()


def test_video_errors_are_clear(exported, tmp_path):
    _, folder = exported
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=2, size=(32, 32))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2000))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [(["--video", str(tmp_path / "missing.mp4")], "Video not found"),
             (["--video", str(corrupt)], "Cannot read video .*corrupt"),
             (["--video", "7"], "Camera 7 is not available"),
             (["--video", str(clip), "--output", str(blocker / "o.mp4")], "Cannot create the output folder"),
             (["--video", str(clip), "--output", str(tmp_path / "o.webm")], "Unsupported output extension")]
    for args, message in cases:
        with pytest.raises(SystemExit, match=message):
            infer_video.main(["--model", str(folder / "model.tflite"), "--output", str(tmp_path / "o.mp4"), *args])
