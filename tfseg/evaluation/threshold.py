"""The binarisation threshold chosen on validation images (training stores it in tfseg.json; `--threshold auto`
uses it): the t in THRESHOLDS that maximises the task's Dice of `probability > t` on the RAW probabilities (what
inference binarises), with the lowest t on ties.

  polyp   mean over images of each image's Dice (PraNet's per-image Dice; an empty mask predicted empty scores 1)
  vessel  pooled F1 (= Dice) over all pixels of all images (the vessel protocol's F1)
"""

import numpy as np

from tfseg.evaluation import vessel

THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)  # 0.01 ... 0.99
CRITERIA = {"polyp": "mean per-image Dice of probability > t", "vessel": "pooled F1 of probability > t"}


def image_dice_curve(probability, mask):
    """Dice of `probability > t` against the boolean `mask`, for each t in THRESHOLDS (one pass over pixels)."""
    above = np.searchsorted(THRESHOLDS, probability.ravel(), side="left")  # p > THRESHOLDS[:above]
    foreground = mask.ravel().astype(bool)
    hits = np.bincount(above[foreground], minlength=len(THRESHOLDS) + 1)
    misses = np.bincount(above[~foreground], minlength=len(THRESHOLDS) + 1)
    tp = np.cumsum(hits[::-1])[::-1][1:]  # pixels with p > t, per t
    fp = np.cumsum(misses[::-1])[::-1][1:]
    total = tp + fp + np.count_nonzero(foreground)
    return np.divide(2 * tp, total, out=np.ones(len(THRESHOLDS)), where=total > 0)


def choose(task, maps):
    """{"value", "criterion", "score", "score_at_0.5", "images", "chosen_on"} from (probability, boolean mask)
    pairs of validation images."""
    maps = list(maps)
    if task == "polyp":
        curve = np.mean([image_dice_curve(p, m) for p, m in maps], axis=0)
    else:
        summary = vessel.merge_value_counts([vessel.value_counts(p, m) for p, m in maps])
        curve = vessel.f1_curve(summary, THRESHOLDS)
    best = int(np.argmax(curve))
    return {
        "value": float(THRESHOLDS[best]),
        "criterion": CRITERIA[task],
        "score": float(curve[best]),
        "score_at_0.5": float(curve[np.searchsorted(THRESHOLDS, 0.5)]),
        "images": len(maps),
        "chosen_on": "validation",
    }
