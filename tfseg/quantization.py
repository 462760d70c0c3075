"""Quantised exports and the Dice gate they pass before an export keeps them.

| format      | file              | float counterpart | what                                                          |
|-------------|-------------------|-------------------|---------------------------------------------------------------|
| tflite_int8 | model_int8.tflite | tflite            | full-integer TFLite: int8 weights and activations (builtin    |
|             |                   |                   | int8 ops only), calibrated; float32 input and output          |
| tflite_fp16 | model_fp16.tflite | tflite            | float16 weights (XNNPACK computes in float32)                 |
| onnx_int8   | model_int8.onnx   | onnx              | ONNX Runtime static quantisation (QDQ, per-channel 7-bit int8 |
|             |                   |                   | weights, uint8 activations, MinMax), calibrated               |

Both int8 formats are calibrated on the same images (`calibration_inputs`): training images prepared exactly as
inference prepares them (`tfseg.inference.predictor.prepare_images`: resize to the export's input size, the model's
normalisation). Their input and output stay float32 (the quantise and dequantise steps are inside the file), so
every runtime runs them as it runs the float files.

A quantised file is never judged by its logits: `check` scores it and its float counterpart on validation images
with the evaluation protocol of the model's task (tfseg.evaluation: polyp meanDice over 256 thresholds and
dice@0.5; vessel: pooled F1 = Dice) and refuses (QuantizationError) a file that loses more than
`max_dice_drop` in either.

An export made for another input size than the model was trained at (`--input_size`, e.g. a smaller one for real
time on a slower CPU), float or quantised, has that change scored too (`input_size_change`): the Keras model at
its training size vs at the export's, on the same validation images; a loss beyond `max_dice_drop` is a warning,
not a refusal (the size is the user's choice of speed over Dice).
"""

import dataclasses
import json
import logging
import os
import random

import numpy as np
import tensorflow as tf

from tfseg.data import layouts
from tfseg.data.imageio import image_size, read_mask, read_rgb
from tfseg.data.sources import DatasetError
from tfseg.evaluation import polyp, vessel
from tfseg.inference.images import find_images
from tfseg.inference.predictor import Predictor, prepare_images
from tfseg.inference.runtimes import KerasRuntime
from tfseg.models.spec import size_text

log = logging.getLogger(__name__)
QUANTIZED = {"tflite_int8": "tflite", "tflite_fp16": "tflite", "onnx_int8": "onnx"}  # format: float counterpart
CALIBRATED = ("tflite_int8", "onnx_int8")
METRICS = ("meanDice", "dice@0.5")


class QuantizationError(ValueError):
    """A quantised file loses more Dice than allowed, or the images to calibrate or check it are missing."""


@dataclasses.dataclass
class QuantizationSettings:
    """What the quantised formats are calibrated and checked on. A folder not given comes from the training run
    the model was chosen in (`run_dir`, its args.json): its training images calibrate, its validation images
    check."""

    calibration: str = None  # a dataset folder (images/ with masks/, any tfseg.data layout) or of images
    validation: str = None  # a dataset folder: images and masks
    run_dir: str = None
    max_dice_drop: float = 0.01  # the largest loss of meanDice or dice@0.5 accepted
    calibration_images: int = 100  # at most this many (a seeded sample)


@dataclasses.dataclass
class GateData:
    """What `QuantizationSettings` come to: calibration image paths, validation pairs, where they are from."""

    calibration: list
    validation: list
    calibration_source: str
    validation_source: str
    max_dice_drop: float


def gate_data(settings, formats, task):
    """The calibration images (for the int8 formats among `formats`) and validation pairs of `settings`;
    QuantizationError when a folder is neither given nor known from a training run."""
    if settings.calibration_images < 1:
        raise QuantizationError(f"--calibration_images must be at least 1, got {settings.calibration_images}")
    calibrated = [name for name in formats if name in CALIBRATED]
    wanted = (("--calibration", calibrated and not settings.calibration), ("--validation", not settings.validation))
    missing = [flag for flag, needed in wanted if needed]
    run = None
    if missing:
        if not (settings.run_dir and os.path.isfile(os.path.join(settings.run_dir, "args.json"))):
            raise QuantizationError(
                f"{', '.join(name for name in formats if name in QUANTIZED)}: the images to "
                f"{'calibrate and ' if calibrated else ''}check on are not given, and the model comes from no "
                f"training run folder (args.json) to take them from: give {' and '.join(missing)} (folders "
                "with images/ and masks/)"
            )
        run = run_pairs(settings.run_dir, task)
    calibration, calibration_source = [], None
    if calibrated:
        if settings.calibration:
            calibration, calibration_source = calibration_files(settings.calibration), settings.calibration
        else:
            calibration = [pair.image for pair in run[0]]
            calibration_source = f"the training images of the run {settings.run_dir}"
        calibration = sample(calibration, settings.calibration_images)
    if settings.validation:
        validation, validation_source = validation_pairs(settings.validation), settings.validation
    else:
        validation, validation_source = run[1], f"the validation images of the run {settings.run_dir}"
    if not validation:
        raise QuantizationError(f"No validation images in {validation_source}")
    return GateData(calibration, validation, calibration_source, validation_source, settings.max_dice_drop)


def validation_pairs(folder):
    """The (image, mask) pairs of the dataset folder `folder` (any tfseg.data layout)."""
    try:
        return layouts.find_dataset(folder)
    except DatasetError as error:
        raise QuantizationError(f"--validation: {error}") from None


def calibration_files(folder):
    """The images of a dataset folder (any tfseg.data layout), else the images in `folder`."""
    if layouts.detect_layout(folder):
        return [pair.image for pair in layouts.find_dataset(folder)]
    try:
        return [str(path) for path in find_images(folder)]
    except FileNotFoundError as error:
        raise QuantizationError(f"--calibration: {error}") from None


def sample(paths, count):
    """At most `count` of `paths`: a seeded sample, in the paths' order."""
    paths = sorted(paths)
    return paths if len(paths) <= count else sorted(random.Random(0).sample(paths, count))


def run_pairs(run_dir, task):
    """(training, validation) pairs of the training run in `run_dir`, split as its args.json says."""
    with open(os.path.join(run_dir, "args.json")) as f:
        stored = json.load(f)
    # the training modules import tfseg.export, which imports this module
    try:
        if task == "polyp":
            from tfseg.training.pranet import PraNetConfig, load_pairs

            return load_pairs(PraNetConfig.from_stored(stored))
        from tfseg.training.earnet import EARNetConfig, split_pairs

        return split_pairs(EARNetConfig.from_stored(stored))[:2]
    except DatasetError as error:
        raise QuantizationError(
            f"The data of the run {run_dir} (its args.json): {error}; give --calibration and --validation"
        ) from None


def calibration_inputs(paths, spec):
    """The model inputs (1, h, w, 3) float32 of the images `paths`, prepared as inference prepares them."""
    return [prepare_images(read_rgb(path)[None], spec["input_size"], spec["normalization"]).numpy() for path in paths]


def export_tflite(converter, path, name, calibration):
    """Writes `tflite_int8` (calibrated on the model inputs `calibration`) or `tflite_fp16` with the TFLite
    `converter` of the model's prediction function."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "tflite_int8":
        converter.representative_dataset = lambda: ([x] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_types = [tf.float16]
    with open(path, "wb") as f:
        f.write(converter.convert())


class CalibrationReader:
    """onnxruntime's CalibrationDataReader (it checks for `get_next`) over the model inputs."""

    def __init__(self, inputs, name):
        self.batches = iter({name: x} for x in inputs)

    def get_next(self):
        return next(self.batches, None)


def export_onnx_int8(float_path, path, calibration):
    """Writes `onnx_int8`: the float ONNX file `float_path`, its shapes inferred and graph optimised by
    quant_pre_process (which makes the int8 file faster here), quantised static QDQ with uint8 activations and
    per-channel int8 weights of 7 bits (U8S8, the fast kind on x86 CPUs; `reduce_range` keeps the int16 sums of
    CPUs without VNNI from saturating, which cost Dice here: docs/BENCHMARKS.md), calibrated on the model inputs
    `calibration`; with the float file's metadata ("tfseg")."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = f"{path}.prepared.onnx"
    try:
        # symbolic shape inference fails on tf2onnx's graph (and leaves files in the working folder); ONNX's own
        # suffices: only the batch is dynamic
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            path,
            CalibrationReader(calibration, onnx.load(prepared).graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    quantized = onnx.load(path)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(onnx.load(float_path).metadata_props)  # the "tfseg" spec of the float file
    onnx.save(quantized, path)


def dice_scores(runtime, metadata, pairs):
    """{"meanDice", "dice@0.5"} of a runtime on the pairs, by the protocol of the model's task: probabilities at
    the mask's size through the Predictor's pre- and post-processing, then tfseg.evaluation (polyp: PraNet's
    uint8 map, meanDice over 256 thresholds and Dice at 0.5 averaged over images; vessel: the pooled F1 = Dice
    over 256 thresholds, their mean, and at 0.5)."""
    predictor = Predictor(
        runtime, metadata["input_size"], metadata["normalization"], metadata["activation"], metadata["task"]
    )
    scores = []
    for pair in pairs:
        probability = predictor.predict(read_rgb(pair.image), size=image_size(pair.mask))
        if metadata["task"] == "polyp":
            scores.append(polyp.score_image(polyp.prediction_map(probability), read_mask(pair.mask)))
        else:
            fov = read_mask(pair.fov) if pair.fov else None
            scores.append(vessel.score_image(probability, read_mask(pair.mask), fov))
    if metadata["task"] == "polyp":
        results = polyp.summarize(scores)
        return {"meanDice": results["meanDice"], "dice@0.5": results["dice@0.5"]}
    return {"meanDice": float(np.mean(vessel.dice_curve(scores)[1])), "dice@0.5": vessel.summarize(scores)["F1"]}


def check(runtimes, latencies, data, metadata):
    """Scores each quantised runtime of {format: runtime} and its float counterpart (there too) on the
    validation pairs of `data` (GateData); returns {format: report} (float and quantised scores, their change,
    the speed-up of the median batch-1 latency in `latencies`); raises QuantizationError naming every file that
    loses more than `data.max_dice_drop` in a metric."""
    max_dice_drop = data.max_dice_drop
    reference = {}
    reports, refused = {}, []
    for name in (name for name in runtimes if name in QUANTIZED):
        counterpart = QUANTIZED[name]
        if counterpart not in reference:
            reference[counterpart] = dice_scores(runtimes[counterpart], metadata, data.validation)
        scores = dice_scores(runtimes[name], metadata, data.validation)
        change = {key: scores[key] - reference[counterpart][key] for key in METRICS}
        reports[name] = {
            "reference": counterpart,
            "float": reference[counterpart],
            "quantized": scores,
            "change": change,
            "speedup": latencies[counterpart] / latencies[name],
            "max_dice_drop": max_dice_drop,
            "validation": {"images": len(data.validation), "source": data.validation_source},
            **(
                {"calibration": {"images": len(data.calibration), "source": data.calibration_source}}
                if name in CALIBRATED
                else {}
            ),
        }
        log.info(
            "%s vs %s on %d validation images: %s; %.2fx the speed",
            name,
            counterpart,
            len(data.validation),
            ", ".join(f"{key} {reference[counterpart][key]:.4f} -> {scores[key]:.4f}" for key in METRICS),
            reports[name]["speedup"],
        )
        losses = [
            f"{key} {reference[counterpart][key]:.4f} -> {scores[key]:.4f} ({change[key]:+.4f})"
            for key in METRICS
            if -change[key] > max_dice_drop
        ]
        if losses:
            refused.append(f"{name} loses {', '.join(losses)} against {counterpart}")
    if refused:
        raise QuantizationError(
            f"{'; '.join(refused)} on {len(data.validation)} validation images ({data.validation_source}): "
            f"more than --max_dice_drop {max_dice_drop:g}; nothing was written"
        )
    return reports


def input_size_change(model, data, metadata):
    """What making the files for `metadata["input_size"]` instead of the size `model` was trained at
    (`model.input_size`) costs: the Keras model scored at both sizes on the validation pairs of `data` (GateData),
    as `dice_scores`; None when the two sizes are the same or the model has no training size. A loss beyond
    `data.max_dice_drop` is logged as a warning."""
    trained_at, exported_at = getattr(model, "input_size", None), list(metadata["input_size"])
    if trained_at is None or list(trained_at) == exported_at:
        return None
    trained_at = list(trained_at)
    runtime = KerasRuntime(model, model.prediction_output, fixed_size=True)
    at_training = dice_scores(runtime, {**metadata, "input_size": trained_at}, data.validation)
    at_export = dice_scores(runtime, {**metadata, "input_size": exported_at}, data.validation)
    change = {key: at_export[key] - at_training[key] for key in METRICS}
    cells = ", ".join(f"{key} {at_training[key]:.4f} -> {at_export[key]:.4f} ({change[key]:+.4f})" for key in METRICS)
    sizes = f"{size_text(trained_at)} -> {size_text(exported_at)}"
    log.info("Input size %s (the float model, %d validation images): %s", sizes, len(data.validation), cells)
    if any(-change[key] > data.max_dice_drop for key in METRICS):
        log.warning(
            "Made for %s instead of its training size %s, the float model loses more than --max_dice_drop %g: %s",
            size_text(exported_at),
            size_text(trained_at),
            data.max_dice_drop,
            cells,
        )
    return {
        "training_size": trained_at,
        "export_size": exported_at,
        "at_training_size": at_training,
        "at_export_size": at_export,
        "change": change,
        "validation": {"images": len(data.validation), "source": data.validation_source},
    }
