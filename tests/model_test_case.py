"""The checks every tfseg model family passes, in the spirit of KerasHub's `TestCase` (`run_layer_test`,
`run_model_saving_test`, ...): one call per family keeps each family's test file about what is particular to it.

`check_model(model, images, tmp_path)`:
  - outputs: the same structure in training and inference, every output at the input size;
  - config: `from_config(get_config())` rebuilds the same config, and the config carries the inference spec;
  - saving: a `.keras` file reloads (in this process) to the same class and the same inference outputs.
`check_export_parity(model, images, folder)`: an export folder's SavedModel (`serve`) and `tfseg.json` match the
model in inference mode. Exporting costs a minute or two of tracing on a CPU, so each family checks the export its
other tests make anyway (tests/test_inference.py, the EAR-Net command-line test).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tfseg.models.spec import SPEC_KEY

SPEC = {"task", "normalization", "prediction_output", "activation", "input_size"}


def as_dict(outputs, names):
    return dict(outputs) if isinstance(outputs, dict) else dict(zip(names, outputs, strict=True))


def check_outputs(model, images):
    training = as_dict(model(images, training=True), model.output_names)
    inference = as_dict(model(images, training=False), model.output_names)
    assert list(training) == list(inference) and set(model.output_names) <= set(inference)
    assert all(tuple(value.shape[:3]) == images.shape[:3] for value in inference.values())
    return inference


def check_config(model):
    config = model.get_config()
    assert set(config[SPEC_KEY]) == SPEC and config[SPEC_KEY] == model.inference_spec()
    assert model.prediction_output in (
        model.output_names
        if isinstance(model.prediction_output, str)
        else range(-len(model.output_names), len(model.output_names))
    )
    assert type(model).from_config(config).get_config() == config


def check_saving(model, images, expected, tmp_path):
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is type(model)
    outputs = as_dict(reloaded(images, training=False), model.output_names)
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, atol=1e-5, err_msg=name)


def check_export_parity(model, images, folder, input_size=None):
    """`input_size`: the size the export was made for, when not the model's own."""
    with open(os.path.join(folder, "tfseg.json")) as f:
        metadata = json.load(f)
    spec = {**model.inference_spec(), **({} if input_size is None else {"input_size": list(input_size)})}
    assert {key: metadata[key] for key in SPEC} == spec
    loaded = tf.saved_model.load(os.path.join(folder, "savedmodel"))  # referenced while its functions run
    served = as_dict(loaded.serve(tf.constant(images)), model.output_names)
    expected = as_dict(model(images, training=False), model.output_names)
    for name, value in expected.items():
        np.testing.assert_allclose(served[name], value, atol=1e-4, err_msg=name)


def check_model(model, images, tmp_path):
    """All of the above for `model` on `images` (normalised float32 (B, H, W, 3))."""
    expected = check_outputs(model, images)
    check_config(model)
    check_saving(model, images, expected, tmp_path)
