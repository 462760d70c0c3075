"""Error analysis beside the protocol's numbers: where a model fails, not only how much.

Polyp
  by_size    meanDice and dice@T of the images in each polyp-size bin (mask area / image area: < 1 %, 1-5 %,
             5-15 %, > 15 %); images with an empty ground truth are counted apart.
  empty_gt   on images with an empty ground truth: the share with any pixel above the threshold and the mean
             predicted area, from the RAW probabilities. The protocol min-max normalises every map first
             (PraNet's `(p - min) / (max - min)`), which turns the faintest activation on a polyp-free frame into
             a full-strength map that it then scores as a false positive; the raw values say whether the model
             actually fired. With prediction maps (no model), the maps as stored stand in for the probabilities
             (`source` says so): maps saved after min-max normalisation show the protocol's view, not the model's.
Vessel (whole image, and inside the FOV where there is one)
  clDice     centreline Dice (Shit et al., CVPR 2021): 2 Tprec Tsens / (Tprec + Tsens) with Tprec = |S(P) n G| /
             |S(P)|, Tsens = |S(G) n P| / |S(G)|, S the skimage skeleton, P the prediction `p > T`, G the ground
             truth; mean over images and pooled over all pixels.
  Se_thin, Se_thick  sensitivity on ground-truth vessel pixels of vessels at most / more than THIN_WIDTH pixels
             wide, pooled. A vessel's width at a centreline pixel is 2 x its distance to the background (1 on a
             1- or 2-pixel-wide vessel); every vessel pixel takes the width of its nearest centreline pixel.
"""

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

SIZE_BINS = ((0.0, 0.01, "<1%"), (0.01, 0.05, "1-5%"), (0.05, 0.15, "5-15%"), (0.15, np.inf, ">15%"))
THIN_WIDTH = 2  # pixels: a vessel this wide or thinner is "thin"
STRUCTURE_COUNTS = ("skeleton_pred", "skeleton_pred_in_gt", "skeleton_gt", "skeleton_gt_in_pred")
WIDTH_COUNTS = ("thin", "thin_found", "thick", "thick_found")


def polyp_image(ground_truth, prediction, threshold, raw=None):
    """One image's inputs to the polyp analysis: the polyp's area fraction and, on an empty ground truth, the
    maximum and the area above `threshold` of the probabilities: `raw` ((maximum, area) of the model's own), else
    of `prediction` as stored (uint8 / 255, or float in [0, 1])."""
    extras = {"foreground_fraction": float(np.count_nonzero(ground_truth) / ground_truth.size)}
    if not ground_truth.any():
        if raw is None:
            probability = prediction / np.float32(255) if prediction.dtype == np.uint8 else prediction
            raw = float(probability.max()), float(np.count_nonzero(probability > threshold) / probability.size)
        extras["empty_gt_max"], extras["empty_gt_area"] = raw
    return extras


def polyp_summary(scores, threshold, source):
    """{"by_size": {bin: {"images", "meanDice", "dice@T"}}, "empty_gt": {...}} (empty_gt only where there are
    such images); `source` names what the empty-ground-truth values were computed from."""
    dice_name = f"dice@{threshold:g}"
    by_size = {}
    for low, high, label in SIZE_BINS:
        chosen = [s for s in scores if not s["empty_gt"] and low <= s["foreground_fraction"] < high]
        by_size[label] = {
            "images": len(chosen),
            "meanDice": _mean([np.mean(s["dice"]) for s in chosen]),
            dice_name: _mean([s[dice_name] for s in chosen]),
        }
    summary = {"by_size": by_size}
    empty = [s for s in scores if s["empty_gt"]]
    if empty:
        summary["empty_gt"] = {
            "images": len(empty),
            "false_positive_rate": _mean([s["empty_gt_max"] > threshold for s in empty]),
            "mean_predicted_area": _mean([s["empty_gt_area"] for s in empty]),
            "threshold": threshold,
            "source": source,
        }
    return summary


def vessel_image(predicted, ground_truth, regions):
    """One image's skeleton and vessel-width counts per region ({name: boolean mask}) of the binary prediction."""
    skeleton_pred, skeleton_gt = skeletonize(predicted), skeletonize(ground_truth)
    thin = _thin_vessels(ground_truth, skeleton_gt)
    counts = {}
    for region, inside in regions.items():
        values = (
            skeleton_pred & inside,
            skeleton_pred & ground_truth & inside,
            skeleton_gt & inside,
            skeleton_gt & predicted & inside,
            thin & inside,
            thin & predicted & inside,
            ground_truth & ~thin & inside,
            ground_truth & ~thin & predicted & inside,
        )
        counts[region] = dict(zip(STRUCTURE_COUNTS + WIDTH_COUNTS, (int(np.count_nonzero(v)) for v in values)))
    return counts


def _thin_vessels(ground_truth, skeleton):
    """Ground-truth pixels whose nearest centreline pixel lies on a vessel at most THIN_WIDTH pixels wide."""
    if not skeleton.any():
        return np.zeros_like(ground_truth)
    width = 2 * ndimage.distance_transform_edt(ground_truth)
    nearest = ndimage.distance_transform_edt(~skeleton, return_distances=False, return_indices=True)
    return ground_truth & (width[tuple(nearest)] <= THIN_WIDTH)


def vessel_summary(scores):
    """Per region: clDice (mean over images, and pooled), Se_thin and Se_thick (pooled), the pixel counts."""
    summary = {}
    for region in ("whole", "fov"):
        if not all(region in s["structure"] for s in scores):
            continue
        counts = [s["structure"][region] for s in scores]
        pooled = {key: sum(c[key] for c in counts) for key in STRUCTURE_COUNTS + WIDTH_COUNTS}
        summary[region] = {
            "clDice": _mean([_cl_dice(c) for c in counts]),
            "clDice_pooled": _cl_dice(pooled),
            "Se_thin": _ratio(pooled["thin_found"], pooled["thin"]),
            "Se_thick": _ratio(pooled["thick_found"], pooled["thick"]),
            "thin_pixels": pooled["thin"],
            "thick_pixels": pooled["thick"],
        }
    return summary


def _cl_dice(counts):
    precision = _ratio(counts["skeleton_pred_in_gt"], counts["skeleton_pred"])
    sensitivity = _ratio(counts["skeleton_gt_in_pred"], counts["skeleton_gt"])
    return _ratio(2 * precision * sensitivity, precision + sensitivity)


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else 0.0


def _mean(values):
    return float(np.mean(values)) if len(values) else None
