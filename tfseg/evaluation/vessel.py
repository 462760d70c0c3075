"""The retinal-vessel protocol: threshold metrics from confusion counts, ROC-AUC as scikit-learn's (from value counts).

Predictions are foreground probabilities in [0, 1]; a pixel is vessel when `p > threshold` (default 0.5: the
argmax of a two-class softmax, as in EAR-Net's code). Every metric is computed

  pooled     over all pixels of all images (what EAR-Net and SA-UNet report: the keys Acc ... AUC), and
  per image  as the mean over images of each image's value (`per_image`),

over the whole image, and also inside the field of view when the dataset has FOV masks (`fov`, as DRIVE-based
papers often report). Acc = (TP+TN)/N, Se = TP/(TP+FN), Sp = TN/(TN+FP), F1 = 2TP/(2TP+FP+FN),
IoU = TP/(TP+FP+FN), MCC = (TP*TN - FP*FN)/sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); a ratio with a zero denominator
is 0 (scikit-learn's convention). Per-image AUC is undefined on an image without vessels or without background:
such images are left out of its mean (and counted).
"""

import numpy as np

METRICS = ("Acc", "Se", "Sp", "F1", "IoU", "MCC", "AUC")
REGIONS = ("whole", "fov")
RESAMPLES_AS_WEIGHTS = False  # pooled ratios: the bootstrap summarises each resample in turn


def metric_names(threshold=0.5):
    return METRICS


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else 0.0


def threshold_metrics(tp, fp, tn, fn):
    """Acc, Se, Sp, F1, IoU and MCC of confusion counts (Python ints or floats)."""
    tp, fp, tn, fn = (float(v) for v in (tp, fp, tn, fn))
    mcc_denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "Acc": _ratio(tp + tn, tp + fp + tn + fn),
        "Se": _ratio(tp, tp + fn),
        "Sp": _ratio(tn, tn + fp),
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
        "IoU": _ratio(tp, tp + fp + fn),
        "MCC": _ratio(tp * tn - fp * fn, mcc_denominator),
    }


def value_counts(probability, ground_truth):
    """(distinct probabilities, vessel pixels at each, background pixels at each): a lossless summary for ROC
    curves, small for uint8 maps, which lets images be pooled without keeping their pixels."""
    values, inverse = np.unique(probability, return_inverse=True)
    inverse = inverse.ravel()
    positives = np.bincount(inverse[ground_truth.ravel()], minlength=len(values))
    negatives = np.bincount(inverse[~ground_truth.ravel()], minlength=len(values))
    return values, positives, negatives


def merge_value_counts(summaries):
    """One `value_counts` summary of several (summed directly when they share one values array, see `on_grid`)."""
    if all(s[0] is summaries[0][0] for s in summaries):
        return summaries[0][0], sum(s[1] for s in summaries), sum(s[2] for s in summaries)
    values, inverse = np.unique(np.concatenate([s[0] for s in summaries]), return_inverse=True)
    merged = [
        np.bincount(inverse, weights=np.concatenate([s[i] for s in summaries]), minlength=len(values)) for i in (1, 2)
    ]
    return values, *merged


BOOTSTRAP_LEVELS = 65536  # probabilities binned to 1/65535 for the bootstrap (exact for 8- and 16-bit maps)
_GRID = np.linspace(0.0, 1.0, BOOTSTRAP_LEVELS)


def on_grid(summary):
    """A `value_counts` summary with the probabilities binned to BOOTSTRAP_LEVELS levels, over one shared values
    array, so that `merge_value_counts` of many is a sum: a model's float probabilities have ~10^5 distinct values
    per image, and merging them exactly for each of 1000 resamples took minutes."""
    values, positives, negatives = summary
    index = np.rint(np.asarray(values, np.float64) * (BOOTSTRAP_LEVELS - 1)).astype(np.int64)
    counts = [np.bincount(index, weights=c, minlength=BOOTSTRAP_LEVELS) for c in (positives, negatives)]
    return _GRID, *counts


def bootstrap_scores(scores):
    """The per-image scores the bootstrap resamples: value summaries `on_grid` (the pooled AUC of a resample then
    moves by ~1e-8, measured on float maps; every other value is exact)."""
    return [
        {**s, **{region: {**s[region], "values": on_grid(s[region]["values"])} for region in REGIONS if region in s}}
        for s in scores
    ]


def auc(summary):
    """ROC-AUC of a `value_counts` summary: the trapezoidal area under the ROC curve through every distinct value
    (tied pixels move together), which is scikit-learn's `roc_auc_score` on the pixels themselves, computed from
    the counts (about 10x faster; the bootstrap recomputes it a thousand times). NaN when one class is absent."""
    values, positives, negatives = summary
    if not positives.sum() or not negatives.sum():
        return float("nan")
    tpr = np.concatenate([[0.0], np.cumsum(positives[::-1], dtype=np.float64)]) / positives.sum()
    fpr = np.concatenate([[0.0], np.cumsum(negatives[::-1], dtype=np.float64)]) / negatives.sum()
    return float(np.trapezoid(tpr, fpr))


def f1_curve(summary, thresholds):
    """Pooled F1 (= Dice) of `p > t` for each threshold t, from a `value_counts` summary."""
    values, positives, negatives = summary
    above = np.searchsorted(values, thresholds, side="right")  # values[above:] > t
    tp = np.concatenate([np.cumsum(positives[::-1])[::-1], [0]])[above]
    fp = np.concatenate([np.cumsum(negatives[::-1])[::-1], [0]])[above]
    fn = positives.sum() - tp
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(len(thresholds)), where=denominator > 0)


def score_image(probability, ground_truth, fov=None, threshold=0.5):
    """Per-image counts, value summary and AUC for the whole image and, given a FOV mask, inside it."""
    regions = {"whole": np.ones_like(ground_truth)}
    if fov is not None:
        regions["fov"] = fov
    vessel = probability > threshold
    score = {}
    for region, inside in regions.items():
        gt, predicted = ground_truth[inside], vessel[inside]
        summary = value_counts(probability[inside], gt)
        tp = int(np.count_nonzero(predicted & gt))
        fp = int(np.count_nonzero(predicted & ~gt))
        fn = int(np.count_nonzero(gt)) - tp
        score[region] = {"counts": (tp, fp, gt.size - tp - fp - fn, fn), "values": summary, "AUC": auc(summary)}
    return score


def _region_results(scores, region):
    counts = np.sum([s[region]["counts"] for s in scores], axis=0)
    pooled = {**threshold_metrics(*counts), "AUC": auc(merge_value_counts([s[region]["values"] for s in scores]))}
    per_image = [{**threshold_metrics(*s[region]["counts"]), "AUC": s[region]["AUC"]} for s in scores]
    return pooled, {key: _mean_of_defined([row[key] for row in per_image]) for key in METRICS}


def _mean_of_defined(values):
    values = np.asarray(values, np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def summarize(scores, threshold=0.5):
    """Dataset results: pooled whole-image metrics as the top-level keys, then `per_image`, and `fov` (pooled,
    with its own `per_image`) when every image has a FOV mask."""
    pooled, per_image = _region_results(scores, "whole")
    results = {**pooled, "per_image": per_image}
    if all("fov" in s for s in scores):
        fov_pooled, fov_per_image = _region_results(scores, "fov")
        results["fov"] = {**fov_pooled, "per_image": fov_per_image}
    return results


def image_row(score, threshold=0.5):
    """One image's line of per_image.csv (whole image, and FOV columns when present)."""
    row = {**threshold_metrics(*score["whole"]["counts"]), "AUC": score["whole"]["AUC"]}
    if "fov" in score:
        row.update(
            {
                f"fov_{key}": value
                for key, value in {**threshold_metrics(*score["fov"]["counts"]), "AUC": score["fov"]["AUC"]}.items()
            }
        )
    return row


def undefined_auc_images(scores):
    """How many images have no per-image AUC (only one class in the ground truth)."""
    return sum(np.isnan(s["whole"]["AUC"]) for s in scores)


def dice_curve(scores):
    """(thresholds, pooled F1 = Dice at each) for the Dice-vs-threshold plot."""
    thresholds = np.arange(256) / 255.0
    return thresholds, f1_curve(merge_value_counts([s["whole"]["values"] for s in scores]), thresholds)
