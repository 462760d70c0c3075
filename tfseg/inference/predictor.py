"""`Predictor`: a trained model plus its training-time preprocessing -> probability maps at the image's size.

Loads a `.keras` file, a PraNet `.weights.h5` (with its backbone named), a SavedModel folder, an `.onnx` or a
`.tflite` file (float or quantised), or an export folder holding several of them (the fastest on this machine is
picked: `pick_export`). The metadata
written at export (`tfseg.json` beside the files, also inside the ONNX file) gives the input size, the
backbone normalisation, the task, which output is the prediction and its activation, and a fingerprint of each
model file: a file that is not the one exported with that metadata is refused, never run with it. Pre- and
post-processing are the same for every runtime: TensorFlow's antialiased resize in, OpenCV's bilinear resize out.
"""

import copy
import json
import logging
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from tfseg.files import METADATA_FILE, ModelFileError, check_fingerprint, read_metadata
from tfseg.inference.runtimes import (
    CPU_PREFERENCE,
    GPU_PREFERENCE,
    KerasRuntime,
    OnnxRuntime,
    SavedModelRuntime,
    TFLiteRuntime,
    importable,
    machine,
    median_latencies,
)
from tfseg.models.spec import check_input_size, size_pair
from tfseg.preprocessing import normalize

EXPORT_FILES = {
    "tflite": "model.tflite",
    "onnx": "model.onnx",
    "savedmodel": "savedmodel",
    "keras": "model.keras",
    "tflite_int8": "model_int8.tflite",  # tfseg.quantization
    "tflite_fp16": "model_fp16.tflite",
    "onnx_int8": "model_int8.onnx",
}
FORMAT_OF_FILE = {file: name for name, file in EXPORT_FILES.items()}
RETIMED = ("tflite", "onnx")  # runtimes cheap to load: re-timed at load when the export's timing does not apply
RETIME_RUNS = 3
log = logging.getLogger(__name__)


def prepare_images(images, input_size, normalization):
    """uint8 RGB batch -> float32 model input: resized to `input_size` (bilinear with antialiasing, as PIL's
    resize in PraNet's loaders; None keeps the size), normalised as the backbone was trained."""
    x = tf.cast(images, tf.float32)
    if input_size is not None:
        x = tf.image.resize(x, size_pair(input_size), "bilinear", antialias=True)
    return normalize(x, normalization)


def logits_to_probability(logits, size, activation):
    """(B, h, w, C) logits -> (B, *size, 1) foreground probabilities: bilinear resize (half-pixel centres = torch
    `align_corners=False`, as PraNet's test script), then sigmoid (one channel) or softmax (channel 1)."""
    logits = tf.image.resize(tf.cast(logits, tf.float32), size, "bilinear")
    return tf.nn.softmax(logits)[..., 1:2] if activation == "softmax" else tf.sigmoid(logits)


def host_probabilities(logits, size, activation):
    """`logits_to_probability` on the host, without a TensorFlow call (a video frame: 0.6 -> 0.1 ms): (B, h, w, C)
    numpy logits -> (B, *size) probabilities. OpenCV's bilinear resize has the same half-pixel centres; the three
    resizes (OpenCV, TensorFlow, torch's `F.upsample` in PraNet's test script) differ by float32 rounding only."""
    height, width = size_pair(size)
    probabilities = np.empty((len(logits), height, width), np.float32)
    with np.errstate(over="ignore"):  # exp -> inf: a probability of 0
        for maps, out in zip(np.asarray(logits, np.float32), probabilities):
            resized = cv2.resize(maps, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
            if activation == "softmax":  # channel 1: 1 / sum_c exp(l_c - l_1)
                out[:] = 1.0 / np.exp(resized - resized[..., 1:2]).sum(-1)
            else:
                out[:] = 1.0 / (1.0 + np.exp(-resized[..., 0]))
    return probabilities


def probability_map(images, size, logits_fn, spec):
    """uint8 RGB batch (B, H, W, 3) -> (B, *size, 1) probabilities of the prediction output of `logits_fn`, with
    the preprocessing of the inference `spec` (tfseg.models.spec)."""
    logits = logits_fn(prepare_images(images, spec["input_size"], spec["normalization"]))[spec["prediction_output"]]
    return logits_to_probability(logits, size, spec["activation"])


def load_keras_model(path, backbone=None):
    """A `.keras` file (any tfseg model: it carries its config and inference spec), or a PraNet on `backbone`
    filled from a `.weights.h5` file (a training run's best.weights.h5, or the original weights converted by
    convert_weights.py): weights alone need their model named."""
    import tfseg.models  # registers the tfseg layers for deserialisation

    if path.suffix == ".keras":
        return keras.models.load_model(path)
    if path.name.endswith(".weights.h5"):
        if backbone is None:
            raise ValueError(
                f"{path} holds weights only, not the model they belong to: for a PraNet name its "
                f"backbone ({', '.join(tfseg.models.BACKBONES)}); for EAR-Net give the run's "
                "export/model.keras"
            )
        model = tfseg.models.PraNet(backbone, backbone_weights=None)
        model.load_weights(path)
        return model
    raise ValueError(
        f"Unsupported model file {path}: expected .keras, .weights.h5, .onnx, .tflite, a SavedModel or an export folder"
    )


SPEC_NAMES = ("task", "normalization", "prediction_output", "activation", "input_size")  # tfseg.models.spec


def spec_of(metadata, source):
    """The inference spec (tfseg.models.spec) in an export's metadata; exports before the spec had its names name
    the prediction output "prediction_index"."""
    spec = {**metadata}
    if "prediction_output" not in spec and "prediction_index" in spec:
        spec["prediction_output"] = spec["prediction_index"]
    missing = [name for name in SPEC_NAMES if name not in spec]
    if missing:
        raise ModelFileError(
            f"The metadata of {source} lacks {', '.join(missing)} (an export of an older tfseg): export the model again"
        )
    return {name: spec[name] for name in SPEC_NAMES}


def pick_export(folder, metadata, runtime=None):
    """The file of `runtime` in an export folder, or of the fastest runtime available there: by the latencies
    measured at export (tfseg.json "timing") when they were measured on this kind of machine (`machine`);
    otherwise, on a CPU, by timing its ONNX and TFLite files here (a few batch-1 calls each, after their
    fingerprints are checked), else in the fixed order CPU_PREFERENCE / GPU_PREFERENCE. Only the files that its
    tfseg.json lists count (all known names for exports that list none)."""
    listed = (metadata or {}).get("files")
    names = {name: entry["path"] for name, entry in listed.items()} if listed is not None else EXPORT_FILES
    available = {name: folder / file for name, file in names.items() if (folder / file).exists()}
    if runtime is not None:
        if runtime not in available:
            raise FileNotFoundError(
                f"{folder} has no {EXPORT_FILES[runtime]} model (it has: {', '.join(available) or 'none'})"
            )
        return available[runtime]
    candidates = {name: path for name, path in available.items() if importable(name)}
    if not candidates:
        raise FileNotFoundError(f"{folder} holds no exported model ({', '.join(EXPORT_FILES.values())})")
    timing = (metadata or {}).get("timing") or {}
    here = machine()
    measured = {name: ms for name, ms in timing.get("median_ms", {}).items() if name in candidates}
    if measured and timing.get("machine") == here:
        fastest = min(measured, key=measured.get)
        log.info("Runs %s: the fastest here as timed at export (%s)", fastest, _milliseconds(measured))
        return candidates[fastest]
    why = "no timing at export" if not measured else f"timed at export on another machine ({timing.get('machine')})"
    cheap = {name: path for name, path in candidates.items() if name.startswith(RETIMED)}
    size = timing.get("input_size") or (metadata or {}).get("input_size")
    if cheap and size and not here["gpus"]:
        measured = _retime(cheap, metadata, size)
        fastest = min(measured, key=measured.get)
        log.info(
            "Runs %s, the fastest of the ONNX and TFLite files timed now (%s; %s)",
            fastest,
            _milliseconds(measured),
            why,
        )
        return candidates[fastest]
    fastest = next(name for name in (GPU_PREFERENCE if here["gpus"] else CPU_PREFERENCE) if name in candidates)
    log.info("Runs %s, the first of the fixed order for this machine (%s)", fastest, why)
    return candidates[fastest]


def _retime(paths, metadata, input_size):
    """{name: median ms} of batch-1 calls at `input_size` of the files {name: path}, each checked against the
    metadata beside it first."""
    runtimes = {}
    for name, path in paths.items():
        check_fingerprint(path, read_metadata(path))
        runtimes[name] = load_runtime(path, metadata=metadata)[0]
    return median_latencies(runtimes, size_pair(input_size), runs=RETIME_RUNS, warmup=1)


def _milliseconds(latencies):
    return ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(latencies.items(), key=lambda item: item[1]))


def load_runtime(path, backbone=None, metadata=None):
    """(runtime, metadata) for one model file or SavedModel folder."""
    path = Path(path)
    if path.is_dir():
        if metadata is None:
            raise FileNotFoundError(
                f"{path} has no {METADATA_FILE}: not a SavedModel exported by tfseg (its preprocessing is unknown)"
            )
        return SavedModelRuntime(path, spec_of(metadata, path)["prediction_output"]), metadata
    if path.suffix == ".onnx":
        runtime = OnnxRuntime(path)
        embedded = runtime.metadata.get("tfseg")
        metadata = metadata or (json.loads(embedded) if embedded else None)
    elif path.suffix == ".tflite":
        runtime = TFLiteRuntime(path)
    else:
        model = load_keras_model(path, backbone)
        metadata = metadata or model.inference_spec()
        fixed_size = metadata.get("input_size") is not None
        return KerasRuntime(model, model.prediction_output, fixed_size), metadata
    if metadata is None:
        raise FileNotFoundError(
            f"No {METADATA_FILE} beside {path}: its preprocessing is unknown (export it "
            "with export_model.py, which writes one)"
        )
    runtime.name = FORMAT_OF_FILE.get(path.name, runtime.name)  # "tflite_int8" for model_int8.tflite
    return runtime, metadata


def size_multiple(runtime, metadata):
    """(multiple, architecture): what the model's input heights and widths must be multiples of
    (tfseg.models.spec.InferenceSpec.size_multiple; None: any size, or unknown), from the Keras model or the
    registered class of the export's architecture."""
    model = getattr(runtime, "model", None)
    if isinstance(model, keras.Model):
        return getattr(model, "size_multiple", None), type(model).__name__
    architecture = metadata.get("architecture")
    model_class = keras.saving.get_registered_object(f"tfseg>{architecture}") if architecture else None
    return getattr(model_class, "size_multiple", None), architecture


class Predictor:
    """Probability maps from a trained model with the preprocessing it was trained with.

    `predict(image, size=None)`: HxWx3 uint8 RGB -> float32 probabilities at `size` (default the image's);
    `predict_batch(images)` for several; `tta=True` averages with the horizontally flipped image's prediction.
    `prepare`, `logits` (the runtime, with TTA) and `finish` are its steps, for pipelines that run them in
    different threads; `model_seconds` is the time the last batch spent in the runtime alone.
    """

    def __init__(self, runtime, input_size, normalization, activation, task, source=None, tta=False, metadata=None):
        self.runtime, self.normalization, self.activation = runtime, normalization, activation
        self.metadata = metadata or {}  # the export's tfseg.json: spec, files, how it was trained ("training")
        self.input_size = None if input_size is None else size_pair(input_size)
        if runtime.input_size is not None and self.input_size != runtime.input_size:
            raise ValueError(
                f"{source} was exported for input size {runtime.input_size}, not {self.input_size}: "
                "export it again with --input_size, or use the SavedModel or .keras file"
            )
        # a size chosen now must suit the architecture; the model's own (it was trained or exported at it) ran
        check_input_size(self.input_size, *size_multiple(runtime, self.metadata), self.metadata.get("input_size"))
        self.task, self.source, self.tta, self.model_seconds = task, source, tta, 0.0
        self._prepare = tf.function(
            lambda images: prepare_images(images, self.input_size, normalization),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
        )

    @classmethod
    def load(cls, path, input_size=None, backbone=None, runtime=None, tta=False):
        """A model file, a SavedModel folder, an export folder (`runtime`: a format of EXPORT_FILES picks its
        file, default the fastest: `pick_export`) or a preset (a folder, an hf:// or kaggle:// handle or a registry
        name: tfseg.models.preset); `input_size` overrides the training size of the metadata."""
        from tfseg.models import preset

        if preset.is_handle(path):
            return cls.load_preset(path, input_size, runtime, tta)
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Model not found: {path}")
        metadata = export_metadata = read_metadata(path)
        if path.is_dir() and not (path / "saved_model.pb").is_file():
            path = pick_export(path, metadata, runtime)
            metadata = read_metadata(path)  # a SavedModel's own
        check_fingerprint(path, metadata)
        model_runtime, metadata = load_runtime(path, backbone, metadata)
        spec = spec_of(metadata, path)
        input_size = input_size or model_runtime.input_size or spec["input_size"]
        return cls(
            model_runtime,
            input_size,
            spec["normalization"],
            spec["activation"],
            spec["task"],
            str(path),
            tta,
            {**(metadata or {}), **(export_metadata or {})},
        )

    @classmethod
    def load_preset(cls, handle, input_size=None, runtime=None, tta=False):
        """A preset (tfseg.models.preset), run by Keras; its tfseg.json (with the training record) as metadata."""
        from tfseg.models import preset

        if runtime not in (None, "keras"):
            raise ValueError(
                f"{handle} is a preset (Keras weights): it runs with --runtime keras; for {runtime} export it "
                "first (export_model.py --model PRESET)"
            )
        model, metadata = preset.load(handle)
        metadata = metadata or model.inference_spec()
        spec = spec_of(metadata, handle)
        input_size = input_size or spec["input_size"]
        return cls(
            KerasRuntime(model, spec["prediction_output"], input_size is not None),
            input_size,
            spec["normalization"],
            spec["activation"],
            spec["task"],
            str(handle),
            tta,
            metadata,
        )

    @property
    def threshold(self):
        """The threshold chosen on validation at training (tfseg.json), or None."""
        return (self.metadata.get("training") or {}).get("threshold", {}).get("value")

    def replica(self, threads):
        """This predictor over a runtime of its own with `threads` threads (the same file opened again), for a
        second model worker in the video pipeline; None for the TensorFlow runtimes (Keras, SavedModel), whose
        calls already share TensorFlow's thread pool."""
        if not hasattr(self.runtime, "with_threads"):
            return None
        replica = copy.copy(self)
        replica.runtime, replica.model_seconds = self.runtime.with_threads(threads), 0.0
        return replica

    def prepare(self, images):
        """uint8 RGB batch (B, H, W, 3) -> the model's input batch (numpy)."""
        return self._prepare(tf.constant(images)).numpy()

    def logits(self, x, tta=None):
        """The runtime on a prepared batch; with TTA also on its mirror image, whose logits are flipped back and
        appended (2B maps). Times the runtime alone into `model_seconds`."""
        flip = self.tta if tta is None else tta
        start = time.perf_counter()
        logits = self.runtime(np.concatenate([x, x[:, :, ::-1]]) if flip else x)
        self.model_seconds = time.perf_counter() - start
        return np.concatenate([logits[: len(x)], logits[len(x) :, :, ::-1]]) if flip else logits

    def finish(self, logits, size, count=None):
        """The model's logits -> (count, *size) probabilities; 2 x count maps (TTA) are averaged in pairs."""
        probabilities = host_probabilities(logits, size, self.activation)
        count = count or len(probabilities)
        return probabilities if len(probabilities) == count else (probabilities[:count] + probabilities[count:]) / 2

    def predict_batch(self, images, size=None, tta=None):
        """Images of one size (a list or a (B, H, W, 3) uint8 array) -> (B, *size) probabilities."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"Expected HxWx3 uint8 RGB images, got {images.dtype} {images.shape}")
        size = images.shape[1:3] if size is None else size
        return self.finish(self.logits(self.prepare(images), tta), size, len(images))

    def predict(self, image, size=None, tta=None):
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"Expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        return self.predict_batch(image[None], size, tta)[0]
