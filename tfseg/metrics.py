"""The evaluation protocols as stateful Keras metrics (keras.ops only, any backend), for `compile` and custom
loops: each equals tfseg.evaluation on the same maps.

Predictions are [B, H, W, 1] foreground maps or [B, H, W, 2] two-class maps (channel 1 is the foreground),
probabilities by default, or logits with `from_logits=True` (sigmoid, or softmax over the two channels: what
tfseg's models output). Ground truth and prediction are at one size (the protocols score at the mask's size).

Polyp (tfseg.evaluation.polyp, PraNet's protocol), per image, then the mean over images:

  Dice, IoU   Dice / IoU of `pred > threshold`, 0 when TP = 0
  MeanDice    Dice of `pred >= t` at the 256 levels of the 8-bit map, mean over images, then over levels

  where `pred` is the protocol's map of the probabilities p: PraNet's stored map
  `rint(255 * (p - min) / (max - min + 1e-8))` (uint8, per image) read back by pysodmetrics (`/ 255`, min-max
  normalised again), computed exactly as `tfseg.evaluation.polyp.prediction_map` and `score_image`; ground truth:
  `y_true > 0.5` (masks in [0, 1]). `sample_weight`: one weight per image, for the mean over images.

Vessel (tfseg.evaluation.vessel, the pooled values), over all pixels of all images:

  Sensitivity, Specificity, F1, MCC   of `p > threshold` (0 for a zero denominator)
  AUC                                 ROC-AUC, p binned to 65536 levels (the evaluator's bootstrap grid)

  Labels: 1 vessel, `ignore_label` (255) left out, anything else background. The FOV: a `sample_weight` of 0
  outside it, per pixel ([B, H, W] or [B, H, W, 1]; any other weight counts the pixel once) or per image ([B]).
  `fit` and `evaluate` pass their sample_weight to the losses too, and tfseg's (per image) take no per-pixel
  weights: there, give the pixels outside the FOV the ignore label instead (the EAR-Net losses then skip them too).

State: sums and counts in metric variables (aggregation "sum"), so that under tf.distribute each replica adds its
part and reading the metric sums them. Pixel counts are int64 (int32 on JAX without x64); results come in the
metric's dtype (float32 by default).
"""

import keras
import numpy as np
from keras import ops

from tfseg.preprocessing import IGNORE_LABEL

AUC_BINS = 65536  # = tfseg.evaluation.vessel.BOOTSTRAP_LEVELS: rint(p * 65535), lossless for 8- and 16-bit maps


def _protocol_values():
    """[256, 256] float64: pysodmetrics' `prepare_data` value of 8-bit level u in a map whose maximum is m
    (row m, column u; PraNet's map has minimum 0): `u / 255`, divided by `m / 255` when m > 0 (its min-max
    normalisation); columns u > m never occur."""
    u = np.arange(256)
    m = u[:, None]
    grey = np.minimum(u, m) / 255
    return np.divide(grey, m / 255, out=grey.copy(), where=m > 0)


_VALUES = _protocol_values()
_LEVELS = (_VALUES * 255).astype(np.int32)  # its level `(pred * 255).astype(uint8)`: the 256-level curves


def _foreground(y_pred, from_logits=False):
    """[B, H, W] float32 foreground probability of [B, H, W, 1] maps (sigmoid of logits) or [B, H, W, 2] two-class
    maps (channel 1; softmax of logits)."""
    y_pred = ops.cast(y_pred, "float32")
    if len(y_pred.shape) != 4 or y_pred.shape[-1] not in (1, 2):
        raise ValueError(f"Expected predictions [B, H, W, 1] or [B, H, W, 2], got shape {y_pred.shape}.")
    if y_pred.shape[-1] == 2:
        return (ops.softmax(y_pred, axis=-1) if from_logits else y_pred)[..., 1]
    return (ops.sigmoid(y_pred) if from_logits else y_pred)[..., 0]


def _maps(y_true):
    """[B, H, W] from [B, H, W] or [B, H, W, 1]."""
    y_true = ops.convert_to_tensor(y_true)
    return y_true[..., 0] if len(y_true.shape) == 4 else y_true


def _count(mask, axis=None):
    return ops.sum(ops.cast(mask, "int32"), axis=axis)


class _PolypMetric(keras.metrics.Metric):
    """Mean over images of a per-image score of the protocol's 8-bit map (see the module)."""

    def __init__(self, from_logits=False, name=None, dtype=None, shape=()):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = from_logits
        self.images = self.add_variable((), "zeros", dtype=self.dtype, name="images")
        self.total = self.add_variable(shape, "zeros", dtype=self.dtype, name="total")  # sum of per-image scores

    def protocol_map(self, y_true, y_pred):
        """(ground truth [B, H, W] bool, index m * 256 + u into the [256, 256] tables of the module [B, H, W])."""
        p = _foreground(y_pred, self.from_logits)
        low, high = ops.min(p, axis=(1, 2), keepdims=True), ops.max(p, axis=(1, 2), keepdims=True)
        grey = ops.cast(ops.round((p - low) / (high - low + 1e-8) * 255), "int32")  # PraNet's map, img_as_ubyte
        return _maps(y_true) > 0.5, ops.max(grey, axis=(1, 2), keepdims=True) * 256 + grey

    def accumulate(self, scores, sample_weight):
        """Adds the per-image `scores` ([B] or [B, 256]), weighted by `sample_weight` (one per image)."""
        weights = ops.ones((ops.shape(scores)[0],), self.dtype)
        if sample_weight is not None:
            weights = ops.broadcast_to(ops.reshape(ops.cast(sample_weight, self.dtype), (-1,)), ops.shape(weights))
        self.images.assign_add(ops.sum(weights))
        self.total.assign_add(ops.tensordot(weights, ops.cast(scores, self.dtype), axes=1))

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class _ThresholdScore(_PolypMetric):
    """A per-image score of the confusion counts of `pred > threshold` (the protocol's dice@T, iou@T)."""

    def __init__(self, threshold=0.5, from_logits=False, name=None, dtype=None):
        super().__init__(from_logits, name, dtype)
        self.threshold = threshold
        self.above = (_VALUES > threshold).ravel()  # in float64, as the evaluator compares

    def update_state(self, y_true, y_pred, sample_weight=None):
        gt, index = self.protocol_map(y_true, y_pred)
        predicted = ops.take(self.above, index)
        tp, fp = _count(predicted & gt, (1, 2)), _count(predicted & ~gt, (1, 2))
        foreground = _count(gt, (1, 2))
        self.accumulate(self.score(*(ops.cast(c, self.dtype) for c in (tp, fp, foreground))), sample_weight)

    def result(self):
        return ops.divide_no_nan(self.total, self.images)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="tfseg")
class Dice(_ThresholdScore):
    """The polyp protocol's dice@T: mean over images of 2TP / (2TP + FP + FN) of `pred > threshold` (pysodmetrics'
    DICEHandler; 0 when TP = 0)."""

    def __init__(self, threshold=0.5, from_logits=False, name="dice", dtype=None):
        super().__init__(threshold, from_logits, name, dtype)

    def score(self, tp, fp, foreground):
        return ops.divide_no_nan(2 * tp, tp + fp + foreground)


@keras.saving.register_keras_serializable(package="tfseg")
class IoU(_ThresholdScore):
    """The polyp protocol's iou@T: mean over images of TP / (TP + FP + FN) of `pred > threshold` (pysodmetrics'
    IOUHandler; 0 when TP = 0)."""

    def __init__(self, threshold=0.5, from_logits=False, name="iou", dtype=None):
        super().__init__(threshold, from_logits, name, dtype)

    def score(self, tp, fp, foreground):
        return ops.divide_no_nan(tp, fp + foreground)


@keras.saving.register_keras_serializable(package="tfseg")
class MeanDice(_PolypMetric):
    """The polyp protocol's meanDice: Dice of `pred >= t` for the 256 levels t of the 8-bit map (pysodmetrics'
    `dynamically_binarizing`: per-image cumulative histograms), mean over images, then over levels."""

    def __init__(self, from_logits=False, name="mean_dice", dtype=None):
        super().__init__(from_logits, name, dtype, shape=(256,))

    def update_state(self, y_true, y_pred, sample_weight=None):
        gt, index = self.protocol_map(y_true, y_pred)
        images = ops.shape(index)[0]
        bins = ops.reshape(ops.arange(images, dtype="int32"), (-1, 1, 1)) * 512 + ops.cast(gt, "int32") * 256
        bins = ops.reshape(bins + ops.take(_LEVELS.ravel(), index), (-1,))
        histogram = ops.reshape(ops.segment_sum(ops.ones_like(bins), bins, images * 512), (-1, 2, 256))
        at_or_above = ops.flip(ops.cumsum(ops.flip(histogram, -1), -1), -1)  # [B, (background, ground truth), t]
        fp, tp = (ops.cast(at_or_above[:, i], self.dtype) for i in (0, 1))
        self.accumulate(ops.divide_no_nan(2 * tp, tp[:, :1] + tp + fp), sample_weight)

    def result(self):
        return ops.mean(ops.divide_no_nan(self.total, self.images))


class _VesselMetric(keras.metrics.Metric):
    """A metric pooled over the counted pixels (label not `ignore_label`, `sample_weight` not 0) of all images."""

    def __init__(self, from_logits=False, ignore_label=IGNORE_LABEL, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits, self.ignore_label = from_logits, ignore_label

    def pixels(self, y_true, y_pred, sample_weight):
        """(probability [B, H, W], vessel [B, H, W] bool, counted [B, H, W] bool)."""
        labels = ops.cast(_maps(y_true), "int32")
        counted = labels != self.ignore_label
        if sample_weight is not None:
            weight = ops.convert_to_tensor(sample_weight)
            weight = ops.reshape(weight, (-1, 1, 1)) if len(weight.shape) == 1 else _maps(weight)
            counted = counted & ops.broadcast_to(ops.cast(weight, "bool"), ops.shape(counted))
        return _foreground(y_pred, self.from_logits), labels == 1, counted

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "ignore_label": self.ignore_label}


class _VesselCounts(_VesselMetric):
    """A score of the pooled confusion counts of `p > threshold`."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_label=IGNORE_LABEL, name=None, dtype=None):
        super().__init__(from_logits, ignore_label, name, dtype)
        self.threshold = threshold
        self.counts = self.add_variable((4,), "zeros", dtype="int64", name="counts")  # TP, FP, TN, FN

    def update_state(self, y_true, y_pred, sample_weight=None):
        probability, vessel, counted = self.pixels(y_true, y_pred, sample_weight)
        predicted = probability > self.threshold
        counts = [
            _count(counted & predicted & vessel),
            _count(counted & predicted & ~vessel),
            _count(counted & ~predicted & ~vessel),
            _count(counted & ~predicted & vessel),
        ]
        self.counts.assign_add(ops.cast(ops.stack(counts), "int64"))

    def result(self):
        tp, fp, tn, fn = (ops.cast(self.counts[i], "float64") for i in range(4))
        return ops.cast(self.score(tp, fp, tn, fn), self.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="tfseg")
class Sensitivity(_VesselCounts):
    """The vessel protocol's pooled Se = TP / (TP + FN)."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_label=IGNORE_LABEL, name="sensitivity", dtype=None):
        super().__init__(threshold, from_logits, ignore_label, name, dtype)

    def score(self, tp, fp, tn, fn):
        return ops.divide_no_nan(tp, tp + fn)


@keras.saving.register_keras_serializable(package="tfseg")
class Specificity(_VesselCounts):
    """The vessel protocol's pooled Sp = TN / (TN + FP)."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_label=IGNORE_LABEL, name="specificity", dtype=None):
        super().__init__(threshold, from_logits, ignore_label, name, dtype)

    def score(self, tp, fp, tn, fn):
        return ops.divide_no_nan(tn, tn + fp)


@keras.saving.register_keras_serializable(package="tfseg")
class F1(_VesselCounts):
    """The vessel protocol's pooled F1 = 2TP / (2TP + FP + FN)."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_label=IGNORE_LABEL, name="f1", dtype=None):
        super().__init__(threshold, from_logits, ignore_label, name, dtype)

    def score(self, tp, fp, tn, fn):
        return ops.divide_no_nan(2 * tp, 2 * tp + fp + fn)


@keras.saving.register_keras_serializable(package="tfseg")
class MCC(_VesselCounts):
    """The vessel protocol's pooled MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_label=IGNORE_LABEL, name="mcc", dtype=None):
        super().__init__(threshold, from_logits, ignore_label, name, dtype)

    def score(self, tp, fp, tn, fn):
        return ops.divide_no_nan(tp * tn - fp * fn, ops.sqrt((tp + fp) * (tp + fn)) * ops.sqrt((tn + fp) * (tn + fn)))


@keras.saving.register_keras_serializable(package="tfseg")
class AUC(_VesselMetric):
    """The vessel protocol's pooled ROC-AUC (the trapezoidal area through every distinct value, scikit-learn's
    `roc_auc_score`) of the probabilities binned to `rint(p * 65535)`: the evaluator's `auc(on_grid(...))`, exact
    for 8- and 16-bit maps. NaN (0 / 0) when the counted pixels hold one class only, as the evaluator."""

    def __init__(self, from_logits=False, ignore_label=IGNORE_LABEL, name="auc", dtype=None):
        super().__init__(from_logits, ignore_label, name, dtype)
        self.histogram = self.add_variable((2, AUC_BINS), "zeros", dtype="int64", name="histogram")

    def update_state(self, y_true, y_pred, sample_weight=None):
        probability, vessel, counted = self.pixels(y_true, y_pred, sample_weight)
        level = ops.cast(ops.round(ops.cast(probability, "float64") * (AUC_BINS - 1)), "int32")
        bins = ops.reshape(ops.cast(vessel, "int32") * AUC_BINS + level, (-1,))
        counts = ops.segment_sum(ops.reshape(ops.cast(counted, "int32"), (-1,)), bins, 2 * AUC_BINS)
        self.histogram.assign_add(ops.cast(ops.reshape(counts, (2, AUC_BINS)), "int64"))

    def result(self):
        negatives, positives = (ops.cast(self.histogram[i], "float64") for i in (0, 1))
        above = ops.flip(ops.cumsum(ops.flip(positives, 0)), 0) - positives  # vessel pixels in higher bins
        # the trapezoids from the highest bin down: width negatives / N, mean height (above + positives / 2) / P
        area = ops.sum(negatives * (above + positives / 2)) / (ops.sum(positives) * ops.sum(negatives))
        return ops.cast(area, self.dtype)
