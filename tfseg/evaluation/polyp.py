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

import numpy as np
import py_sod_metrics as sod
from py_sod_metrics.utils import prepare_data
from skimage.util import img_as_ubyte

CURVE_METRICS = ("dice", "iou", "em")  # per-threshold curves, 256 levels, ascending threshold
SCALAR_METRICS = ("wFm", "Sm", "adpEm", "MAE")


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

    Every value comes from pysodmetrics' own classes, stepped on this one image (their dataset results are plain
    means of these per-image values, which `summarize` takes)."""
    grey = prediction if prediction.dtype == np.uint8 else prediction.astype(np.float64) * 255  # the 8-bit scale
    pred, gt = prepare_data(grey, ground_truth.astype(np.uint8) * 255)
    overlap = sod.FmeasureV2(
        {
            "dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
            "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False),
        }
    )
    emeasure, wfm, smeasure, mae = sod.Emeasure(), sod.WeightedFmeasure(beta=1), sod.Smeasure(alpha=0.5), sod.MAE()
    for meter in (overlap, emeasure, wfm, smeasure, mae):
        meter.step(pred, gt, normalize=False)
    curves = overlap.get_results()
    em = emeasure.get_results()["em"]
    foreground = np.count_nonzero(gt)
    binary = sod.FmeasureV2.get_statistics(pred > threshold, gt, FG=foreground, BG=gt.size - foreground)
    dice_name, iou_name = binary_names(threshold)
    return {
        # pysodmetrics orders its curves from `>= 255` down to `>= 0`
        "dice": curves["dice"]["dynamic"][::-1],
        "iou": curves["iou"]["dynamic"][::-1],
        "em": em["curve"][::-1],
        "wFm": float(wfm.get_results()["wfm"]),
        "Sm": float(smeasure.get_results()["sm"]),
        "adpEm": float(em["adp"]),
        "MAE": float(mae.get_results()["mae"]),
        dice_name: float(sod.DICEHandler(False, False)(**binary)),
        iou_name: float(sod.IOUHandler(False, False)(**binary)),
    }


def summarize(scores, threshold=0.5):
    """Dataset results (the keys of `metric_names`) from the `score_image` dicts of its images."""
    mean = lambda key: np.mean([s[key] for s in scores], axis=0)
    dice, iou, em = mean("dice"), mean("iou"), mean("em")
    results = {
        "meanDice": dice.mean(),
        "meanIoU": iou.mean(),
        "wFm": mean("wFm"),
        "Sm": mean("Sm"),
        "meanEm": em.mean(),
        "maxEm": em.max(),
        "adpEm": mean("adpEm"),
        "MAE": mean("MAE"),
        **{name: mean(name) for name in binary_names(threshold)},
    }
    return {key: float(value) for key, value in results.items()}


def bootstrap_scores(scores):
    """The per-image scores the bootstrap resamples: these, unchanged (every dataset value is a mean of them)."""
    return scores


def image_row(score, threshold=0.5):
    """One image's line of per_image.csv: the dataset metrics computed on this image alone."""
    return summarize([score], threshold)


def dice_curve(scores):
    """(thresholds in [0, 1], mean Dice over the images at each) for the Dice-vs-threshold plot."""
    return np.arange(256) / 255.0, np.mean([s["dice"] for s in scores], axis=0)
