"""What inference needs to run a tfseg model as it was trained: its inference spec. Every model family gives it,
`get_config` carries it (so a `.keras` alone is enough to export, predict and evaluate), and export writes it to
`tfseg.json` under the same names:

| name              | meaning                                                                                  |
|-------------------|------------------------------------------------------------------------------------------|
| task              | "polyp" or "vessel": the evaluation protocol                                             |
| normalization     | "caffe", "tf" or "torch" (tfseg.preprocessing), applied to RGB in [0, 255]               |
| prediction_output | which output is the prediction (a list index or a dict key)                               |
| activation        | "sigmoid" (one channel) or "softmax" (channel 1 is the foreground)                        |
| input_size        | [h, w] the model is fed at (images are resized to it), or None: any size, the image's own |
"""

import numbers

SPEC_KEY = "inference_spec"  # in get_config; from_config drops it, it follows from the other settings


class InferenceSpec:
    """Mixin: `inference_spec()` from the class attributes `task`, `prediction_output`, `activation` and the
    `normalization` and `input_size` of the instance. `size_multiple`: the input heights and widths the model
    takes are its multiples (None: any)."""

    task = normalization = prediction_output = activation = input_size = size_multiple = None

    def inference_spec(self):
        size = self.input_size
        return {
            "task": self.task,
            "normalization": self.normalization,
            "prediction_output": self.prediction_output,
            "activation": self.activation,
            "input_size": None if size is None else list(size),
        }


def size_pair(size):
    """(height, width) of an int or a pair."""
    return (int(size), int(size)) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)


def size_text(size):
    """ "H x W" of an int or a pair."""
    return " x ".join(map(str, size_pair(size)))


def without_spec(config):
    """A get_config dict ready for the constructor."""
    return {key: value for key, value in config.items() if key != SPEC_KEY}


def check_input_size(size, multiple, architecture, trained_at=None):
    """ValueError unless the input size (an int or (h, w); None: the image's own) is one `architecture` takes:
    both sides multiples of `multiple` (None: any size). `trained_at`, the size a saved model was trained at,
    passes: it ran (PraNet-MobileNetV2 trained at 100 or 260 before sizes were checked)."""
    if size is None or multiple is None:
        return
    height, width = size_pair(size)
    if min(height, width) > 0 and trained_at is not None and (height, width) == size_pair(trained_at):
        return
    if height % multiple or width % multiple or min(height, width) <= 0:
        raise ValueError(
            f"input size {size_text(size)}: {architecture} takes heights and widths divisible by {multiple}"
        )


def export_spec(model, input_size=None):
    """The model's inference spec, with `input_size` (an int or (h, w)) for the size exported files are made for,
    if given."""
    check_input_size(input_size, model.size_multiple, type(model).__name__, getattr(model, "input_size", None))
    return {**model.inference_spec(), **({} if input_size is None else {"input_size": list(size_pair(input_size))})}


def model_metadata(model, spec):
    """tfseg.json: the inference spec under its own names, and which model it is."""
    return {
        "architecture": type(model).__name__,
        "config": model.get_config(),
        "outputs": list(model.output_names),
        **spec,
    }
