"""EAR-Net (Wang et al., DICTA 2021): the stage-1 HRNet-OCR network refined by an error-attention branch.

Stage 2 starts from the stage-1 weights and adds an error-attention head (the scale-attention design) on the OCR
features, supervised by the stage-1 model's error maps `E = 1[argmax prediction != ground truth]`; its output A
modulates the logits, `L' = L * (lambda + mu * A)` (lambda = mu = 0.5).
"""

import keras
import numpy as np

from tfseg.models.hrnet import HRNetOCR


@keras.saving.register_keras_serializable(package="tfseg")
class EARNet(HRNetOCR):
    """HRNetOCR with the error-attention head A on the OCR features, which modulates logits as
    `L * (lambda + mu * A)` (`modulation` = (lambda, mu)): in training the fused J and J_aux by the 1x pass's A
    (returned as "error_attention", supervised by the error maps), at inference every scale before fusion.
    Outputs: HRNetOCR's and "error_attention", in training and inference alike."""

    extra_heads = {"error_attention": "error_attn"}

    def __init__(self, config="small", num_classes=2, scales=(2.0, 1.0, 0.5), modulation=(0.5, 0.5), **kwargs):
        super().__init__(config, num_classes, scales, **kwargs)
        self.modulation = tuple(modulation)

    def modulate(self, logits, outputs):
        lam, mu = self.modulation
        return logits * (lam + mu * outputs["error_attention"])

    def get_config(self):
        return {**super().get_config(), "modulation": list(self.modulation)}

    @classmethod
    def from_stage1(cls, stage1, modulation=(0.5, 0.5)):
        """A stage-2 model carrying every weight of the trained `stage1` (an HRNetOCR); the error head is new."""
        model = cls(
            stage1.config_name,
            stage1.num_classes,
            stage1.scales,
            modulation,
            region_batchnorm=stage1.region_batchnorm,
            norm=stage1.norm,
        )
        for layer in stage1.net.layers:
            if layer.weights:
                model.net.get_layer(layer.name).set_weights(layer.get_weights())
        return model


def error_map(prediction, ground_truth):
    """EAR-Net's error map, uint8 in {0, 1}: 1 where the predicted class differs from the ground truth (false
    positives and false negatives alike). `prediction` and `ground_truth`: class labels or boolean maps of one
    shape. (Written as 0/255 PNGs; a training crop pads it with the ignore label, never with the vessel mask as the
    official code does.)"""
    return (np.asarray(prediction).astype(np.int64) != np.asarray(ground_truth).astype(np.int64)).astype(np.uint8)
