"""Losses (keras.ops only, any backend).

PraNet's structure loss (Fan et al., MICCAI 2020, eq. 4; `structure_loss` in the official MyTrain.py):
weighted BCE + weighted IoU with boundary-emphasising weights `w = 1 + 5 * |avgpool31(mask) - mask|`.
EAR-Net's losses (Wang et al., DICTA 2021): cross-entropy with an ignore label over the multi-scale outputs, or the
official criterion, RMI + sigmoid BCE (`RMILoss`, Zhao et al., NeurIPS 2019), and the error-attention MSE of stage 2;
for `model.compile`, one Keras loss per output (`EARNetLoss.compile_arguments`).
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


RMI_POS_ALPHA = 5e-4  # on the diagonals of the covariances: keeps them positive definite (official _POS_ALPHA)
RMI_CLIP_MIN = 1e-6  # added to the masked probabilities (official _CLIP_MIN)


def _valid_one_hot(labels, num_classes, ignore_label):
    """(one-hot labels [B, H, W, C], all-zero at ignored pixels; the valid-pixel mask [B, H, W, 1])."""
    labels = _labels(labels)
    valid = labels != ignore_label
    mask = ops.cast(valid, "float32")[..., None]
    return ops.one_hot(ops.where(valid, labels, 0), num_classes) * mask, mask


def masked_sigmoid_bce(labels, logits, ignore_label=IGNORE_LABEL):
    """Per image: binary cross-entropy of each class's sigmoid against its one-hot channel, summed over the valid
    pixels and the classes and divided by (valid pixels + 1), as the BCE part of NVIDIA's `RMILoss`."""
    one_hot, mask = _valid_one_hot(labels, logits.shape[-1], ignore_label)
    bce = ops.binary_crossentropy(one_hot, logits, from_logits=True) * mask
    return ops.sum(bce, axis=(1, 2, 3)) / (ops.sum(mask, axis=(1, 2, 3)) + 1.0)


def _region_vectors(maps, radius):
    """[B, C, radius^2, N]: the radius x radius neighbourhood of each of the N valid positions of `maps` [B, H, W, C],
    offsets in row-major order (no padding: N = (H - radius + 1)(W - radius + 1))."""
    last = radius - 1
    shifted = [
        maps[:, dy : dy - last or None, dx : dx - last or None, :] for dy in range(radius) for dx in range(radius)
    ]
    vectors = ops.stack(shifted, axis=-1)  # [B, H', W', C, radius^2]
    vectors = ops.reshape(vectors, (ops.shape(maps)[0], -1, maps.shape[-1], radius * radius))
    return ops.transpose(vectors, (0, 2, 3, 1))


def rmi_lower_bound(one_hot, probs, radius=3, pool_size=4):
    """Per image: sum over classes of `0.5 log det(Cov(Y) - Cov(Y, P) (Cov(P) + aI)^-1 Cov(Y, P)^T + aI) / d`,
    d = radius^2: minimising this log det of the approximate posterior variance of Y given P maximises the RMI
    lower bound (Zhao et al., NeurIPS 2019) up to a constant. Covariances are of the d-dim region vectors
    after an average pool (kernel = stride = `pool_size`, zero padding `pool_size // 2` counted in the mean, torch's
    `avg_pool2d` default), centred but not divided by the number of vectors, in float64, as the official code."""
    pad = pool_size // 2

    def downsample(maps):
        maps = ops.pad(maps, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return ops.average_pool(maps, pool_size, strides=pool_size, padding="valid")

    labels = _region_vectors(downsample(one_hot), radius)
    preds = _region_vectors(downsample(probs), radius)
    labels, preds = ops.cast(labels, "float64"), ops.cast(preds, "float64")
    labels = labels - ops.mean(labels, axis=-1, keepdims=True)
    preds = preds - ops.mean(preds, axis=-1, keepdims=True)
    transpose = lambda x: ops.swapaxes(x, -1, -2)
    outer = lambda a, b: ops.einsum("...in,...jn->...ij", a, b)  # a b^T (Keras' torch matmul returns float32)
    alpha = RMI_POS_ALPHA * ops.eye(radius * radius, dtype="float64")
    label_cov, cross_cov = outer(labels, labels), outer(labels, preds)
    pred_cov = outer(preds, preds) + alpha
    posterior_var = label_cov - outer(cross_cov, transpose(ops.solve(pred_cov, transpose(cross_cov))))
    chol = ops.cholesky(posterior_var + alpha)
    log_det = 2.0 * ops.sum(ops.log(ops.diagonal(chol, axis1=-2, axis2=-1) + 1e-8), axis=-1)  # [B, C]
    return ops.cast(ops.sum(0.5 * log_det, axis=-1) / (radius * radius), "float32")


def rmi_loss(labels, logits, ignore_label=IGNORE_LABEL, radius=3, pool_size=4, weight_lambda=0.5):
    """Per image: `weight_lambda * masked_sigmoid_bce + (1 - weight_lambda) * rmi_lower_bound` on the per-class
    sigmoid probabilities, zeroed at ignored pixels, plus RMI_CLIP_MIN (NVIDIA's `RMILoss.forward_sigmoid`)."""
    one_hot, mask = _valid_one_hot(labels, logits.shape[-1], ignore_label)
    probs = ops.sigmoid(logits) * mask + RMI_CLIP_MIN
    rmi = rmi_lower_bound(one_hot, probs, radius, pool_size)
    return weight_lambda * masked_sigmoid_bce(labels, logits, ignore_label) + (1.0 - weight_lambda) * rmi


@keras.saving.register_keras_serializable(package="tfseg")
class MaskedSigmoidBCE(_MaskedLoss):
    """`masked_sigmoid_bce` as a Keras loss."""

    per_image = staticmethod(masked_sigmoid_bce)


@keras.saving.register_keras_serializable(package="tfseg")
class RMILoss(_MaskedLoss):
    """Region Mutual Information loss (Zhao et al., NeurIPS 2019) as NVIDIA semantic-segmentation's `loss/rmi.py`
    (adapted from ZJULearning/RMI), on [B, H, W, C] logits and [B, H, W] integer labels (`rmi_loss`):

    - labels: one-hot over the C classes, all-zero where the label is `ignore_label`; probabilities: the sigmoid of
      each class's logit (not a softmax), times the valid mask, plus 1e-6;
    - both are average-pooled (4x4, stride 4, padding 2) and cut into 3x3 neighbourhoods: 9-dim vectors Y, P;
    - `0.5 log det(Sigma_{Y|P} + aI)`, a = 5e-4 (also added to Cov(P) before its inverse),
      log det by Cholesky, divided by 9, summed over the classes;
    - mixed with the sigmoid BCE over valid pixels: `0.5 BCE + 0.5 RMI` (weight_lambda 0.5, lambda_way 1).

    The official code averages over the images of a GPU (1 in EAR-Net's recipe); here the value is per image and
    the batch mean is the trainer's. Needs maps of at least 8x8 (3x3 pooled cells). float64 inside: the JAX
    backend needs `jax_enable_x64` for it."""

    def __init__(self, ignore_label=IGNORE_LABEL, radius=3, pool_size=4, weight_lambda=0.5, **kwargs):
        super().__init__(ignore_label, **kwargs)
        self.radius, self.pool_size, self.weight_lambda = radius, pool_size, weight_lambda

    def call(self, y_true, y_pred):
        return rmi_loss(y_true, y_pred, self.ignore_label, self.radius, self.pool_size, self.weight_lambda)

    def get_config(self):
        return {
            **super().get_config(),
            "radius": self.radius,
            "pool_size": self.pool_size,
            "weight_lambda": self.weight_lambda,
        }


CRITERIA = {"ce": (MaskedCrossEntropy, MaskedCrossEntropy), "rmi": (RMILoss, MaskedSigmoidBCE)}


@keras.saving.register_keras_serializable(package="tfseg")
class EARNetLoss(keras.losses.Loss):
    """EAR-Net's loss, per image: `L(J) + 0.4 L_aux(J_aux) + 0.05 (L_aux(up(p_0.5)) + L_aux(p_1.0))` over the outputs
    of `HRNetOCR(training=True)`, plus `0.5 * MSE(A, E)` in stage 2. `y_true`: the labels, or in stage 2
    {"labels": labels, "error_maps": E}; `y_pred`: the model's outputs whole (tfseg.models.supervision).
    `criterion`: "ce", cross-entropy with ignore label 255 for every term, or "rmi", the official recipe's
    (`rmi_loss: true`): the criterion is NVIDIA's `RMILoss` for every term, with its RMI part only on the fused
    prediction J (`do_rmi=True`), while the aux and the single-scale terms get its sigmoid BCE alone (`do_rmi=False`,
    LOSS.OCR_AUX_RMI False)."""

    def __init__(
        self,
        aux_weight=0.4,
        scale_weight=0.05,
        error_weight=0.5,
        ignore_label=IGNORE_LABEL,
        criterion="ce",
        reduction="sum_over_batch_size",
        name="earnet_loss",
        dtype=None,
    ):
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {tuple(CRITERIA)}, got {criterion!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.aux_weight, self.scale_weight = aux_weight, scale_weight
        self.error_weight, self.ignore_label, self.criterion = error_weight, ignore_label, criterion
        self._terms = self.output_losses()

    def output_losses(self):
        """{output name: its Keras loss} for "pred", "aux", "pred_05" and "pred_10"."""
        main, other = CRITERIA[self.criterion]
        return {
            "pred": main(self.ignore_label),
            **{name: other(self.ignore_label) for name in ("aux", "pred_05", "pred_10")},
        }

    def call(self, y_true, y_pred):
        labels, error_maps = (
            (y_true["labels"], y_true.get("error_maps")) if isinstance(y_true, dict) else (y_true, None)
        )
        term = lambda key: self._terms[key].call(labels, ops.cast(y_pred[key], "float32"))
        loss = term("pred") + self.aux_weight * term("aux") + self.scale_weight * (term("pred_05") + term("pred_10"))
        if error_maps is not None:
            attention = ops.cast(y_pred["error_attention"], "float32")
            loss = loss + self.error_weight * masked_mse(error_maps, attention, self.ignore_label)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "aux_weight": self.aux_weight,
            "scale_weight": self.scale_weight,
            "error_weight": self.error_weight,
            "ignore_label": self.ignore_label,
            "criterion": self.criterion,
        }

    def compile_arguments(self, error_maps=False):
        """{"loss", "loss_weights"} for `model.compile(**...)`: this loss as Keras' weighted sum of one loss per
        output (the same mean over the batch), with y = {"pred": labels, "aux": labels, "pred_05": labels,
        "pred_10": labels} and, with `error_maps` (stage 2), "error_attention": the error maps."""
        weights = {"pred": 1.0, "aux": self.aux_weight, "pred_05": self.scale_weight, "pred_10": self.scale_weight}
        loss = self.output_losses()
        if error_maps:
            loss["error_attention"] = MaskedMSE(self.ignore_label)
            weights["error_attention"] = self.error_weight
        return {"loss": loss, "loss_weights": weights}
