"""Export a trained tfseg model: SavedModel (two endpoints), `.keras`, and the metadata inference needs.

SavedModel endpoints:
  serve        float32 (B, H, W, 3) normalised images -> the model's logit maps (what `model.export` gives)
  serve_uint8  uint8 (B, H, W, 3) RGB images of any size -> (B, H, W, 1) probability of the prediction map
               at the input's size: resize to the training size, normalise, predict, resize back, sigmoid
               (ready for TF Serving).
"""

import json
import os

import keras
import tensorflow as tf

from tfseg.inference.predictor import METADATA_FILE, probability_map, size_pair


def model_metadata(model, input_size, task="polyp"):
    """What a predictor needs to reproduce the training-time preprocessing."""
    return {
        "architecture": type(model).__name__,
        "config": model.get_config(),
        "input_size": None if input_size is None else list(size_pair(input_size)),  # None: the image's own size
        "normalization": model.normalization,
        "task": task,
        "outputs": list(model.output_names),
        "prediction_index": model.prediction_output,
        "activation": model.output_activation,
    }


def uint8_predict_fn(model, input_size):
    """uint8 RGB batch of any size -> probability map of `model`'s prediction output at that size."""
    return lambda images: probability_map(images, tf.shape(images)[1:3], lambda x: model(x, training=False),
                                          input_size, model.normalization, model.prediction_output,
                                          model.output_activation)


def export_savedmodel(model, path, input_size, task="polyp"):
    """Writes the SavedModel with `serve` and `serve_uint8` endpoints plus `tfseg.json`; returns `path`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.add_endpoint("serve_uint8", uint8_predict_fn(model, input_size),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.write_out(path, verbose=False)
    with open(os.path.join(path, METADATA_FILE), "w") as f:
        json.dump(model_metadata(model, input_size, task), f, indent=2)
    return path


def export_all(model, folder, input_size, task="polyp"):
    """SavedModel in `folder/savedmodel`, `folder/model.keras` and `folder/tfseg.json`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    keras_path = os.path.join(folder, "model.keras")
    model.save(keras_path)
    with open(os.path.join(folder, METADATA_FILE), "w") as f:
        json.dump(model_metadata(model, input_size, task), f, indent=2)
    savedmodel = export_savedmodel(model, os.path.join(folder, "savedmodel"), input_size, task)
    return {"savedmodel": savedmodel, "keras": keras_path}
