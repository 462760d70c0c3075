"""The polyp protocol of PraNet's one-key MATLAB evaluation (Fan et al., MICCAI 2020), computed by pysodmetrics,
its maintained Python port.

A prediction is a uint8 map at the ground truth's original size (`prediction_map` makes it the way PraNet's
`MyTest.py` does), or float probabilities p in [0, 1] (a float map file), scored as the map p * 255 without
rounding it to 8 bits; pysodmetrics min-max normalises it (`mapminmax(im2double(pred))`) and takes the ground truth
as grey > 128. Per dataset (keys of results.json):

  meanDice, meanIoU   Dice / IoU of `pred >= t` for the 256 levels t (the 257-bin histogram of pysodmetrics),
                      averaged over images, then over levels; a score is 0 when TP = 0 (so also on empty
                      ground truth)
  wFm                 weighted F-measure, beta^2 = 1 (Margolin et al., CVPR 2014); 0 on empty ground truth
  Sm                  S-measure, alpha = 0.5 (Fan et al., ICCV 2017); 1 - mean(pred) on empty ground truth
  meanEm, maxEm       mean / max over the 256 levels of the E-measure curve (Fan et al., IJCAI 2018)
  adpEm               E-measure at the adaptive threshold min(2 * mean(pred), 1)
  MAE                 mean absolute error
  dice@T, iou@T       Dice / IoU of `pred > T` (T = 0.5 by default: `dice@0.5`, `iou@0.5`)
"""

import cv2
import numpy as np
import py_sod_metrics as sod
from py_sod_metrics.utils import EPS, prepare_data
from scipy import ndimage
from skimage.util import img_as_ubyte

CURVE_METRICS = ("dice", "iou", "em")  # per-threshold curves, 256 levels, ascending threshold
SCALAR_METRICS = ("wFm", "Sm", "adpEm", "MAE")
RESAMPLES_AS_WEIGHTS = True  # `summarize` takes bootstrap resamples as weights (tfseg.evaluation.statistics)


def metric_names(threshold=0.5):
    """The keys of a dataset's results, in table order."""
    return ("meanDice", "meanIoU", "wFm", "Sm", "meanEm", "maxEm", "adpEm", "MAE", *binary_names(threshold))


def binary_names(threshold):
    return f"dice@{threshold:g}", f"iou@{threshold:g}"


def prediction_map(probability):
    """PraNet's stored map: `(p - min) / (max - min + 1e-8)` of the sigmoid probability at the ground truth's
    size, written as uint8 by `img_as_ubyte` (rounding)."""
    p = np.asarray(probability, np.float32)
    return img_as_ubyte((p - p.min()) / (p.max() - p.min() + 1e-8))


def score_image(prediction, ground_truth, threshold=0.5):
    """Per-image scores of a uint8 map (or float probabilities in [0, 1]) against a boolean mask of the same size:
    curves `dice`, `iou`, `em` (float64 [256], index t = threshold t / 255) and the scalars `wFm`, `Sm`, `adpEm`,
    `MAE`, `dice@T`, `iou@T`.

    The values are pysodmetrics' for this one image (their dataset results are plain means of these per-image
    values, which `summarize` takes): S-measure, MAE, adaptive E-measure and the Dice/IoU formulas from its own
    classes; the 256-level counts, the E-measure curve and wFm computed as it does, faster (`level_counts`,
    `emeasure`, `weighted_fmeasure`), and tested equal to it."""
    grey = prediction if prediction.dtype == np.uint8 else prediction.astype(np.float64) * 255  # the 8-bit scale
    pred, gt = prepare_data(grey, ground_truth.astype(np.uint8) * 255)
    size, foreground = gt.size, np.count_nonzero(gt)
    tp, fp = level_counts(pred, gt)
    levels = {"tp": tp, "fp": fp, "tn": size - foreground - fp, "fn": foreground - tp}
    smeasure, mae = sod.Smeasure(alpha=0.5), sod.MAE()
    for meter in (smeasure, mae):
        meter.step(pred, gt, normalize=False)
    adaptive = sod.Emeasure()
    adaptive.gt_fg_numel, adaptive.gt_size = foreground, size  # what its `step` sets before `cal_adaptive_em`
    binary = sod.FmeasureV2.get_statistics(pred > threshold, gt, FG=foreground, BG=size - foreground)
    dice_name, iou_name = binary_names(threshold)
    return {
        "dice": sod.DICEHandler(False, False)(**levels),
        "iou": sod.IOUHandler(False, False)(**levels),
        "em": emeasure(tp, fp, foreground, size),
        "wFm": weighted_fmeasure(pred, gt),
        "Sm": float(smeasure.get_results()["sm"]),
        "adpEm": float(adaptive.cal_adaptive_em(pred, gt)),
        "MAE": float(mae.get_results()["mae"]),
        dice_name: float(sod.DICEHandler(False, False)(**binary)),
        iou_name: float(sod.IOUHandler(False, False)(**binary)),
    }


def level_counts(pred, gt):
    """Pixels of the ground truth's foreground (TP) and background (FP) predicted at each level t = 0..255, i.e.
    `(pred * 255).astype(uint8) >= t`: the cumulative histograms of pysodmetrics' `FmeasureV2.dynamically_binarizing`
    and `Emeasure.cal_em_with_cumsumhistogram`, counted by `np.bincount` (`np.histogram` sorts the pixels)."""
    level = (pred * 255).astype(np.uint8).astype(np.intp) + 256 * ~gt  # one pass: foreground 0-255, background 256-511
    counts = np.cumsum(np.bincount(level.ravel(), minlength=512).reshape(2, 256)[:, ::-1], axis=1)[:, ::-1]
    return counts[0], counts[1]


def emeasure(tp, fp, foreground, size):
    """E-measure (Fan et al., IJCAI 2018) of predictions given by their counts (arrays or scalars) of foreground
    pixels on the ground truth (tp) and off it (fp), as pysodmetrics' `Emeasure`: the enhanced alignment
    (1 + xi)^2 / 4, xi = 2ab / (a^2 + b^2) of the demeaned prediction a and ground truth b, summed over the four
    (prediction, ground truth) parts and divided by N - 1; with no foreground (or no background) in the ground
    truth, the pixels predicted background (or foreground)."""
    predicted = tp + fp
    if foreground == 0:
        total = size - predicted
    elif foreground == size:
        total = predicted
    else:
        mean_pred, mean_gt = predicted / size, foreground / size
        parts = [
            (tp, 1 - mean_pred, 1 - mean_gt),
            (fp, 1 - mean_pred, -mean_gt),
            (foreground - tp, -mean_pred, 1 - mean_gt),
            (size - predicted - (foreground - tp), -mean_pred, -mean_gt),
        ]
        total = sum(count * (2 * a * b / (a**2 + b**2 + EPS) + 1) ** 2 / 4 for count, a, b in parts)
    return total / (size - 1 + EPS)


_GAUSSIAN_7X7 = sod.WeightedFmeasure().matlab_style_gauss2D((7, 7), sigma=5)  # MATLAB's fspecial('gaussian', 7, 5)
_FAR = next(d for d in range(1, 1000) if 2 - np.exp(np.log(0.5) / 5 * d) == 2.0)  # 266 px: B = 2 in float64
# B = 2 - exp(log(0.5) / 5 * Dst) for each integer squared distance below _FAR^2 (the last entry: 2)
_DISTANCE_WEIGHT = 2 - np.exp(np.log(0.5) / 5 * np.sqrt(np.arange(_FAR**2 + 1, dtype=np.float64)))


def weighted_fmeasure(pred, gt, beta=1.0):
    """Weighted F-measure (Margolin et al., CVPR 2014, eqs. 3-8; beta^2 = 1) of a float map in [0, 1] against a
    boolean mask: pysodmetrics' `WeightedFmeasure.cal_wfm` (their port of the authors' MATLAB code), same values,
    3-4x faster on full-HD maps, because it computes each term only where the formula uses it:

    - the Gaussian-smoothed error EA enters only on the ground truth (MIN_E_EA = E off it), so E, Et (the error,
      taken at the nearest foreground pixel off it: scipy's feature transform, as `bwdist`) and its 7x7
      convolution are computed on the ground truth's bounding box grown by 3 pixels, which holds every
      foreground pixel (the transform of the crop picks the same pixels as that of the image);
    - the distance weight B = 2 - exp(log(0.5) / 5 * Dst) enters only off the ground truth, where E is the
      prediction, and is 2 in float64 beyond _FAR (266) pixels: the sum of E * B is taken on the box grown by _FAR
      (OpenCV's exact distance transform there, in float32, its squared distance rounded to the integer that
      scipy's float64 distance is the root of, B looked up by it), plus twice the prediction's sum elsewhere.
    0 on an empty ground truth, as pysodmetrics."""
    if not gt.any():
        return 0.0
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    grown = lambda margin: (
        slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
        slice(max(cols[0] - margin, 0), cols[-1] + margin + 1),
    )
    box, on_gt = grown(3), gt[grown(3)]
    error = np.abs(pred[box] - on_gt)
    error_t = error.copy()
    false_positive = 0.0
    if not gt.all():
        near = grown(_FAR)
        distance = cv2.distanceTransform((~gt[near]).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        squared = np.minimum(np.rint(np.square(distance, dtype=np.float64)), _FAR**2).astype(np.intp)
        # B is 1 on the ground truth (distance 0): the box's sum less the prediction there
        near_sum = np.sum(pred[near])
        weighted_near = np.sum(pred[near] * _DISTANCE_WEIGHT[squared]) - np.sum(pred[box][on_gt])
        false_positive = weighted_near + 2 * (np.sum(pred) - near_sum)
        off = ~on_gt
        near_rows, near_cols = ndimage.distance_transform_edt(off, return_distances=False, return_indices=True)
        error_t[off] = error[near_rows[off], near_cols[off]]
    error_a = ndimage.convolve(error_t, _GAUSSIAN_7X7, mode="constant", cval=0)
    weighted = np.minimum(error_a, error)[on_gt]  # Ew on the ground truth (B = 1 there)
    true_positive = np.count_nonzero(gt) - np.sum(weighted)
    recall = 1 - np.mean(weighted)
    precision = true_positive / (true_positive + false_positive + EPS)
    return float((1 + beta) * recall * precision / (recall + beta * precision + EPS))


def summarize(scores, threshold=0.5, weights=None):
    """Dataset results (the keys of `metric_names`) from the `score_image` dicts of its images: means over the
    images, maxEm the maximum of the mean E-measure curve. With `weights` ([resamples, images] counts, e.g. how
    often a bootstrap resample draws each image), {key: [resamples] array}: each row's weighted means, all rows
    in one product (every value is linear in the per-image scores but maxEm, taken after the mean)."""
    counts = np.ones((1, len(scores))) if weights is None else np.asarray(weights, np.float64)
    totals = counts.sum(axis=1)

    def mean(key):  # weighted sums over the images, then / the images counted: exact for equal values
        values = np.array([s[key] for s in scores], np.float64)
        return (counts @ values) / totals.reshape((-1,) + (1,) * (values.ndim - 1))

    dice, iou, em = mean("dice"), mean("iou"), mean("em")
    results = {
        "meanDice": dice.mean(axis=1),
        "meanIoU": iou.mean(axis=1),
        "wFm": mean("wFm"),
        "Sm": mean("Sm"),
        "meanEm": em.mean(axis=1),
        "maxEm": em.max(axis=1),
        "adpEm": mean("adpEm"),
        "MAE": mean("MAE"),
        **{name: mean(name) for name in binary_names(threshold)},
    }
    return {key: float(value[0]) for key, value in results.items()} if weights is None else results


def bootstrap_scores(scores):
    """The per-image scores the bootstrap resamples: these, unchanged (every dataset value is a mean of them)."""
    return scores


def image_row(score, threshold=0.5):
    """One image's line of per_image.csv: the dataset metrics computed on this image alone."""
    return summarize([score], threshold)


def dice_curve(scores):
    """(thresholds in [0, 1], mean Dice over the images at each) for the Dice-vs-threshold plot."""
    return np.arange(256) / 255.0, np.mean([s["dice"] for s in scores], axis=0)
