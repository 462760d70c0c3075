"""EAR-Net (Wang et al., DICTA 2021): the stage-1 HRNet-OCR network refined by an error-attention branch.

Stage 2 starts from the stage-1 weights and adds an error-attention head (the scale-attention design) on the OCR
features, supervised by the stage-1 model's error maps `E = 1[argmax prediction != ground truth]`; its output A
modulates the logits, `L' = L * (lambda + mu * A)` (lambda = mu = 0.5).
"""

import keras
import numpy as np

from tfseg.models.hrnet import HRNetOCR

IGNORE_LABEL = 255  # masks and error maps: pixels that no loss sees (crop padding)


@keras.saving.register_keras_serializable(package="tfseg")
class EARNet(HRNetOCR):
    """HRNetOCR with the error-attention head (see HRNetOCR for the training and inference outputs)."""

    def __init__(self, config="small", num_classes=2, scales=(2.0, 1.0, 0.5), modulation=(0.5, 0.5), **kwargs):
        kwargs.pop("error_attention", None)  # always on; present in configs saved by HRNetOCR.get_config
        super().__init__(config, num_classes, scales, error_attention=True, modulation=modulation, **kwargs)

    @classmethod
    def from_stage1(cls, stage1, modulation=(0.5, 0.5)):
        """A stage-2 model carrying every weight of the trained `stage1` (an HRNetOCR); the error head is new."""
        model = cls(stage1.config_name, stage1.num_classes, stage1.scales, modulation,
                    region_batchnorm=stage1.region_batchnorm, norm=stage1.norm)
        for layer in stage1.net.layers:
            if layer.weights:
                model.net.get_layer(layer.name).set_weights(layer.get_weights())
        return model


def error_map(prediction, ground_truth):
    """EAR-Net's error map, uint8 in {0, 1}: 1 where the predicted class differs from the ground truth (false
    positives and false negatives alike). `prediction` and `ground_truth`: class labels or boolean maps of one
    shape. (Written as 0/255 PNGs; a training crop pads it with IGNORE_LABEL, never with the vessel mask as the
    official code does.)"""
    return (np.asarray(prediction).astype(np.int64) != np.asarray(ground_truth).astype(np.int64)).astype(np.uint8)
