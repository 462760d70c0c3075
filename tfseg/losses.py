"""Losses (keras.ops only, any backend).

PraNet's structure loss (Fan et al., MICCAI 2020, eq. 4; `structure_loss` in the official MyTrain.py):
weighted BCE + weighted IoU with boundary-emphasising weights `w = 1 + 5 * |avgpool31(mask) - mask|`.
"""

import keras
from keras import ops

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
