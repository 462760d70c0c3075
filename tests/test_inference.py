"""Export to every format, the Predictor over each, infer_image.py and infer_video.py (tfseg.inference)."""

import json
import os
import shutil
import time

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import export_model
import infer_image
import infer_video
from tests.helpers import kill_when_changed, random_images
from tests.model_test_case import check_export_parity
from tfseg.data.synthetic import polyp_sample, write_polyp_video
from tfseg.export import ExportMismatchError
from tfseg.export import export_model as export
from tfseg.files import ModelFileError
from tfseg.inference import Predictor, segment_video
from tfseg.inference.predictor import host_probabilities, logits_to_probability
from tfseg.inference.runtimes import KerasRuntime, SavedModelRuntime, cpu_threads
from tfseg.inference.video import model_predictors
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
    export_model.main(
        ["--model", str(folder / "source"), "--formats", ",".join(FORMATS), "--output", str(folder / "all")]
    )
    return model, folder / "all"


def fastest(folder):
    """The format an export folder runs by default: the fastest timed at export (on this machine)."""
    timing = json.loads((folder / "tfseg.json").read_text())["timing"]["median_ms"]
    return min(timing, key=timing.get)


@pytest.fixture(scope="module")
def image():
    return polyp_sample(np.random.default_rng(3), 75, 103)[0]


def test_every_format_is_written_with_metadata(exported):
    model, folder = exported
    check_export_parity(model, random_images(1, INPUT_SIZE, INPUT_SIZE), folder, (INPUT_SIZE, INPUT_SIZE))
    assert {p.name for p in folder.iterdir()} == {
        "model.keras",
        "savedmodel",
        "model.onnx",
        "model.tflite",
        "tfseg.json",
    }
    metadata = json.loads((folder / "tfseg.json").read_text())
    assert metadata["input_size"] == [INPUT_SIZE] * 2 and metadata["normalization"] == "tf"
    import onnx

    embedded = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert json.loads(embedded["tfseg"]) == {
        key: value for key, value in metadata.items() if key not in ("files", "timing")
    }
    assert set(metadata["files"]) == set(FORMATS) and all(
        entry["fingerprint"].startswith("sha256:") for entry in metadata["files"].values()
    )


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
    assert Predictor.load(folder).runtime.name == fastest(folder)
    onnx_alone = folder.parent / "alone"
    onnx_alone.mkdir()
    os.link(folder / "model.onnx", onnx_alone / "model.onnx")  # no tfseg.json: the embedded metadata serves
    np.testing.assert_allclose(
        Predictor.load(onnx_alone / "model.onnx").predict(image),
        Predictor.load(folder, runtime="onnx").predict(image),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match=r"exported for input size \(64, 64\), not \(96, 96\)"):
        Predictor.load(folder / "model.tflite", input_size=96)
    assert Predictor.load(folder / "savedmodel", input_size=96).predict(image).shape == (75, 103)


def test_the_keras_runtime_runs_a_fixed_size_model_at_static_sizes(exported, image):
    """A PraNet's Keras runtime traces its model at the input's static height and width: native resizes, no
    gathers (faster, docs/BENCHMARKS.md); the same probabilities as the SavedModel's any-size `serve`."""
    _, folder = exported
    predictor = Predictor.load(folder, runtime="keras")
    np.testing.assert_allclose(
        predictor.predict(image), Predictor.load(folder, runtime="savedmodel").predict(image), atol=1e-5
    )
    (function,) = predictor.runtime._functions.values()
    ops = {op.type for op in function.get_concrete_function().graph.get_operations()}
    assert "ResizeBilinear" in ops and "GatherV2" not in ops


def test_the_savedmodel_runtime_runs_serve_prediction_and_older_exports_serve(exported, tmp_path):
    """The SavedModel runtime computes the prediction map alone (`serve_prediction`: PraNet's three side maps,
    resized to the input, cost ~2 % of a call, docs/BENCHMARKS.md); an export made before that endpoint runs
    `serve` and picks the prediction output."""
    _, folder = exported
    loaded = tf.saved_model.load(str(folder / "savedmodel"))
    x = tf.constant(random_images(2, INPUT_SIZE, INPUT_SIZE))
    np.testing.assert_allclose(loaded.serve_prediction(x), loaded.serve(x)[-1], atol=1e-6)
    # Told apart by their outputs: a module whose two endpoints differ
    signature = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    older = tf.Module()
    older.serve = tf.function(lambda x: [x - 1.0, x + 1.0], input_signature=signature)
    tf.saved_model.save(older, str(tmp_path / "older"))
    newer = tf.Module()
    newer.serve, newer.serve_prediction = older.serve, tf.function(lambda x: 3.0 * x, input_signature=signature)
    tf.saved_model.save(newer, str(tmp_path / "newer"))
    ones = np.ones((1, 4, 4, 3), "float32")
    np.testing.assert_array_equal(SavedModelRuntime(tmp_path / "older", -1)(ones), ones + 1.0)
    np.testing.assert_array_equal(SavedModelRuntime(tmp_path / "newer", -1)(ones), 3.0 * ones)


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


def test_a_replica_runs_its_own_runtime_of_the_same_file(exported, image):
    """The video's second model worker: the same file opened again with its own threads; the TensorFlow
    runtimes have none (their calls share TensorFlow's thread pool)."""
    model, folder = exported
    for runtime in ("tflite", "onnx"):
        predictor = Predictor.load(folder, runtime=runtime)
        replica = predictor.replica(1)
        assert replica.runtime is not predictor.runtime and replica.runtime.name == runtime
        assert replica.runtime.threads == 1 and replica.runtime.path == predictor.runtime.path
        np.testing.assert_allclose(replica.predict(image), predictor.predict(image), atol=1e-6)
    assert Predictor(KerasRuntime(model, -1), INPUT_SIZE, "tf", "sigmoid", "polyp").replica(1) is None


def test_export_fails_loudly_beyond_the_tolerance(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ExportMismatchError, match="keras export .* differs from the Keras model"):
        export(model, str(tmp_path / "x"), ["keras"], INPUT_SIZE, tolerance=-1.0)
    with pytest.raises(SystemExit, match="Model not found"):
        export_model.main(["--model", str(tmp_path / "missing.keras"), "--output", str(tmp_path / "y")])


def test_an_input_size_pranet_cannot_take_is_one_error_line(exported, tmp_path, image):
    """PraNet's decoder needs heights and widths divisible by 32 (other sizes fail inside the graph for ResNet50
    and most for MobileNetV2: infer_image at 300 ended in TensorFlow's traceback): inference, an export and a new
    model refuse any other size with one line."""
    _, folder = exported
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "polyp.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    message = r"error: input size 300 x 300: PraNet takes heights and widths divisible by 32"
    for runtime in ("savedmodel", "keras"):
        with pytest.raises(SystemExit, match=message):
            infer_image.main(
                ["--model", str(folder), "--runtime", runtime, "--inputsize", "300", "--image", str(images)]
                + ["--output", str(tmp_path / runtime), "--quiet"]
            )
        assert not (tmp_path / runtime).exists()
    with pytest.raises(SystemExit, match=message):
        export_model.main(["--model", str(folder), "--inputsize", "300", "--output", str(tmp_path / "export")])
    assert not (tmp_path / "export").exists()
    with pytest.raises(ValueError, match="input size 300 x 300: PraNet takes"):
        PraNet("mobilenetv2", backbone_weights=None, input_size=300)
    assert Predictor.load(folder, runtime="savedmodel", input_size=96).predict(image).shape == image.shape[:2]


def test_a_pranet_saved_at_a_size_its_backbone_happened_to_take_still_loads(tmp_path, image, caplog):
    """Before sizes were checked, a PraNet-MobileNetV2 could be trained and saved at 100 (its "same" padding
    lines the maps up there): the file loads with a warning, runs and exports at its own size; other sizes not
    divisible by 32 stay refused."""
    model = PraNet("mobilenetv2", backbone_weights=None, input_size=96)
    model.input_size = (100, 100)  # what get_config recorded before the check
    model.save(tmp_path / "old.keras")
    with caplog.at_level("WARNING", logger="tfseg.models.pranet"):
        predictor = Predictor.load(tmp_path / "old.keras")
    assert "input size 100 x 100: PraNet takes heights and widths divisible by 32" in caplog.text
    assert predictor.input_size == (100, 100) and predictor.predict(image).shape == image.shape[:2]
    export_model.main(
        ["--model", str(tmp_path / "old.keras"), "--formats", "savedmodel", "--output", str(tmp_path / "e")]
    )
    assert Predictor.load(tmp_path / "e").predict(image).shape == image.shape[:2]
    with pytest.raises(ValueError, match="input size 300 x 300: PraNet takes"):
        Predictor.load(tmp_path / "old.keras", input_size=300)
    model.input_size = (0, 0)  # no size it could have run at: refused on loading as before
    model.save(tmp_path / "broken.keras")
    with pytest.raises(ValueError, match="input size 0 x 0: PraNet takes"):
        Predictor.load(tmp_path / "broken.keras")


@pytest.mark.parametrize("activation, channels", [("sigmoid", 1), ("softmax", 2)])
@pytest.mark.parametrize("size", [(75, 103), (360, 480)])
def test_host_probabilities_equal_the_graphs_and_torchs(activation, channels, size):
    """The Predictor's post-processing (OpenCV, numpy) gives the probabilities of the SavedModel's graph
    (TensorFlow) and of PraNet's test script (torch's bilinear upsample, then sigmoid), down and up; logits far
    beyond exp's float32 range give 0 and 1, no NaN."""
    logits = np.random.default_rng(0).normal(0, 8, (2, 88, 88, channels)).astype(np.float32)
    logits[0, :4, :4] = [-200, 200][:channels] if channels == 2 else -200
    logits[0, -4:, -4:] = 200
    host = host_probabilities(logits, size, activation)
    graph = logits_to_probability(logits, size, activation).numpy()[..., 0]
    assert host.shape == (2, *size) and np.isfinite(host).all()
    np.testing.assert_allclose(host, graph, atol=1e-3)  # float32 rounding; a saved map's grey level is 4e-3
    assert host[0, 0, 0] == (1.0 if channels == 2 else 0.0) and host[0, -1, -1] == (1.0 if channels == 1 else 0.5)
    torch = pytest.importorskip("torch")
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(logits).permute(0, 3, 1, 2), size, mode="bilinear")
    reference = (upsampled.softmax(1)[:, 1] if activation == "softmax" else upsampled.sigmoid()[:, 0]).numpy()
    np.testing.assert_allclose(host, reference, atol=1e-3)


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
    infer_image.main(
        [
            "--model",
            str(folder),
            "--image",
            str(images),
            "--output",
            str(tmp_path / "out"),
            "--threshold",
            str(threshold),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    segmented = f"2 image(s) segmented with {fastest(folder)}"
    assert segmented in printed and "1 skipped" in printed and "broken.png" in printed
    mask = cv2.imread(str(tmp_path / "out" / "polyp1_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(mask)) == {0, 255} and mask.shape == (90, 96)
    np.testing.assert_array_equal(mask > 0, probability >= threshold)
    stored = cv2.imread(str(tmp_path / "out" / "polyp1_prob.png"), cv2.IMREAD_GRAYSCALE)
    assert np.max(np.abs(stored / 255.0 - probability)) <= 0.5 / 255 + 1e-6
    overlay = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "polyp1_overlay.png")), cv2.COLOR_BGR2RGB)
    inside = cv2.erode(mask, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    # (away from the contour line, which runs along the image's edge too)
    outside = cv2.dilate(mask, np.ones((7, 7), np.uint8)) == 0  # away from the contour line: untouched
    decoded = cv2.cvtColor(cv2.imread(str(images / "polyp1.jpg")), cv2.COLOR_BGR2RGB)
    green_fill = 0.6 * decoded[inside] + 0.4 * np.array([0, 255, 0])  # alpha 0.4
    assert np.abs(overlay[inside] - green_fill).max() <= 1
    np.testing.assert_array_equal(overlay[outside], decoded[outside])


def test_infer_video_overlays_every_frame_and_reports(exported, tmp_path, capsys):
    _, folder = exported
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=12, size=(96, 128))
    capture = cv2.VideoCapture(str(clip))
    first = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB)
    capture.release()
    threshold = float(np.median(Predictor.load(folder).predict(first)))
    report_path = tmp_path / "report.json"
    infer_video.main(
        [
            "--model",
            str(folder),
            "--video",
            str(clip),
            "--output",
            str(tmp_path / "out" / "o.mp4"),
            "--threshold",
            str(threshold),
            "--batchsize",
            "4",
            "--smooth",
            "0.5",
            "--report",
            str(report_path),
        ]
    )
    report = json.loads(report_path.read_text())
    assert report["frames_in"] == report["frames_out"] == report["frames_segmented"] == 12
    assert not report["live"] and report["frames_skipped"] == 0
    assert report["runtime"] == fastest(folder) and report["codec"] in ("avc1", "mp4v") and not report["interrupted"]
    # a TFLite or ONNX file runs in two model workers on 2 cores or more, the TensorFlow runtimes in one
    file_runtime = report["runtime"] in ("tflite", "onnx")
    assert report["model_workers"] == (2 if file_runtime and cpu_threads() >= 2 else 1)
    for key in ("model_ms_mean", "model_ms_p95", "e2e_fps", "model_fps", "latency_ms_mean", "latency_ms_p95"):
        assert report[key] > 0
    assert '"frames_out": 12' in capsys.readouterr().out
    capture = cv2.VideoCapture(str(tmp_path / "out" / "o.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    out = cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB)
    capture.release()
    # the overlay's green fill shows, and the HUD darkens a band at the top left
    assert out[30:, :, 1].astype(int).mean() > first[30:, :, 1].astype(int).mean() + 10
    assert out[:8, :40].mean() < first[:8, :40].mean() - 20


class FakeRuntime:
    name, threads = "fake", None


class FakeFileRuntime(FakeRuntime):
    def with_threads(self, threads):
        runtime = FakeFileRuntime()
        runtime.threads = threads
        return runtime


class FakePredictor:
    """A Predictor stand-in whose model gives logits of `logit` everywhere after `seconds`, and raises
    KeyboardInterrupt (Ctrl-C) on its call number `interrupt_on`, RuntimeError on `fail_on`. With `replicas`
    [(seconds, fail_on), ...] it has replicas (as a TFLite or ONNX file's), made in that order into `made`."""

    tta = False

    def __init__(self, seconds=0.0, interrupt_on=None, replicas=(), logit=2.0, fail_on=None):
        self.seconds, self.interrupt_on, self.calls, self.model_seconds = seconds, interrupt_on, 0, seconds or 0.01
        self.logit, self.fail_on, self.replicas, self.made = logit, fail_on, list(replicas), []
        self.runtime = FakeFileRuntime() if replicas else FakeRuntime()

    def replica(self, threads):
        seconds, fail_on = self.replicas[len(self.made)]
        replica = FakePredictor(seconds, logit=self.logit, fail_on=fail_on)
        replica.runtime = self.runtime.with_threads(threads)
        self.made.append(replica)
        return replica

    def prepare(self, images):
        return images

    def logits(self, x, tta=None):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        if self.calls == self.fail_on:
            raise RuntimeError("the model failed")
        time.sleep(self.seconds)
        return np.full((*x.shape[:3], 1), self.logit, np.float32)

    def finish(self, logits, size, count=None):
        return 1 / (1 + np.exp(-logits[..., 0]))


def frame_count(path):
    capture = cv2.VideoCapture(str(path))  # finalised, so readable
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    capture.release()
    return count


def test_ctrl_c_keeps_the_frames_done_and_releases_the_video(tmp_path):
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=10, size=(48, 64))
    report = segment_video(FakePredictor(interrupt_on=3), str(clip), str(tmp_path / "o.avi"))
    assert report["interrupted"] and report["frames_out"] == 2 and report["codec"] == "MJPG"
    assert frame_count(tmp_path / "o.avi") == 2


def test_model_workers_finishing_out_of_order_keep_the_frames_order(tmp_path):
    """Two model workers, one 0.05 s a call, the other at once: batches finish out of order, the video keeps
    the order read (frame i of the clip is grey level 8 i, left as it is: no polyp found)."""
    clip = tmp_path / "grey.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (48, 32))
    for i in range(24):
        writer.write(np.full((32, 48, 3), 8 * i, np.uint8))
    writer.release()
    predictor = FakePredictor(replicas=[(0.05, None), (0.0, None)], logit=-2.0)
    report = segment_video(predictor, str(clip), str(tmp_path / "o.avi"), model_workers=2)
    assert report["model_workers"] == 2 and report["model_threads"] == max(1, cpu_threads() // 2)
    assert report["frames_in"] == report["frames_out"] == 24
    capture = cv2.VideoCapture(str(tmp_path / "o.avi"))
    grey = np.array([capture.read()[1][24, 24, 1] for _ in range(24)], int)
    capture.release()
    assert np.all(np.abs(grey - 8 * np.arange(24)) <= 2), grey
    # two by default for a file on 2 cores or more; one live, or for a runtime that cannot be opened twice
    assert len(model_predictors(FakePredictor(replicas=[(0, None)] * 2), live=False)) == min(2, cpu_threads())
    assert len(model_predictors(FakePredictor(replicas=[(0, None)] * 2), live=True)) == 1
    assert len(model_predictors(FakePredictor(), live=False)) == 1
    for live, workers, message in ((True, 2, "one model worker"), (False, 0, "1 or more")):
        with pytest.raises(ValueError, match=message):
            model_predictors(FakePredictor(replicas=[(0, None)] * 2), live, workers)
    with pytest.raises(ValueError, match="fake runtime runs in one model worker"):
        segment_video(FakePredictor(), str(clip), str(tmp_path / "x.avi"), model_workers=2)
    # a worker whose model fails stops the video: the calling thread's (0.05 s a call) takes no more batches
    # (else the writer would hold every later frame for the batch that will not come); no file is left
    failing = FakePredictor(replicas=[(0.05, None), (0.0, 3)])
    with pytest.raises(RuntimeError, match="the model failed"):
        segment_video(failing, str(clip), str(tmp_path / "x.avi"), model_workers=2)
    assert failing.made[0].calls <= 2 and not (tmp_path / "x.avi").exists()


def test_live_video_segments_the_newest_frame_and_keeps_the_timing(tmp_path):
    """A model slower than the frame rate (0.1 s a frame, 25 fps): live, the frames it cannot keep up with are
    skipped, so each overlay is of a recent frame, and held until the next, so the video keeps every frame's
    place; a file segmented frame by frame falls further behind instead (its overlays come later and later)."""
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=16, size=(48, 64), fps=25.0)
    live = segment_video(FakePredictor(seconds=0.1), str(clip), str(tmp_path / "live.avi"), live=True)
    assert live["live"] and live["frames_in"] == live["frames_out"] == frame_count(tmp_path / "live.avi") == 16
    assert 0 < live["frames_segmented"] < 16 and live["frames_segmented"] + live["frames_skipped"] == 16
    every = segment_video(FakePredictor(seconds=0.1), str(clip), str(tmp_path / "every.avi"))
    assert not every["live"] and every["frames_skipped"] == 0
    assert every["frames_segmented"] == every["frames_out"] == frame_count(tmp_path / "every.avi") == 16
    assert live["latency_ms_p95"] < every["latency_ms_p95"]


def test_video_errors_are_clear(exported, tmp_path):
    _, folder = exported
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=2, size=(32, 32))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2000))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["--video", str(tmp_path / "missing.mp4")], "Video not found"),
        (["--video", str(corrupt)], "Cannot read video .*corrupt"),
        (["--video", "7"], "Camera 7 is not available"),
        (["--video", str(clip), "--output", str(blocker / "o.mp4")], "Cannot create the output folder"),
        (["--video", str(clip), "--output", str(tmp_path / "o.webm")], "Unsupported output extension"),
        (["--video", str(clip), "--live", "--batchsize", "4"], "live video segments the newest frame"),
        (["--video", str(clip), "--live", "--model_workers", "2"], "one model worker"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit, match=message):
            infer_video.main(["--model", str(folder / "model.tflite"), "--output", str(tmp_path / "o.mp4"), *args])


# ---------------------------------------------------------------- one model per export folder, checked files


def other_model(tmp_path):
    """A PraNet-MobileNetV2 with other weights than the fixture's, as a .keras file; returns (model, path)."""
    keras.utils.set_random_seed(1)
    model = moved_batchnorm_statistics(PraNet("mobilenetv2", backbone_weights=None), seed=1)
    path = tmp_path / "other.keras"
    model.save(path)
    return model, path


def same_weights(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))


def test_reexport_replaces_the_whole_folder_and_keeps_the_users_files(exported, tmp_path):
    """The defect: model.tflite of an earlier export stayed beside the new model.keras, and the folder ran it."""
    _, folder = exported
    target = tmp_path / "export"
    shutil.copytree(folder, target)
    (target / "NOTES.txt").write_text("trained on fold 3")
    model, source = other_model(tmp_path)
    export_model.main(["--model", str(source), "--formats", "keras", "--output", str(target)])
    assert {p.name for p in target.iterdir()} == {"model.keras", "tfseg.json", "NOTES.txt"}
    assert (target / "NOTES.txt").read_text() == "trained on fold 3"
    predictor = Predictor.load(target)  # fingerprints checked
    assert predictor.runtime.name == "keras" and same_weights(predictor.runtime.model, model)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]  # no staging folder left


def test_files_that_are_not_the_exported_ones_are_refused(exported, tmp_path, capsys):
    _, folder = exported
    target = tmp_path / "export"
    shutil.copytree(folder, target)
    with open(target / "model.onnx", "ab") as f:  # changed after the export
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="model.onnx is not the file exported with .*fingerprint differs"):
        Predictor.load(target, runtime="onnx")
    with pytest.raises(SystemExit, match="^error: .*model.onnx is not the file exported with"):
        infer_image.main(
            ["--model", str(target), "--runtime", "onnx", "--image", str(tmp_path), "--output", str(tmp_path / "out")]
        )
    shutil.copy(target / "model.tflite", target / "copy.tflite")  # in the folder, but not of the export
    with pytest.raises(ModelFileError, match="copy.tflite is not a file of the export described by"):
        Predictor.load(target / "copy.tflite")
    assert Predictor.load(target, runtime="tflite").runtime.name == "tflite"  # the checked files still load


KILLED_EXPORT = """
import keras
import tfseg.models
from tfseg.export import export_model
export_model(keras.models.load_model({source!r}), {target!r}, ["keras"], 64)
"""


@pytest.mark.parametrize("changes", [1, 3])
def test_kill_during_an_export_leaves_the_previous_export_whole(exported, tmp_path, changes):
    """Killed at the n-th change of the folder around the export, the export folder holds either the previous
    export or the new one, whole and checked, never a mixture or a truncated file."""
    model, folder = exported
    target = tmp_path / "export"
    target.mkdir()
    shutil.copy(folder / "model.keras", target)
    metadata = json.loads((folder / "tfseg.json").read_text())
    metadata["files"] = {"keras": metadata["files"]["keras"]}
    (target / "tfseg.json").write_text(json.dumps(metadata))
    replacement, source = other_model(tmp_path)
    outcome, stderr = kill_when_changed(
        KILLED_EXPORT.format(source=str(source), target=str(target)), tmp_path, changes=changes
    )
    assert outcome == "killed", stderr
    assert set(os.listdir(target)) == {"model.keras", "tfseg.json"}
    loaded = Predictor.load(target).runtime.model  # loads, its fingerprint checked
    assert same_weights(loaded, model) or same_weights(loaded, replacement)


# ---------------------------------------------------------------- careless paths


def test_export_refuses_what_it_would_destroy_and_says_why(exported, tmp_path):
    _, folder = exported
    data = tmp_path / "data"
    data.mkdir()
    (data / "image.png").write_bytes(b"a user's file")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    source = ["--model", str(folder / "model.keras")]
    cases = [
        (source + ["--output", str(data)], "is not empty and holds no tfseg export"),
        (source + ["--output", str(folder)], "holds the input .*model.keras"),
        (source + ["--formats", ",", "--output", str(tmp_path / "x")], "No export format given"),
        (source + ["--output", str(blocker / "x")], "Not a directory"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit, match=f"^error: .*{message}"):
            export_model.main(args)
    assert os.listdir(data) == ["image.png"] and not (tmp_path / "x").exists()


def test_infer_video_refuses_to_write_over_its_input(exported, tmp_path):
    _, folder = exported
    clip, _ = write_polyp_video(tmp_path / "clip.mp4", frames=2, size=(32, 32))
    content = clip.read_bytes()
    os.symlink(clip, tmp_path / "link.mp4")
    for output in (clip, tmp_path / "link.mp4"):
        with pytest.raises(SystemExit, match="^error: The output .* would overwrite the input"):
            infer_video.main(["--model", str(folder / "model.tflite"), "--video", str(clip), "--output", str(output)])
    with_report = lambda report: [
        *["--model", str(folder / "model.tflite"), "--video", str(clip)],
        *["--output", str(tmp_path / "o.mp4"), "--report", str(report)],
    ]
    with pytest.raises(SystemExit, match="^error: The report .* would overwrite the input"):
        infer_video.main(with_report(clip))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="^error: Cannot create the output folder"):  # before any frame
        infer_video.main(with_report(blocker / "report.json"))
    assert clip.read_bytes() == content and not (tmp_path / "o.mp4").exists()


def test_infer_image_keeps_inputs_that_share_a_stem_apart(exported, tmp_path, capsys):
    """The defect: polyps3.jpg and polyps3.png wrote to the same polyps3_*.png files ("9 segmented", 8 written)."""
    _, folder = exported
    images = tmp_path / "images"
    images.mkdir()
    for index, ext in enumerate(("jpg", "png")):
        rgb = polyp_sample(np.random.default_rng(index), 48, 64)[0]
        cv2.imwrite(str(images / f"polyps3.{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cut = images / "cut.jpg"
    cv2.imwrite(str(cut), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cut.write_bytes(cut.read_bytes()[:300])  # header intact, data cut: OpenCV would decode it half grey
    infer_image.main(["--model", str(folder), "--image", str(images), "--output", str(tmp_path / "out"), "--quiet"])
    printed = capsys.readouterr().out
    assert f"2 image(s) segmented with {fastest(folder)}: 6 file(s) written" in printed and "cut.jpg" in printed
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        f"polyps3_{ext}_{kind}.png" for ext in ("jpg", "png") for kind in ("mask", "prob", "overlay")
    )
    mixed = tmp_path / "mixed"  # an image and its mask from an earlier run, the output folder the same
    mixed.mkdir()
    shutil.copy(images / "polyps3.png", mixed / "polyps3.png")
    shutil.copy(tmp_path / "out" / "polyps3_png_mask.png", mixed / "polyps3_mask.png")
    with pytest.raises(SystemExit, match="^error: The output .*polyps3_mask.png would overwrite the input"):
        infer_image.main(["--model", str(folder), "--image", str(mixed), "--output", str(mixed), "--quiet"])
