"""Deep supervision in `compile` / `fit` / `evaluate`: one target for all of a model's outputs.

tfseg's models return several outputs that one mask supervises (PraNet's four maps, HRNet-OCR's fused, aux and
single-scale logits). Keras matches a loss to each output and needs the target repeated per output; here, when `y`
is one target (a tensor, or a dict that names no output, e.g. EAR-Net's {"labels", "error_maps"}) and the compiled
loss is one Loss, that loss gets the outputs whole, from the one forward pass, as the training loops give them
(StructureLoss sums PraNet's maps, EARNetLoss weighs HRNet-OCR's); the compiled metrics get the prediction output
and the target's labels. A target per output keeps Keras' own rules (e.g. `EARNetLoss.compile_arguments`).
"""

import keras
from keras import tree


class DeepSupervision:
    """Mixin for a keras.Model with an inference spec (`prediction_output`): see the module."""

    def _one_target(self, y, y_pred):
        if not tree.is_nested(y_pred) or y is None:
            return False
        if isinstance(y, dict):
            return not set(y) & set(y_pred if isinstance(y_pred, dict) else self.output_names)
        return not tree.is_nested(y)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not (self._one_target(y, y_pred) and isinstance(self.loss, keras.losses.Loss)):
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        total = self.loss(y, y_pred, sample_weight)  # a Loss scales itself for tf.distribute
        for extra in self.losses:  # regularisers, add_loss
            total = total + self._aggregate_additional_loss(extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._one_target(y, y_pred):
            y_pred = y_pred[self.prediction_output]
            y = y["labels"] if isinstance(y, dict) else y
        return super().compute_metrics(x, y, y_pred, sample_weight)
