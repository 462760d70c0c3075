"""`Predictor`: a trained model plus its training-time preprocessing -> probability maps at the image's size.

Loads a `.keras` file or a SavedModel folder written by `tfseg.export` (the metadata in `tfseg.json` beside
it gives the input size, the backbone normalisation and which output is the prediction). TensorFlow only.
"""

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfseg.models.backbones import normalize

METADATA_FILE = "tfseg.json"
DEFAULT_INPUT_SIZE = 352  # PraNet's training and test size


def size_pair(size):
    """(height, width) of an int or a pair."""
    return (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)


def probability_map(images, size, logits_fn, input_size, normalization, prediction_index=-1,
                    activation="sigmoid"):
    """uint8 RGB batch (B, H, W, 3) -> (B, *size, 1) foreground probabilities: resize to `input_size` (bilinear
    with antialiasing, as PIL's resize in PraNet's loaders; None keeps the image's size), normalise, predict,
    resize the logits bilinearly (half-pixel centres = torch `align_corners=False`, as PraNet's test script) to
    `size`, then sigmoid (one logit channel) or softmax (class channels; channel 1 is the foreground)."""
    x = tf.cast(images, tf.float32)
    if input_size is not None:
        x = tf.image.resize(x, size_pair(input_size), "bilinear", antialias=True)
    logits = tf.image.resize(tf.cast(logits_fn(normalize(x, normalization))[prediction_index], tf.float32), size,
                             "bilinear")
    return tf.nn.softmax(logits)[..., 1:2] if activation == "softmax" else tf.sigmoid(logits)


def read_metadata(path):
    """The `tfseg.json` of an export (in a SavedModel folder, or beside a `.keras` file), or None."""
    path = Path(path)
    candidates = [path / METADATA_FILE] if path.is_dir() else [path.parent / METADATA_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def load_keras_model(path, backbone=None):
    """A `.keras` file, or a PraNet on `backbone` filled from a `.weights.h5` file (a training run's
    best.weights.h5, or the original weights converted by convert_weights.py)."""
    import tfseg.models  # registers the tfseg layers for deserialisation

    if path.suffix == ".keras":
        return keras.models.load_model(path)
    if path.name.endswith(".weights.h5"):
        if backbone is None:
            raise ValueError(f"{path} holds weights only: name the backbone of the PraNet they belong to "
                             f"({', '.join(tfseg.models.BACKBONES)})")
        model = tfseg.models.PraNet(backbone, backbone_weights=None)
        model.load_weights(path)
        return model
    raise ValueError(f"Unsupported model file {path}: expected a .keras file, a .weights.h5 file or a SavedModel "
                     "folder")


class Predictor:
    """Probability maps from a trained model with the preprocessing it was trained with.

    `predict(image, size=None)`: HxWx3 uint8 RGB -> float32 probabilities at `size` (default the image's).
    """

    def __init__(self, logits_fn, input_size, normalization, prediction_index=-1, task="polyp", model=None,
                 source=None, activation="sigmoid"):
        self.model = model  # the loaded Keras model or SavedModel: holds the variables `logits_fn` reads
        self.input_size = None if input_size is None else size_pair(input_size)
        self.normalization = normalization
        self.prediction_index = prediction_index
        self.task = task
        self.source = source
        self._predict = tf.function(
            lambda image, size: probability_map(image[None], size, logits_fn, self.input_size, normalization,
                                                prediction_index, activation)[0, ..., 0],
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int32)])

    @classmethod
    def load(cls, path, input_size=None, backbone=None):
        """A `.keras` file, a SavedModel folder, or a PraNet `.weights.h5` file with its `backbone` named;
        `input_size` overrides the training size of the metadata."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Model not found: {path}")
        metadata = read_metadata(path)
        if path.is_dir():
            if metadata is None:
                raise FileNotFoundError(f"{path} has no {METADATA_FILE}: not a SavedModel exported by tfseg "
                                        f"(its preprocessing is unknown)")
            model = tf.saved_model.load(str(path))
            logits_fn = model.serve
        else:
            model = load_keras_model(path, backbone)
            metadata = metadata or {"normalization": model.normalization, "input_size": [DEFAULT_INPUT_SIZE] * 2,
                                    "prediction_index": model.prediction_output, "activation": model.output_activation,
                                    "task": "polyp"}
            logits_fn = lambda x: model(x, training=False)
        return cls(logits_fn, input_size or metadata["input_size"], metadata["normalization"],
                   metadata.get("prediction_index", -1), metadata.get("task", "polyp"), model, str(path),
                   metadata.get("activation", "sigmoid"))

    def predict(self, image, size=None):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        size = image.shape[:2] if size is None else size
        return self._predict(tf.constant(image), tf.constant(size_pair(size), tf.int32)).numpy()
