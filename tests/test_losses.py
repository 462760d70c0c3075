import numpy as np
import pytest

from tfseg.losses import StructureLoss, structure_weights


def numpy_weights(mask):
    """Direct 31x31 mean over the zero-padded mask (torch avg_pool2d, count_include_pad=True)."""
    padded = np.pad(mask[..., 0], ((0, 0), (15, 15), (15, 15)))
    pooled = np.zeros(mask.shape[:3])
    for i in range(mask.shape[1]):
        for j in range(mask.shape[2]):
            pooled[:, i, j] = padded[:, i : i + 31, j : j + 31].sum(axis=(1, 2)) / 961.0
    return 1 + 5 * np.abs(pooled - mask[..., 0])


def numpy_structure_loss(logits, mask, weighted_bce=True):
    """Per-image structure loss from the textbook formulas, float64."""
    x, g = logits[..., 0].astype("float64"), mask[..., 0].astype("float64")
    w = numpy_weights(mask)
    p = 1 / (1 + np.exp(-x))
    bce = -(g * np.log(p) + (1 - g) * np.log(1 - p))
    wbce = (w * bce).sum((1, 2)) / w.sum((1, 2)) if weighted_bce else bce.mean((1, 2))
    inter = (w * p * g).sum((1, 2))
    union = (w * (p + g)).sum((1, 2))
    return wbce + 1 - (inter + 1) / (union - inter + 1)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 40, 36, 1), "float32")
    mask[0, 5:20, 8:30] = 1  # interior blob
    mask[1, :12, :10] = 1  # touches the top-left border: padding is counted here
    mask[1, 30:, 20:] = 1  # and the bottom-right one
    # mask[2] stays empty
    logits = rng.normal(0, 2, size=mask.shape).astype("float32")
    return logits, mask


def test_weights_match_direct_pool_with_padding_counted(batch):
    _, mask = batch
    np.testing.assert_allclose(np.asarray(structure_weights(mask))[..., 0], numpy_weights(mask), atol=1e-5)
    # At a foreground corner the counted zero padding lowers the pool: weight well above 1.
    assert numpy_weights(mask)[1, 0, 0] > 4.0


@pytest.mark.parametrize("weighted_bce", [True, False])
def test_loss_matches_numpy(batch, weighted_bce):
    logits, mask = batch
    expected = numpy_structure_loss(logits, mask, weighted_bce)
    per_image = StructureLoss(weighted_bce, reduction=None)(mask, logits)
    np.testing.assert_allclose(np.asarray(per_image), expected, rtol=1e-5)
    mean = StructureLoss(weighted_bce)(mask, logits)
    np.testing.assert_allclose(float(mean), expected.mean(), rtol=1e-5)


def test_weighting_changes_the_bce(batch):
    logits, mask = batch
    assert not np.allclose(numpy_structure_loss(logits, mask, True), numpy_structure_loss(logits, mask, False))


def test_deep_supervision_sums_the_maps(batch):
    logits, mask = batch
    loss = StructureLoss(reduction=None)
    maps = [logits, 0.5 * logits, -logits, logits + 1]
    expected = sum(numpy_structure_loss(m, mask) for m in maps)
    np.testing.assert_allclose(np.asarray(loss(mask, maps)), expected, rtol=1e-5)


def test_loss_is_smooth_not_thresholded(batch):
    logits, mask = batch
    loss = StructureLoss()
    assert float(loss(mask, logits)) != float(loss(mask, logits + 1e-2))


def test_confident_correct_prediction_scores_near_zero(batch):
    _, mask = batch
    logits = np.where(mask > 0, 20.0, -20.0).astype("float32")
    per_image = np.asarray(StructureLoss(reduction=None)(mask, logits))
    assert np.all(per_image < 1e-3)
