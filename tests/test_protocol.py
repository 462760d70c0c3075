"""The protocol around every number: the threshold chosen on validation, the error analysis (size bins, raw
false positives on empty ground truths, clDice, thin and thick vessels) and the protocol card with its
comparability verdict. No TensorFlow: a stand-in predictor plays the model."""

import json
import os

import cv2
import numpy as np
import pytest

from tests.test_evaluation import write_predictions
from tfseg import cli, files
from tfseg.data.synthetic import write_polyp_dataset
from tfseg.evaluation import analysis, evaluate, threshold
from tfseg.evaluation.protocol import card_lines
from tfseg.evaluation.report import NOT_COMPARABLE, results_markdown


def test_dice_curve_equals_thresholding_each_level():
    rng = np.random.default_rng(0)
    probability = rng.random((37, 41)).astype(np.float32)
    probability[0, :5] = [0.5, 0.01, 0.99, 0.0, 1.0]  # values on and beyond the grid
    mask = rng.random((37, 41)) > 0.6
    curve = threshold.image_dice_curve(probability, mask)
    for t, value in zip(threshold.THRESHOLDS, curve):
        predicted = probability > t
        expected = 2 * np.sum(predicted & mask) / (predicted.sum() + mask.sum())
        assert value == pytest.approx(expected, abs=1e-12), t
    assert np.all(threshold.image_dice_curve(probability * 0, mask * False) == 1)  # empty and predicted empty


def test_chosen_threshold_maximises_validation_dice():
    rng = np.random.default_rng(1)
    masks = [rng.random((20, 20)) > 0.5 for _ in range(3)]
    maps = [(np.where(m, 0.3, 0.1) + rng.random(m.shape) * 0.05, m) for m in masks]  # separable at 0.15-0.3
    chosen = threshold.choose("polyp", maps)
    assert 0.15 <= chosen["value"] < 0.3 and chosen["score"] == 1.0 and chosen["score_at_0.5"] == 0.0
    pooled = threshold.choose("vessel", maps)
    assert 0.15 <= pooled["value"] < 0.3 and pooled["criterion"].startswith("pooled F1")


def test_thin_and_thick_vessels_and_cl_dice():
    gt = np.zeros((60, 60), bool)
    gt[10, 5:55] = True  # 1 px wide: thin
    gt[30:32, 5:55] = True  # 2 px: thin
    gt[45:52, 5:55] = True  # 7 px: thick
    thick_only = np.zeros_like(gt)
    thick_only[45:52, 5:55] = True
    whole = {"whole": np.ones_like(gt)}
    counts = analysis.vessel_image(thick_only, gt, whole)["whole"]
    assert counts["thin"] == 50 + 100 and counts["thick"] == 350
    summary = analysis.vessel_summary([{"structure": {"whole": counts}}])["whole"]
    assert summary["Se_thin"] == 0.0 and summary["Se_thick"] == 1.0
    assert 0 < summary["clDice"] < 1
    perfect = analysis.vessel_summary([{"structure": analysis.vessel_image(gt, gt, whole)}])["whole"]
    assert perfect["clDice"] == perfect["clDice_pooled"] == 1.0 and perfect["Se_thin"] == 1.0


def test_polyp_size_bins_and_raw_false_positives():
    scores = [
        {"empty_gt": False, "foreground_fraction": f, "dice": np.full(256, d), "dice@0.5": d}
        for f, d in [(0.005, 0.2), (0.03, 0.5), (0.03, 0.7), (0.5, 0.9)]
    ]
    scores += [
        {"empty_gt": True, "foreground_fraction": 0.0, "dice": np.zeros(256), "dice@0.5": 0.0, **raw}
        for raw in ({"empty_gt_max": 0.2, "empty_gt_area": 0.0}, {"empty_gt_max": 0.9, "empty_gt_area": 0.1})
    ]
    summary = analysis.polyp_summary(scores, 0.5, "test")
    assert [b["images"] for b in summary["by_size"].values()] == [1, 2, 0, 1]
    assert (
        summary["by_size"]["1-5%"]["meanDice"] == pytest.approx(0.6) and summary["by_size"]["5-15%"]["meanDice"] is None
    )
    assert summary["empty_gt"]["false_positive_rate"] == 0.5 and summary["empty_gt"]["mean_predicted_area"] == 0.05


class StandInPredictor:
    """What evaluate() and the protocol card need of a tfseg.inference.Predictor: a faint activation on every
    image, so that min-max normalisation makes a full-strength map of it."""

    task, runtime, normalization, tta, input_size = "polyp", None, "tf", False, (64, 64)

    def __init__(self, source, metadata):
        self.source, self.metadata = source, metadata

    @property
    def threshold(self):
        return (self.metadata.get("training") or {}).get("threshold", {}).get("value")

    def predict(self, image, size=None):
        height, width = size or image.shape[:2]
        probability = np.full((height, width), 0.01, np.float32)
        probability[: height // 3, : width // 3] = 0.2  # never above 0.5
        return probability


@pytest.fixture(scope="module")
def polyps(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    write_polyp_dataset(str(root / "data"), 5, size=None, seed=3)
    empty = root / "data" / "masks" / "synth_0002.png"
    cv2.imwrite(str(empty), np.zeros_like(cv2.imread(str(empty), cv2.IMREAD_GRAYSCALE)))
    write_predictions(root / "data" / "masks", root / "preds")
    model = root / "model.keras"
    model.write_bytes(b"weights")
    return root


def record_for(images, validation):
    digests = lambda names: sorted(files.short_digest(images / name) for name in names)
    names = sorted(os.listdir(images))
    return {
        "checkpoint": {"rule": "best val_dice on the validation images", "epoch": 3, "score": 0.8, "epochs": 5},
        "validation": {"split": "test", "images": len(validation), "sha256": digests(validation)},
        "training_images": {"images": 0, "sha256": digests([n for n in names if n not in validation][:0])},
        "threshold": {"value": 0.37},
    }


def test_card_of_a_model_chosen_on_its_evaluation_images(polyps, tmp_path):
    images = polyps / "data" / "images"
    predictor = StandInPredictor(str(polyps / "model.keras"), {"training": record_for(images, os.listdir(images)[:2])})
    value, source = cli.resolve_threshold("auto", predictor)
    result = evaluate(
        str(polyps / "data"),
        str(tmp_path),
        predictor=predictor,
        threshold=value,
        threshold_source=source,
        plots=False,
        progress=False,
        workers=1,
    )
    stored = json.loads((tmp_path / "results.json").read_text())
    card = stored["protocol"]
    assert card == json.loads(json.dumps(result["protocol"]))
    entry = card["datasets"]["data"]
    assert entry["images"] == 5 and len(entry["sha256"]) == 64 and entry["comparable"] is False
    assert "chosen on 2 of these 5 images" in entry["reason"] and card["comparable"] is False
    assert card["threshold"] == {"value": 0.37, "source": source} and "dice@0.37" in stored["data"]
    assert card["checkpoint"]["epoch"] == 3 and card["predictions"]["fingerprint"] == files.fingerprint(
        polyps / "model.keras"
    )
    assert card["evaluator"]["pysodmetrics"] and "min-max" in card["map"]
    table = results_markdown(result["results"], "polyp", value, card)
    assert f"data {NOT_COMPARABLE}" in table
    assert any(line.startswith("  NOT COMPARABLE (data)") for line in card_lines(card))
    # min-max makes the faint activation on the empty image a full map; the raw values say the model never fired
    empty = stored["data"]["analysis"]["empty_gt"]
    assert empty["images"] == 1 and empty["false_positive_rate"] == 0.0 and "raw" in empty["source"]
    assert sum(b["images"] for b in stored["data"]["analysis"]["by_size"].values()) == 4
    assert "analysis_by_size" not in (tmp_path / "results.csv").read_text()


def test_card_without_training_record_and_for_prediction_maps(polyps, tmp_path):
    predictor = StandInPredictor(str(polyps / "model.keras"), {})
    with pytest.raises(ValueError, match="no threshold chosen on validation"):
        cli.resolve_threshold("auto", predictor)
    with pytest.raises(ValueError, match="needs --model"):
        cli.resolve_threshold("auto", None)
    assert cli.resolve_threshold(None) == (0.5, "default") and cli.resolve_threshold(0.3) == (0.3, "--threshold")
    result = evaluate(str(polyps / "data"), str(tmp_path / "a"), predictor=predictor, plots=False, progress=False)
    assert result["protocol"]["comparable"] is None and "no training record" in result["protocol"]["checkpoint"]
    maps = evaluate(str(polyps / "data"), str(tmp_path / "b"), pred_dir=str(polyps / "preds"), progress=False)
    card = maps["protocol"]
    assert card["predictions"]["fingerprint"] == files.fingerprint(polyps / "preds") and card["comparable"] is None
    assert "as stored" in maps["results"]["data"]["analysis"]["empty_gt"]["source"]
    assert (tmp_path / "b" / "dice_by_size.png").stat().st_size > 0


@pytest.mark.parametrize("text", ["1.5", "0", "high"])
def test_threshold_flag_refuses_what_is_no_threshold(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.threshold_flag(text)


def test_a_comparison_names_the_methods_that_are_not_comparable(polyps, tmp_path):
    from tfseg.evaluation.compare import compare, comparison_markdown

    images = polyps / "data" / "images"
    chosen_here = StandInPredictor(str(polyps / "model.keras"), {"training": record_for(images, os.listdir(images))})
    methods = {"maps": str(polyps / "preds"), "model": chosen_here}
    result = compare(str(polyps / "data"), str(tmp_path), methods, bootstrap=50, plots=False, progress=False)
    verdicts = result["comparison"]["datasets"]["data"]["comparable"]
    assert verdicts["maps"]["comparable"] is None and verdicts["model"]["comparable"] is False
    assert "NOT COMPARABLE: model: its checkpoint" in comparison_markdown(result["comparison"])
