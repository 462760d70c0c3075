"""Losses (keras.ops only, any backend).

PraNet's structure loss (Fan et al., MICCAI 2020, eq. 4; `structure_loss` in the official MyTrain.py):
weighted BCE + weighted IoU with boundary-emphasising weights `w = 1 + 5 * |avgpool31(mask) - mask|`.
EAR-Net's losses (Wang et al., DICTA 2021): cross-entropy with an ignore label over the multi-scale outputs, and
the error-attention MSE of stage 2; for `model.compile`, one Keras loss per output (`EARNetLoss.compile_arguments`).
"""

import keras
from keras import ops

from tfseg.preprocessing import IGNORE_LABEL

BOX = 31  # F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15)


def structure_weights(mask):
    """`1 + 5 * |avgpool31(mask) - mask|` with zero padding counted in the mean (torch count_include_pad=True).

    Computed as two exact 1-D box means (31x1, then 1x31) over the zero-padded mask: the same weights as the
    31x31 pool at a fraction of its cost. (TF 'SAME' pooling would exclude the padding: not used.)
    """
    half = BOX // 2
    padded = ops.pad(mask, [[0, 0], [half, half], [half, half], [0, 0]])
    pooled = ops.average_pool(padded, (BOX, 1), strides=1, padding="valid")
    pooled = ops.average_pool(pooled, (1, BOX), strides=1, padding="valid")
    return 1.0 + 5.0 * ops.abs(pooled - mask)


@keras.saving.register_keras_serializable(package="tfseg")
class StructureLoss(keras.losses.Loss):
    """Weighted BCE + weighted IoU per image; a sequence of logit maps (deep supervision) is summed.

    The boundary weights are computed once per batch and shared by all maps. Per image:
      wBCE = sum(w * bce) / sum(w)
      wIoU = 1 - (sum(w*p*g) + 1) / (sum(w*(p+g)) - sum(w*p*g) + 1),  p = sigmoid(logits), g = mask
    weighted_bce=False reproduces the official code, whose `F.binary_cross_entropy_with_logits(...,
    reduce='none')` passes a legacy flag that means mean reduction, so its BCE weighting collapses to a plain
    mean over pixels. Logits are never thresholded here.
    """

    def __init__(self, weighted_bce=True, reduction="sum_over_batch_size", name="structure_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.weighted_bce = weighted_bce

    def call(self, y_true, y_pred):
        maps = y_pred if isinstance(y_pred, (list, tuple)) else [y_pred]
        dtype = keras.config.floatx()  # float32 even under mixed precision
        mask = ops.cast(y_true, dtype)
        weights = structure_weights(mask)
        return sum(self._per_image(mask, weights, ops.cast(logits, dtype)) for logits in maps)

    def _per_image(self, mask, weights, logits):
        axes = (1, 2, 3)
        bce = ops.relu(logits) - logits * mask + ops.log1p(ops.exp(-ops.abs(logits)))  # stable BCE with logits
        if self.weighted_bce:
            wbce = ops.sum(weights * bce, axes) / ops.sum(weights, axes)
        else:
            wbce = ops.mean(bce, axes)
        prob = ops.sigmoid(logits)
        inter = ops.sum(weights * prob * mask, axes)
        union = ops.sum(weights * (prob + mask), axes)
        return wbce + 1.0 - (inter + 1.0) / (union - inter + 1.0)

    def get_config(self):
        return {**super().get_config(), "weighted_bce": self.weighted_bce}


def _labels(labels):
    """(B, H, W) int32 from (B, H, W) or (B, H, W, 1) labels."""
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 4:
        labels = labels[..., 0]
    return ops.cast(labels, "int32")


def masked_cross_entropy(labels, logits, ignore_label=IGNORE_LABEL):
    """Per-image mean softmax cross-entropy over the pixels whose label is not `ignore_label` (torch's
    `CrossEntropyLoss(ignore_index=255)`, averaged per image); 0 for an image with no valid pixel."""
    labels = _labels(labels)
    valid = ops.cast(labels != ignore_label, logits.dtype)
    picked = ops.take_along_axis(
        ops.log_softmax(logits, axis=-1), ops.expand_dims(ops.where(labels == ignore_label, 0, labels), -1), axis=-1
    )[..., 0]
    return ops.sum(-picked * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


def masked_mse(targets, predictions, ignore_label=IGNORE_LABEL):
    """Per-image mean of (A - E)^2 over the pixels where the target E is not `ignore_label`."""
    targets = _labels(targets)
    valid = ops.cast(targets != ignore_label, predictions.dtype)
    error = (predictions[..., 0] - ops.cast(targets, predictions.dtype)) ** 2
    return ops.sum(error * valid, axis=(1, 2)) / ops.maximum(ops.sum(valid, axis=(1, 2)), 1.0)


class _MaskedLoss(keras.losses.Loss):
    """A per-image loss with an ignore label as a Keras loss (for `compile`); the name defaults to the class's."""

    def __init__(self, ignore_label=IGNORE_LABEL, reduction="sum_over_batch_size", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        return self.per_image(y_true, y_pred, self.ignore_label)

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


@keras.saving.register_keras_serializable(package="tfseg")
class MaskedCrossEntropy(_MaskedLoss):
    """`masked_cross_entropy` as a Keras loss."""

    per_image = staticmethod(masked_cross_entropy)


@keras.saving.register_keras_serializable(package="tfseg")
class MaskedMSE(_MaskedLoss):
    """`masked_mse` as a Keras loss."""

    per_image = staticmethod(masked_mse)


class EARNetLoss:
    """EAR-Net's loss, per image: `CE(J) + 0.4 CE(J_aux) + 0.05 (CE(up(p_0.5)) + CE(p_1.0))` over the outputs of
    `HRNetOCR(training=True)`, plus `0.5 * MSE(A, E)` in stage 2 (`error_maps` given). Plain cross-entropy with
    ignore label 255 replaces the official code's RMI loss on the first term (a documented choice)."""

    def __init__(self, aux_weight=0.4, scale_weight=0.05, error_weight=0.5, ignore_label=IGNORE_LABEL):
        self.aux_weight, self.scale_weight = aux_weight, scale_weight
        self.error_weight, self.ignore_label = error_weight, ignore_label

    def __call__(self, labels, outputs, error_maps=None):
        ce = lambda key: masked_cross_entropy(labels, ops.cast(outputs[key], "float32"), self.ignore_label)
        loss = ce("pred") + self.aux_weight * ce("aux") + self.scale_weight * (ce("pred_05") + ce("pred_10"))
        if error_maps is not None:
            attention = ops.cast(outputs["error_attention"], "float32")
            loss = loss + self.error_weight * masked_mse(error_maps, attention, self.ignore_label)
        return loss

    def compile_arguments(self, error_maps=False):
        """{"loss", "loss_weights"} for `model.compile(**...)`: this loss as Keras' weighted sum of one loss per
        output (the same mean over the batch), with y = {"pred": labels, "aux": labels, "pred_05": labels,
        "pred_10": labels} and, with `error_maps` (stage 2), "error_attention": the error maps."""
        weights = {"pred": 1.0, "aux": self.aux_weight, "pred_05": self.scale_weight, "pred_10": self.scale_weight}
        loss = {name: MaskedCrossEntropy(self.ignore_label) for name in weights}
        if error_maps:
            loss["error_attention"] = MaskedMSE(self.ignore_label)
            weights["error_attention"] = self.error_weight
        return {"loss": loss, "loss_weights": weights}
