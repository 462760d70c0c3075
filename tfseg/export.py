"""Export a trained tfseg model: `.keras`, SavedModel, ONNX and TFLite, each checked against the Keras model in
inference mode, quantised ONNX and TFLite files (tfseg.quantization) checked by their Dice, plus the metadata
(`tfseg.json`) that inference needs.

SavedModel endpoints:
  serve        float32 (B, H, W, 3) normalised images -> the model's logit maps (what `model.export` gives)
  serve_prediction  the same images -> the prediction output's logits only (what the Predictor runs: the other
               maps, e.g. PraNet's three side outputs resized to the input, are not computed)
  serve_uint8  uint8 (B, H, W, 3) RGB images of any size -> (B, H, W, 1) probability of the prediction map
               at the input's size: resize to the training size, normalise, predict, resize back, activation
               (ready for TF Serving).
ONNX and TFLite hold one input "images" (float32, normalised) and one output, the prediction's logits. When the
model has a training size they are exported for that size (static H and W; any batch): their runtimes plan
static graphs and the bilinear resizes become native resize ops (tfseg.models.blocks); without one (EAR-Net's
multi-scale inference) H and W stay dynamic.

An export folder only ever holds the files of one model: `export_model` writes and checks every format in a
temporary sibling folder and then swaps it in (`tfseg.files.replace_folder`), so a failure or a kill leaves the
previous export whole, and files of an earlier export never stay beside the new ones. `tfseg.json` records a
fingerprint (sha256) of each model file, which `Predictor.load` checks, and the batch-1 latency of each format
timed on the exporting machine ("timing"), by which `Predictor.load` picks the fastest (`pick_export`).

A quantised format (`tflite_int8`, `tflite_fp16`, `onnx_int8`) is scored against its float counterpart (`tflite`,
`onnx`, written for the check when not asked for and left out of the folder) on validation images, and the
export is refused (QuantizationError) when it loses more Dice than allowed; "quantization" in tfseg.json keeps the
scores, their change and the speed-up.
"""

import dataclasses
import json
import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from tfseg import files, quantization
from tfseg.files import METADATA_FILE
from tfseg.inference.predictor import EXPORT_FILES, load_runtime, probability_map
from tfseg.inference.runtimes import machine, median_latencies
from tfseg.models.spec import export_spec, model_metadata, size_pair, size_text
from tfseg.quantization import QUANTIZED, QuantizationSettings

log = logging.getLogger(__name__)
FORMATS = ("keras", "savedmodel", "onnx", "tflite", *QUANTIZED)  # float ones first: quantised ones need them
ONNX_OPSET = 17
CHECK_SIZE = (96, 128)  # the check's input size for models without a training size


class ExportMismatchError(ValueError):
    """An exported model disagrees with the Keras model beyond the tolerance."""


class ExportFolderError(ValueError):
    """The output folder cannot take an export (it holds other things than an earlier export)."""


def input_spec(input_size):
    height, width = (None, None) if input_size is None else size_pair(input_size)
    return tf.TensorSpec([None, height, width, 3], tf.float32, name="images")


def prediction_function(model, spec):
    """tf.function: normalised images -> the prediction output's logits, in inference mode (keras#23166)."""
    return tf.function(
        lambda images: model(images, training=False)[spec["prediction_output"]],
        input_signature=[input_spec(spec["input_size"])],
    )


def any_size_logits(model, input_size):
    """images of any size -> the model's outputs in inference mode; at `input_size` (if any) through a branch
    traced with that height and width static, whose resizes are native ops (as the Keras runtime's,
    tfseg.inference.runtimes.KerasRuntime): the same numbers, ~4-7 % faster than the any-size graph."""
    if input_size is None:
        return lambda x: model(x, training=False)
    height, width = size_pair(input_size)

    def logits(x):
        shape = tf.shape(x)
        return tf.cond(
            tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width)),
            lambda: model(tf.ensure_shape(x, [None, height, width, 3]), training=False),
            lambda: model(x, training=False),
        )

    return logits


def export_savedmodel(model, path, spec):
    """The SavedModel with its three endpoints (`serve` also as "serving_default"), and its
    `tfseg.json`. Written by `tf.saved_model.save` of the endpoints and the model's variables: the file
    `keras.export.ExportArchive` writes, without its walk of every layer for resources (a model has none) and
    its three traces of each endpoint (one here): PraNet-MobileNetV2 13 s -> 6 s (docs/BENCHMARKS.md). `serve`
    takes any size; the export's input size runs through a static-size branch (`any_size_logits`).
    `serve_prediction` calls `serve` and keeps the prediction output: no trace of its own (an export 3 s
    shorter), and grappler drops the other maps from its graph (the same speed as tracing the output alone)."""
    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [variable.value for variable in model.variables]
    root.trainable_variables = [variable.value for variable in model.trainable_variables]
    root.non_trainable_variables = [variable.value for variable in model.non_trainable_variables]
    root.serve = tf.function(any_size_logits(model, spec["input_size"]), input_signature=[input_spec(None)])
    root.serve_prediction = tf.function(
        lambda images: root.serve(images)[spec["prediction_output"]], input_signature=[input_spec(None)]
    )
    root.serve_uint8 = tf.function(
        lambda images: probability_map(images, tf.shape(images)[1:3], lambda x: model(x, training=False), spec),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    signatures = {
        "serve": root.serve,
        "serve_prediction": root.serve_prediction,
        "serve_uint8": root.serve_uint8,
        "serving_default": root.serve,
    }
    tf.saved_model.save(root, path, signatures=signatures)
    metadata = model_metadata(model, spec)
    metadata["files"] = {"savedmodel": {"path": ".", "fingerprint": files.fingerprint(path, {METADATA_FILE})}}
    write_metadata(path, metadata)


def export_onnx(model, path, spec):
    """ONNX via tf2onnx (what Keras' own `export(format="onnx")` runs), the metadata embedded as "tfseg"."""
    try:
        import onnx
        import tf2onnx
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and tf2onnx: pip install -r requirements.txt") from error
    function = prediction_function(model, spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=ONNX_OPSET)
    proto.metadata_props.add(key="tfseg", value=json.dumps(model_metadata(model, spec)))
    onnx.save(proto, path)


def tflite_converter(model, spec):
    """The TFLite converter of the concrete prediction function, its variables frozen into constants (the
    converter's default route through a SavedModel of `model`, taken for models `tf.saved_model.save` can write,
    keeps Keras 3 variables as resource variables that the file never initialises: NaN outputs)."""
    function = prediction_function(model, spec).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.experimental_lower_to_saved_model = False
    return converter


def export_tflite(model, path, spec):
    """TFLite (builtin ops only, float32)."""
    with open(path, "wb") as f:
        f.write(tflite_converter(model, spec).convert())


def export_keras(model, path, spec):
    model.save(path)


EXPORTERS = {"keras": export_keras, "savedmodel": export_savedmodel, "onnx": export_onnx, "tflite": export_tflite}


def write_metadata(folder, metadata):
    files.write_json(os.path.join(folder, METADATA_FILE), metadata)


def max_export_difference(model, runtime, metadata, seed=0):
    """Max |logits of the export's runtime - logits of `model(x, training=False)`| on a random batch of two."""
    height, width = check_size(metadata)
    x = np.random.default_rng(seed).normal(size=(2, height, width, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False)[model.prediction_output])
    return float(np.max(np.abs(runtime(x) - expected)))


def check_size(metadata):
    """The (h, w) the files are checked and timed at: their input size, else CHECK_SIZE."""
    return CHECK_SIZE if metadata["input_size"] is None else tuple(metadata["input_size"])


def check_formats(formats):
    """The formats as a list; ValueError for none or an unknown one."""
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"Unknown export formats {unknown}: choose from {', '.join(FORMATS)}")
    if not formats:
        raise ValueError(f"No export format given: choose from {', '.join(FORMATS)}")
    return formats


def export_files(folder):
    """The names in an export folder that belong to the export (the model files of every format, tfseg.json)."""
    names = {*EXPORT_FILES.values(), METADATA_FILE}
    metadata_path = os.path.join(folder, METADATA_FILE)
    try:
        with open(metadata_path) as f:
            names |= {entry["path"] for entry in json.load(f).get("files", {}).values()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    return names


def check_export_folder(folder):
    """The entries of an existing output folder that an export keeps (the user's own, e.g. NOTES.txt); raises
    ExportFolderError for a non-empty folder that holds no export, which an export would take over."""
    if not os.path.lexists(folder):
        return []
    if not os.path.isdir(folder):
        raise ExportFolderError(f"The export folder {folder} is a file: choose a folder")
    entries = [entry for entry in os.listdir(folder) if not files.TEMPORARY.match(entry)]
    if entries and METADATA_FILE not in entries:
        raise ExportFolderError(
            f"{folder} is not empty and holds no tfseg export ({METADATA_FILE}): an export "
            "replaces its folder, so choose a new or empty one"
        )
    ours = export_files(folder)
    return [entry for entry in entries if entry not in ours]


def export_model(
    model,
    folder,
    formats=("keras", "savedmodel"),
    input_size=None,
    tolerance=1e-3,
    training=None,
    quantization_settings=None,
):
    """Writes each format (model.keras, savedmodel/, model.onnx, model.tflite, the quantised files of EXPORT_FILES)
    with `tfseg.json` into a temporary sibling of `folder`, checks each against `model` (a float format:
    ExportMismatchError beyond `tolerance`, the max absolute logit difference; a quantised one: QuantizationError
    when it loses more Dice than `quantization_settings` allow), times each, then swaps it in as `folder`. An
    earlier export there is replaced whole (files of formats not asked for now go with it); the user's own files in
    it are kept. `input_size`: the size the files are made for (default: the model's, its inference spec).
    `training`: how the model was trained and its checkpoint chosen (tfseg.training.loop.training_record), kept in
    tfseg.json for the evaluations' protocol card; its run folder supplies the quantised formats' images that
    `quantization_settings` (tfseg.quantization.QuantizationSettings) do not name.
    Returns {format: {"path", "max_abs_diff" (None for a quantised format), "median_ms"}, plus "quantization"
    (the Dice check) for quantised formats}."""
    formats = check_formats(formats)
    spec = export_spec(model, input_size)
    data = _gate_data(model, formats, spec, training, quantization_settings or QuantizationSettings())
    folder = os.path.abspath(folder)
    kept = check_export_folder(folder)
    files.remove_stale_temporaries(os.path.dirname(folder), os.path.basename(folder))
    staging = files.temporary_name(folder)
    try:
        os.makedirs(staging)
        results, metadata = _write_formats(model, staging, formats, spec, tolerance, folder, data)
        _copy_entries(folder, staging, kept)  # copies: the previous folder stays whole until the swap
        if training:
            metadata["training"] = training
            _add_to_savedmodel_metadata(staging, results, {"training": training})  # it may be deployed alone
        write_metadata(staging, metadata)
        files.replace_folder(staging, folder)
    except BaseException:
        files.remove(staging)
        raise
    for name, result in results.items():
        result["path"] = os.path.join(folder, EXPORT_FILES[name])
        checked = (
            "Dice checked" if name in QUANTIZED else f"max |logit difference| vs Keras {result['max_abs_diff']:.2e}"
        )
        log.info("Exported %s: %s (%s, %.1f ms a batch of 1)", name, result["path"], checked, result["median_ms"])
    return results


def _gate_data(model, formats, spec, training, settings):
    """What the quantised formats among `formats` are calibrated and checked on, and a size other than the
    training size is scored on (tfseg.quantization.GateData; None without either), found before anything is
    written. Without validation images a resized float export is written unscored, with a warning."""
    trained_at = getattr(model, "input_size", None)
    resized = trained_at is not None and spec["input_size"] is not None and spec["input_size"] != list(trained_at)
    quantized = any(name in QUANTIZED for name in formats)
    if not (quantized or resized):
        return None
    if spec["input_size"] is None:
        raise quantization.QuantizationError(
            "The quantised formats are made for one input size and this model has none: give --input_size"
        )
    if settings.run_dir is None and training:
        settings = dataclasses.replace(settings, run_dir=training.get("run_dir"))
    if quantized or settings.validation:
        return quantization.gate_data(settings, formats, spec["task"])
    unscored = (
        f"Made for {size_text(spec['input_size'])} instead of its training size {size_text(trained_at)}: what "
        "that costs in Dice is not scored"
    )
    if not (settings.run_dir and os.path.isfile(os.path.join(settings.run_dir, "args.json"))):
        log.warning("%s (give --validation: a folder with images/ and masks/)", unscored)
        return None
    try:  # the run's validation images
        return quantization.gate_data(settings, formats, spec["task"])
    except quantization.QuantizationError as error:
        log.warning("%s: %s", unscored, error)
        return None


def _copy_entries(source, target, names):
    for name in names:
        if os.path.isdir(os.path.join(source, name)) and not os.path.islink(os.path.join(source, name)):
            shutil.copytree(os.path.join(source, name), os.path.join(target, name), symlinks=True)
        else:
            shutil.copy2(os.path.join(source, name), os.path.join(target, name), follow_symlinks=False)


def _add_to_savedmodel_metadata(folder, results, entries):
    """Adds `entries` to the tfseg.json inside the SavedModel of `folder` (outside its fingerprint)."""
    if "savedmodel" in results:
        path = os.path.join(folder, EXPORT_FILES["savedmodel"])
        with open(os.path.join(path, METADATA_FILE)) as f:
            write_metadata(path, {**json.load(f), **entries})


def _write_formats(model, folder, formats, spec, tolerance, destination, data):
    """Every format into `folder`, each checked and timed, the quantised ones against their float counterparts
    (written for that when not asked for, and removed); returns (results, metadata with the files' fingerprints,
    their timing and the quantised files' checks)."""
    metadata = model_metadata(model, spec)
    needed = {*formats, *(QUANTIZED[name] for name in formats if name in QUANTIZED)}
    calibration = quantization.calibration_inputs(data.calibration, spec) if data else None
    results, runtimes = {}, {}
    for name in (name for name in FORMATS if name in needed):
        path = os.path.join(folder, EXPORT_FILES[name])
        if name == "onnx_int8":
            quantization.export_onnx_int8(os.path.join(folder, EXPORT_FILES["onnx"]), path, calibration)
        elif name in QUANTIZED:
            quantization.export_tflite(tflite_converter(model, spec), path, name, calibration)
        else:
            EXPORTERS[name](model, path, spec)
        runtimes[name] = load_runtime(path, metadata=metadata)[0]
        if name in QUANTIZED:  # judged by its Dice (quantization.check), not by logits on random inputs
            results[name] = {"path": path, "max_abs_diff": None}
            continue
        difference = max_export_difference(model, runtimes[name], metadata)
        results[name] = {"path": path, "max_abs_diff": difference}
        if not difference <= tolerance:
            raise ExportMismatchError(
                f"{name} export {os.path.join(destination, EXPORT_FILES[name])} differs "
                f"from the Keras model by {difference:.3e} (tolerance {tolerance:g}); "
                f"nothing was written"
            )
    latencies = median_latencies(runtimes, check_size(metadata))
    if data:
        checked = quantization.check(runtimes, latencies, data, metadata)
        if checked:
            metadata["quantization"] = checked
        for name, report in checked.items():
            results[name]["quantization"] = report
        size_change = quantization.input_size_change(model, data, metadata)
        if size_change:
            metadata["input_size_change"] = size_change
    for name in needed - set(formats):  # float counterparts written for the check only
        del results[name]
        files.remove(os.path.join(folder, EXPORT_FILES[name]))
    for name, result in results.items():
        result["median_ms"] = latencies[name]
    metadata["files"] = {
        name: {
            "path": EXPORT_FILES[name],
            "fingerprint": files.fingerprint(os.path.join(folder, EXPORT_FILES[name]), {METADATA_FILE}),
        }
        for name in results
    }
    metadata["timing"] = {
        "median_ms": {name: latencies[name] for name in results},
        "batch": 1,
        "input_size": list(check_size(metadata)),
        "machine": machine(),
    }
    return results, metadata
