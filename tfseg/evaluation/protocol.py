"""The protocol card: how every number of an evaluation was made, written into results.json as "protocol" and
printed under the table. It answers the questions that make published numbers incomparable: which evaluator,
which images (a fingerprint, and the known release or split they match), which predictions, input size and
resize rule, map normalisation, threshold and where it came from, which Dice, FOV or not, and how the model's
checkpoint was chosen. A model whose checkpoint was chosen on (or which was trained on) the images it is now
evaluated on is marked `"comparable": false`, with the reason.
"""

import os
from importlib import metadata as package_metadata

from tfseg import files
from tfseg.data.manifest import dataset_fingerprint, match_known

PACKAGES = ("tfseg", "pysodmetrics", "scikit-learn", "scikit-image", "numpy")
DICE = {
    "polyp": "meanDice: foreground Dice of map >= t at the 256 levels t of the min-max normalised map, averaged "
    "over images then over levels (pysodmetrics, as the MATLAB toolbox); 0 on an empty ground truth. "
    "dice@T: Dice of normalised map > T",
    "vessel": "F1 (= Dice) of probability > T pooled over all pixels of all images (top-level keys); per_image: "
    "the mean of each image's value",
}
MAP = {
    ("polyp", "model"): "per-image min-max normalisation of the probability, stored as uint8 (PraNet's MyTest.py); "
    "the evaluator min-max normalises again (pysodmetrics, the toolbox's mapminmax)",
    ("polyp", "maps"): "the maps as stored, min-max normalised by the evaluator (pysodmetrics, the toolbox's "
    "mapminmax); float maps in [0, 1] as p * 255",
    ("vessel", "model"): "probabilities as predicted, not normalised",
    ("vessel", "maps"): "uint8 maps / 255, or float probabilities in [0, 1]; not normalised",
}


def versions():
    """{package: version} of the evaluator's code."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            found[name] = None
    return found


def protocol_card(task, datasets, threshold, threshold_source, predictor=None, pred_dir=None, fov=None):
    """The card of one evaluation. `datasets`: [(name, pairs)] as scored; `threshold_source`: where the
    threshold came from (e.g. "default", "--threshold", "auto: chosen on validation at training");
    `predictor` (a tfseg.inference.Predictor) or `pred_dir`; `fov`: how the vessel FOV was found."""
    training = (getattr(predictor, "metadata", None) or {}).get("training")  # any object with `predict` may come
    card = {
        "evaluator": versions(),
        "task": task,
        "datasets": {name: _dataset(pairs, training, predictor is not None) for name, pairs in datasets},
        "predictions": _predictions(predictor, pred_dir),
        "map": MAP[task, "model" if predictor is not None else "maps"],
        "threshold": {"value": threshold, "source": threshold_source},
        "dice": DICE[task],
        "fov": fov if task == "vessel" else "not used (polyp protocol)",
        "checkpoint": _checkpoint(predictor, training),
    }
    verdicts = [entry["comparable"] for entry in card["datasets"].values()]
    card["comparable"] = False if False in verdicts else (None if None in verdicts else True)
    return card


def _dataset(pairs, training, from_model):
    entry = {**dataset_fingerprint(pairs), "matches": match_known(pairs)}
    if not from_model:
        entry.update(comparable=None, reason="prediction maps: how their model was chosen is not known here")
        return entry
    if training is None:
        entry.update(
            comparable=None,
            reason="the model has no training record (trained elsewhere or before tfseg kept one): how its "
            "checkpoint was chosen is not known",
        )
        return entry
    digests = {files.short_digest(pair.image) for pair in pairs}
    chosen_on = digests & set(training.get("validation", {}).get("sha256", []))
    trained_on = digests & set(training.get("training_images", {}).get("sha256", []))
    reasons = []
    if trained_on:
        reasons.append(f"the model was trained on {len(trained_on)} of these {len(pairs)} images")
    if chosen_on:
        rule = training.get("checkpoint", {}).get("rule", "the checkpoint")
        reasons.append(f"its checkpoint ({rule}) was chosen on {len(chosen_on)} of these {len(pairs)} images")
    entry.update(comparable=not reasons, reason="; ".join(reasons) or None)
    return entry


def _predictions(predictor, pred_dir):
    if predictor is None:
        return {
            "folder": str(pred_dir),
            "fingerprint": files.fingerprint(pred_dir),
            "resize": "a map whose size differs from its mask's is resized bilinearly to it (listed in the notes)",
        }
    source, size = getattr(predictor, "source", None), getattr(predictor, "input_size", None)
    return {
        "model": source or type(predictor).__name__,
        "fingerprint": files.fingerprint(source, {"tfseg.json"}) if source and os.path.exists(source) else None,
        "runtime": type(getattr(predictor, "runtime", None)).__name__,
        "input_size": list(size) if size else "each image's own size",
        "resize": "image resized bilinearly with antialiasing to the input size (PIL's resize in PraNet's "
        "loaders); logits resized bilinearly (half-pixel centres) to the mask's size, then the activation",
        "normalization": getattr(predictor, "normalization", None),
        "tta": "horizontal flip averaged" if getattr(predictor, "tta", False) else "none",
    }


def _checkpoint(predictor, training):
    if predictor is None:
        return "unknown (prediction maps)"
    if training is None:
        return "unknown (no training record in the model's tfseg.json)"
    checkpoint = training.get("checkpoint", {})
    return {
        **checkpoint,
        "validation": training.get("validation", {}).get("split"),
        "validation_images": training.get("validation", {}).get("images"),
        "near_duplicates_validation_training": training.get("near_duplicates"),
    }


def card_lines(card):
    """The card in a few lines for the terminal."""
    versions_text = ", ".join(f"{name} {version}" for name, version in card["evaluator"].items() if version)
    lines = [f"Protocol ({card['task']}; {versions_text})"]
    for name, entry in card["datasets"].items():
        known = f", matches {entry['matches']}" if entry.get("matches") else ""
        lines.append(f"  {name}: {entry['images']} images, sha256 {entry['sha256'][:12]}...{known}")
    predictions = card["predictions"]
    if "model" in predictions:
        lines.append(
            f"  model: {predictions['model']} ({(predictions['fingerprint'] or '')[:19]}...), "
            f"{predictions['runtime']}, input {predictions['input_size']}, TTA {predictions['tta']}"
        )
    else:
        lines.append(f"  prediction maps: {predictions['folder']} ({predictions['fingerprint'][:19]}...)")
    threshold = card["threshold"]
    lines.append(f"  threshold {threshold['value']:g} ({threshold['source']}); map: {card['map']}")
    if card["task"] == "vessel":
        lines.append(f"  FOV: {card['fov']}")
    checkpoint = card["checkpoint"]
    if isinstance(checkpoint, dict):
        lines.append(
            f"  checkpoint: {checkpoint.get('rule')} (epoch {checkpoint.get('epoch')} of {checkpoint.get('epochs')}"
            f"; validation: {checkpoint.get('validation')})"
        )
    else:
        lines.append(f"  checkpoint: {checkpoint}")
    for name, entry in card["datasets"].items():
        if entry["comparable"] is False:
            lines.append(f"  NOT COMPARABLE ({name}): {entry['reason']}")
    return lines
