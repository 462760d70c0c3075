"""The polyp and vessel protocols against hand-computed values, pysodmetrics and scikit-learn; test_model.py end to
end on synthetic data through --pred_dir; the error cases: damaged, mismatched or float inputs, outputs over inputs,
results before plots, atomic writes."""

import json
import logging
import os
import sys
import types

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
from PIL import Image
from py_sod_metrics.utils import prepare_data
from sklearn import metrics

import test_model
from tests.helpers import SHARED_DATA, run_python
from tfseg.data import DatasetError
from tfseg.data.imageio import read_mask, read_prediction
from tfseg.data.synthetic import write_polyp_dataset
from tfseg.evaluation import evaluate, polyp, prediction_map, report, vessel
from tfseg.files import OverwriteError

POLYP_KEYS = ["meanDice", "meanIoU", "wFm", "Sm", "meanEm", "maxEm", "adpEm", "MAE", "dice@0.5", "iou@0.5", "n_images"]


def disc(height, width, centre, radius):
    y, x = np.mgrid[:height, :width]
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2


def polyp_results(prediction, gt):
    return polyp.summarize([polyp.score_image(prediction, gt)])


def test_perfect_prediction():
    gt = disc(40, 50, (20, 22), 9)
    r = polyp_results(gt.astype(np.uint8) * 255, gt)
    g, n = gt.sum(), gt.size
    # `pred >= 0` selects every pixel: Dice 2G/(G+N) there, 1 at the other 255 levels
    assert r["meanDice"] == pytest.approx((255 + 2 * g / (g + n)) / 256)
    assert r["meanIoU"] == pytest.approx((255 + g / n) / 256)
    assert r["dice@0.5"] == r["iou@0.5"] == 1.0
    assert r["MAE"] == 0.0 and r["maxEm"] == pytest.approx(n / (n - 1))  # E-measure divides by N - 1
    assert r["Sm"] == pytest.approx(1.0, abs=1e-6) and r["wFm"] == pytest.approx(1.0, abs=1e-6)


def test_empty_ground_truth():
    gt = np.zeros((30, 30), bool)
    prediction = np.zeros((30, 30), np.uint8)
    prediction[:10] = 255  # a third of the image predicted as polyp
    r = polyp_results(prediction, gt)
    assert r["meanDice"] == r["meanIoU"] == r["wFm"] == r["dice@0.5"] == 0.0  # TP = 0 everywhere
    assert r["Sm"] == pytest.approx(1 - 1 / 3) and r["MAE"] == pytest.approx(1 / 3)
    # E-measure with no foreground: pixels predicted background over N - 1; at `pred >= 0` there are none
    assert r["maxEm"] == pytest.approx(600 / 899) and r["meanEm"] == pytest.approx(255 / 256 * 600 / 899)


def test_empty_prediction():
    gt = disc(30, 40, (15, 20), 6)
    r = polyp_results(np.zeros((30, 40), np.uint8), gt)
    g, n = gt.sum(), gt.size
    assert r["meanDice"] == pytest.approx(2 * g / (g + n) / 256)  # only `pred >= 0` has TP > 0
    assert r["dice@0.5"] == 0.0 and r["MAE"] == pytest.approx(g / n)


def test_all_foreground():
    gt = np.ones((20, 20), bool)
    r = polyp_results(np.full((20, 20), 255, np.uint8), gt)
    assert r["meanDice"] == r["meanIoU"] == r["dice@0.5"] == 1.0
    assert r["Sm"] == 1.0 and r["MAE"] == 0.0


def random_pairs(seed=0):
    """(uint8 prediction, uint8 ground truth) pairs of several sizes, one with empty and one with full ground
    truth."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i, (h, w) in enumerate([(40, 52), (64, 48), (33, 33), (50, 70), (45, 45), (30, 30)]):
        gt = disc(h, w, (rng.integers(10, h - 10), rng.integers(10, w - 10)), rng.integers(4, 12))
        if i == 2:
            gt[:] = False
        if i == 5:
            gt[:] = True
        noisy = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 2) + rng.normal(0, 0.2, gt.shape)
        pairs.append((np.clip(noisy * 255, 0, 255).astype(np.uint8), gt.astype(np.uint8) * 255))
    return pairs


@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_agrees_with_pysodmetrics_classes(kind):
    dice_iou = sod.FmeasureV2(
        {"dice": sod.DICEHandler(True, False, with_binary=True), "iou": sod.IOUHandler(True, False, with_binary=True)}
    )
    em, wfm, sm, mae = sod.Emeasure(), sod.WeightedFmeasure(), sod.Smeasure(), sod.MAE()
    scores = []
    for prediction, gt in random_pairs():
        if kind == "float":  # probabilities whose 8-bit scale falls between the levels
            prediction = np.clip(prediction / 255 * 0.93 + 0.031, 0, 1)
        for meter in (dice_iou, em, wfm, sm, mae):
            meter.step(prediction * 255 if kind == "float" else prediction, gt)
        scores.append(polyp.score_image(prediction, gt > 128))
    curves, e = dice_iou.get_results(), em.get_results()["em"]
    expected = {
        "meanDice": curves["dice"]["dynamic"].mean(),
        "meanIoU": curves["iou"]["dynamic"].mean(),
        "wFm": wfm.get_results()["wfm"],
        "Sm": sm.get_results()["sm"],
        "meanEm": e["curve"].mean(),
        "maxEm": e["curve"].max(),
        "adpEm": e["adp"],
        "MAE": mae.get_results()["mae"],
        "dice@0.5": curves["dice"]["binary"],
        "iou@0.5": curves["iou"]["binary"],
    }
    results = polyp.summarize(scores)
    assert results.keys() == expected.keys()
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_weighted_fmeasure_equals_pysodmetrics():
    """The restricted computation against pysodmetrics' full one: masks at the borders, scattered, whole, one
    pixel, or far from most of the image, uint8 and float maps."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:90, :120]
    masks = [
        disc(90, 120, (45, 60), 20),
        (y < 4) | (x > 110),  # touches three borders
        rng.random((90, 120)) < 0.05,  # scattered pixels
        np.ones((90, 120), bool),  # no background
        (y == 89) & (x == 0),  # one corner pixel
    ]
    far = np.zeros((700, 1300), bool)  # distances up to ~1400 px
    far[5:9, 3:12] = True
    farther = np.zeros((40, 2200), bool)  # beyond 2047 px: the float32 distances are not exact there
    farther[10:20, :6] = True
    for gt in [*masks, far, farther]:
        blurred = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 3) + rng.normal(0, 0.3, gt.shape)
        for prediction in (np.clip(blurred * 255, 0, 255).astype(np.uint8), np.clip(blurred, 0, 1) * 255):
            pred, truth = prepare_data(prediction, gt.astype(np.uint8) * 255)
            expected = sod.WeightedFmeasure()
            expected.step(pred, truth, normalize=False)
            assert polyp.weighted_fmeasure(pred, truth) == pytest.approx(expected.get_results()["wfm"], abs=1e-12)
    assert polyp.weighted_fmeasure(np.ones((5, 5)), np.zeros((5, 5), bool)) == 0.0


def test_prediction_map_is_pranets_min_max_uint8():
    assert prediction_map(np.array([[0.2, 0.6, 1.0]])).tolist() == [[0, 128, 255]]
    assert prediction_map(np.full((2, 2), 0.7)).tolist() == [[0, 0], [0, 0]]  # constant map -> 0


def vessel_case(seed=0):
    """Three images: float probabilities, vessel masks (one without vessels), FOV masks."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(3):
        gt = rng.random((24, 30)) < 0.15 * (i > 0)
        probability = np.clip(0.6 * gt + rng.normal(0.25, 0.2, gt.shape), 0, 1).astype(np.float32)
        cases.append((probability, gt, disc(24, 30, (12, 15), 11)))
    return cases


def sklearn_metrics(probability, gt):
    binary = probability > 0.5
    return {
        "Acc": metrics.accuracy_score(gt, binary),
        "Se": metrics.recall_score(gt, binary, zero_division=0),
        "Sp": metrics.recall_score(~gt, ~binary),
        "F1": metrics.f1_score(gt, binary, zero_division=0),
        "IoU": metrics.jaccard_score(gt, binary, zero_division=0),
        "MCC": metrics.matthews_corrcoef(gt, binary),
        "AUC": metrics.roc_auc_score(gt, probability) if 0 < gt.sum() < gt.size else np.nan,
    }


def test_vessel_metrics_match_scikit_learn():
    cases = vessel_case()
    results = vessel.summarize([vessel.score_image(p, g, fov) for p, g, fov in cases])
    for region, pick in [(results, lambda a, m: a.ravel()), (results["fov"], lambda a, m: a[m])]:
        pooled = sklearn_metrics(
            np.concatenate([pick(p, f) for p, g, f in cases]), np.concatenate([pick(g, f) for p, g, f in cases])
        )
        per_image = [sklearn_metrics(pick(p, f), pick(g, f)) for p, g, f in cases]
        for key in vessel.METRICS:
            assert region[key] == pytest.approx(pooled[key], abs=1e-12), key
            assert region["per_image"][key] == pytest.approx(np.nanmean([r[key] for r in per_image]), abs=1e-12)
    assert vessel.undefined_auc_images([vessel.score_image(p, g) for p, g, _ in cases]) == 1


def test_vessel_f1_curve_matches_thresholded_f1():
    probability, gt, _ = vessel_case()[1]
    curve = vessel.f1_curve(vessel.value_counts(probability, gt), np.array([0.3, 0.5]))
    for threshold, value in zip([0.3, 0.5], curve):
        assert value == pytest.approx(metrics.f1_score(gt.ravel(), probability.ravel() > threshold))


def write_predictions(masks_dir, out_dir, blur=3, resize_one=False):
    """Blurred ground truths as prediction maps (PNG named like the masks); one at another size if asked."""
    os.makedirs(out_dir, exist_ok=True)
    for i, name in enumerate(sorted(os.listdir(masks_dir))):
        gt = cv2.imread(os.path.join(masks_dir, name), cv2.IMREAD_GRAYSCALE)
        prediction = cv2.GaussianBlur(gt, (0, 0), blur + i)
        if resize_one and i == 0:
            prediction = cv2.resize(prediction, (40, 30))
        cv2.imwrite(os.path.join(out_dir, os.path.splitext(name)[0] + ".png"), prediction)


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """Two small synthetic datasets (the second with an empty mask) and blurred-mask predictions for both."""
    root = tmp_path_factory.mktemp("eval")
    for name, seed in [("SetA", 5), ("SetB", 6)]:
        write_polyp_dataset(str(root / "data" / name), 4, size=None, seed=seed)
        write_predictions(root / "data" / name / "masks", root / "preds" / name, resize_one=name == "SetA")
    empty = root / "data" / "SetB" / "masks" / "synth_0001.png"
    cv2.imwrite(str(empty), np.zeros_like(cv2.imread(str(empty), cv2.IMREAD_GRAYSCALE)))
    return root


def independent_polyp_results(data_dir, pred_dir):
    """pysodmetrics as its README uses it: cv2 grey reads, predictions resized to the mask."""
    meters = [sod.FmeasureV2({"dice": sod.DICEHandler(True, False, with_binary=True)}), sod.Smeasure(), sod.MAE()]
    for name in sorted(os.listdir(os.path.join(data_dir, "masks"))):
        gt = cv2.imread(os.path.join(data_dir, "masks", name), cv2.IMREAD_GRAYSCALE)
        prediction = cv2.imread(os.path.join(pred_dir, os.path.splitext(name)[0] + ".png"), cv2.IMREAD_GRAYSCALE)
        prediction = cv2.resize(prediction, gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
        for meter in meters:
            meter.step(prediction, gt)
    dice = meters[0].get_results()["dice"]
    return {
        "meanDice": dice["dynamic"].mean(),
        "dice@0.5": dice["binary"],
        "Sm": meters[1].get_results()["sm"],
        "MAE": meters[2].get_results()["mae"],
    }


def test_cli_pred_dir_end_to_end(eval_data, tmp_path):
    result = run_python(
        [
            "test_model.py",
            "--pred_dir",
            str(eval_data / "preds"),
            "--data_path",
            str(eval_data / "data"),
            "--output",
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| SetA | 4 |" in result.stdout and "| SetB | 4 |" in result.stdout  # the markdown table
    assert "SetB: 1 image(s) with empty ground truth" in result.stderr
    assert "SetA: 1 prediction(s) differ in size" in result.stderr and "synth_0000.png (40x30)" in result.stderr
    with open(tmp_path / "out" / "results.json") as f:
        results = json.load(f)
    assert list(results) == ["SetA", "SetB", "protocol"]  # the datasets, then how they were scored
    for name in ("SetA", "SetB"):
        assert list(results[name]) == [*POLYP_KEYS, "analysis", "ci95"] and results[name]["n_images"] == 4
        for key, value in independent_polyp_results(eval_data / "data" / name, eval_data / "preds" / name).items():
            assert results[name][key] == pytest.approx(value, abs=1e-12), (name, key)
    for name in ("results.csv", "per_image.csv", "dice_vs_threshold.png", "cases_SetA.png", "cases_SetB.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_unmatched_predictions_are_listed(eval_data, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(eval_data / "data" / "SetA" / "masks", preds)
    os.remove(preds / "synth_0002.png")
    cv2.imwrite(str(preds / "stray.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError) as error:
        evaluate(eval_data / "data" / "SetA", tmp_path / "out", pred_dir=preds, workers=1, progress=False)
    message = str(error.value)
    assert "1 mask(s) without a prediction: synth_0002.png" in message
    assert "1 prediction(s) without a mask: stray.png" in message


def test_cli_errors_are_one_line(eval_data, tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    result = run_python(
        [
            "test_model.py",
            "--pred_dir",
            str(eval_data / "preds" / "SetA"),
            "--data_path",
            str(tmp_path / "empty"),
            "--quiet",
        ]
    )
    assert result.returncode != 0 and "error: No image files" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_model_end_to_end_and_saved_maps_read_back(eval_data, tmp_path):
    import keras  # TensorFlow only here

    from tfseg.models import PraNet

    keras.utils.set_random_seed(0)
    PraNet("mobilenetv2", backbone_weights=None).save(tmp_path / "model.keras")
    data = eval_data / "data" / "SetB"
    result = run_python(
        [
            "test_model.py",
            "--model",
            str(tmp_path / "model.keras"),
            "--data_path",
            str(data),
            "--inputsize",
            "64",
            "--save_maps",
            str(tmp_path / "maps"),
            "--no_plots",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "model_eval" / "results.json") as f:  # default output: beside the model
        results = json.load(f)
    assert list(results["SetB"]) == [*POLYP_KEYS, "analysis", "ci95"]
    for name in sorted(os.listdir(data / "masks")):  # uint8 maps at the masks' original sizes, named like them
        saved = cv2.imread(str(tmp_path / "maps" / name), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint8 and saved.shape == cv2.imread(str(data / "masks" / name), 0).shape
        # min-max normalised; the protocol's `+ 1e-8` keeps the top below 255 when an untrained model's
        # probabilities span only ~1e-6
        assert saved.min() == 0 and saved.max() > 200
    again = evaluate(data, tmp_path / "again", pred_dir=tmp_path / "maps", workers=1, plots=False, progress=False)
    metrics = lambda summary: {key: summary[key] for key in POLYP_KEYS}  # the error analysis reads raw values
    assert metrics(again["results"]["SetB"]) == pytest.approx(metrics(results["SetB"]), abs=1e-12)


def test_pred_dir_mode_imports_no_tensorflow(eval_data, tmp_path):
    args = [
        "--pred_dir",
        str(eval_data / "preds" / "SetA"),
        "--data_path",
        str(eval_data / "data" / "SetA"),
        "--output",
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--no_plots",
        "--quiet",
    ]
    result = run_python(
        [
            "-c",
            f"import sys, test_model; test_model.main({args!r}); assert 'tensorflow' not in sys.modules, 'TF imported'",
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_vessel_dataset_with_fov_end_to_end(tmp_path):
    rng = np.random.default_rng(3)
    cases = []
    for n in (1, 2, 3):
        gt = rng.random((20, 26)) < 0.2
        fov = disc(20, 26, (10, 13), 9)
        probability = np.clip(0.5 * gt + rng.random(gt.shape) * 0.6, 0, 1)
        for folder, name, picture in [
            ("images", f"{n:02d}_test.tif", np.zeros((20, 26, 3), np.uint8)),
            ("1st_manual", f"{n:02d}_manual1.gif", gt * 255),
            ("mask", f"{n:02d}_test_mask.gif", fov * 255),
            ("preds", f"{n:02d}_test.png", np.rint(probability * 255)),
        ]:
            os.makedirs(tmp_path / folder, exist_ok=True)
            Image.fromarray(picture.astype(np.uint8)).save(tmp_path / folder / name)
        cases.append((np.rint(probability * 255) / 255, gt, fov))
    results = evaluate(
        tmp_path, tmp_path / "out", task="vessel", pred_dir=tmp_path / "preds", workers=1, progress=False
    )["results"][tmp_path.name]
    pooled = lambda pick: sklearn_metrics(
        *(np.concatenate(parts) for parts in zip(*[pick(p, g, f) for p, g, f in cases]))
    )
    whole, inside = pooled(lambda p, g, f: (p.ravel(), g.ravel())), pooled(lambda p, g, f: (p[f], g[f]))
    for key in vessel.METRICS:
        assert results[key] == pytest.approx(whole[key], abs=1e-12), key
        assert results["fov"][key] == pytest.approx(inside[key], abs=1e-12), key
    assert results["n_images"] == 3 and set(results["fov"]) == {*vessel.METRICS, "per_image"}


def test_real_kvasir_masks_read_as_the_reference_does(tmp_path):
    kvasir = os.path.join(SHARED_DATA, "Kvasir-SEG")
    if not os.path.isdir(kvasir):
        pytest.skip(f"{kvasir} not present")
    with open(os.path.join(kvasir, "pranet_kvasir_test_names.txt")) as f:
        ids = [line.strip() for line in f if line.strip()][:6]
    for folder in ("images", "masks"):
        os.makedirs(tmp_path / "Kvasir" / folder)
        for stem in ids:
            os.symlink(
                os.path.join(os.path.abspath(kvasir), folder, stem + ".jpg"),
                tmp_path / "Kvasir" / folder / (stem + ".jpg"),
            )
    write_predictions(tmp_path / "Kvasir" / "masks", tmp_path / "preds", blur=4)
    results = evaluate(
        tmp_path / "Kvasir", tmp_path / "out", pred_dir=tmp_path / "preds", workers=1, plots=False, progress=False
    )["results"]["Kvasir"]
    for key, value in independent_polyp_results(tmp_path / "Kvasir", tmp_path / "preds").items():
        assert results[key] == pytest.approx(value, abs=1e-12), key


def test_split_file_restricts_the_images(eval_data, tmp_path):
    preds = tmp_path / "preds"
    write_predictions(eval_data / "data" / "SetA" / "masks", preds)
    for name in ("synth_0000.png", "synth_0001.png"):
        os.remove(preds / name)
    (tmp_path / "ids.txt").write_text("synth_0002\nsynth_0003\n")
    results = evaluate(
        eval_data / "data" / "SetA",
        tmp_path / "out",
        pred_dir=preds,
        split_file=tmp_path / "ids.txt",
        workers=1,
        plots=False,
        progress=False,
    )["results"]
    assert results["SetA"]["n_images"] == 2


def test_vessel_fov_can_be_estimated(tmp_path):
    from tfseg.data.fov import estimate_fov
    from tfseg.data.imageio import read_rgb
    from tfseg.data.synthetic import write_vessel_dataset

    root = write_vessel_dataset(tmp_path / "v", 2, size=(64, 64))
    os.rename(root / "fov", tmp_path / "fov_aside")  # a dataset without FOV masks, like STARE
    write_predictions(root / "masks", tmp_path / "preds", blur=1)
    plain = evaluate(
        root, tmp_path / "a", task="vessel", pred_dir=tmp_path / "preds", workers=1, plots=False, progress=False
    )["results"]["v"]
    estimated = evaluate(
        root,
        tmp_path / "b",
        task="vessel",
        pred_dir=tmp_path / "preds",
        workers=1,
        plots=False,
        estimate_fov=True,
        progress=False,
    )["results"]["v"]
    assert "fov" not in plain and estimated["Acc"] == plain["Acc"]
    scores = []
    for name in ("vessel_0000.png", "vessel_0001.png"):
        fov = estimate_fov(read_rgb(root / "images" / name))
        assert 0.3 < fov.mean() < 0.7  # the disc (eroded by 5 px), not the black corners
        probability = cv2.imread(str(tmp_path / "preds" / name), 0) / np.float32(255)
        scores.append(vessel.score_image(probability, cv2.imread(str(root / "masks" / name), 0) > 128, fov))
    assert estimated["fov"]["Acc"] == pytest.approx(vessel.summarize(scores)["fov"]["Acc"], abs=1e-12)


class CountingPredictor:
    """A model stand-in (`predict(image, size)`): the image's red channel as probabilities; counts its calls."""

    task = "polyp"

    def __init__(self):
        self.calls = 0

    def predict(self, image, size):
        self.calls += 1
        return cv2.resize(image[..., 0], size[::-1]) / np.float32(255)


def small_dataset(root, n=3):
    """JPEG images and PNG masks of 48x64."""
    return write_polyp_dataset(root, n, size=(48, 64), seed=1)


def truncate(path):
    """Cuts a file in half: a JPEG keeps a valid header (PIL's verify() passes, OpenCV decodes it half grey)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_image_stops_model_evaluation_before_scoring(tmp_path):
    data = small_dataset(tmp_path / "data")
    truncate(data / "images" / "synth_0001.jpg")
    predictor = CountingPredictor()
    with pytest.raises(DatasetError, match=r"synth_0001\.jpg \(image file is truncated") as error:
        evaluate(data, tmp_path / "out", predictor=predictor, workers=1, progress=False)
    assert "nothing was scored" in str(error.value)
    assert predictor.calls == 0 and not (tmp_path / "out").exists()


def test_damaged_masks_and_prediction_maps_are_listed_before_scoring(tmp_path):
    data = small_dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    write_predictions(data / "masks", preds)
    truncate(preds / "synth_0000.png")
    os.rename(preds / "synth_0001.png", preds / "synth_0001.jpg")  # a JPEG map, cut in half
    cv2.imwrite(str(preds / "synth_0001.jpg"), cv2.imread(str(data / "images" / "synth_0001.jpg")))
    truncate(preds / "synth_0001.jpg")
    truncate(data / "masks" / "synth_0002.png")
    with pytest.raises(DatasetError) as error:
        evaluate(data, tmp_path / "out", pred_dir=preds, workers=1, progress=False)
    message = str(error.value)
    assert "2 unreadable or damaged FOV or prediction file(s)" in message
    for path in (preds / "synth_0000.png", preds / "synth_0001.jpg", data / "masks" / "synth_0002.png"):
        assert f"{path} (" in message, path  # with PIL's reason
    assert not (tmp_path / "out").exists()


def test_pred_dir_damaged_images_are_notes_and_results_come_before_plots(tmp_path, caplog):
    data = small_dataset(tmp_path / "data", 4)
    write_predictions(data / "masks", tmp_path / "preds")
    garbage, cut = data / "images" / "synth_0001.jpg", data / "images" / "synth_0002.jpg"
    garbage.write_bytes(b"not an image")
    truncate(cut)
    with caplog.at_level(logging.WARNING):
        result = evaluate(data, tmp_path / "out", pred_dir=tmp_path / "preds", workers=1, progress=False)
    assert result["results"]["data"]["n_images"] == 4
    assert any("2 damaged or unreadable image(s)" in note and str(cut) in note for note in result["notes"])
    for name in ("results.json", "results.csv", "per_image.csv", "dice_vs_threshold.png", "cases_data.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    for path in (garbage, cut):  # the case plot shows the two others
        assert f"{path} left out of cases_data.png" in caplog.text


@pytest.mark.parametrize("task", ["polyp", "vessel"])
def test_float_prediction_maps_score_as_their_8_bit_twins(tmp_path, task):
    data = small_dataset(tmp_path / "data")
    write_predictions(data / "masks", tmp_path / "png")
    (tmp_path / "tif").mkdir()
    for path in (tmp_path / "png").iterdir():
        probability = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) / np.float32(255)
        assert cv2.imwrite(str(tmp_path / "tif" / f"{path.stem}.tif"), probability)
    assert read_prediction(tmp_path / "tif" / "synth_0000.tif").dtype == np.float32
    eight_bit, floats = (
        report.flatten(
            evaluate(
                data,
                tmp_path / f"out_{folder}",
                task=task,
                pred_dir=tmp_path / folder,
                workers=1,
                plots=False,
                progress=False,
            )["results"]["data"]
        )
        for folder in ("png", "tif")
    )
    # pysodmetrics floors p * 255 to its 256 levels: float32 rounding may move a pixel on a level's edge by one
    assert floats == pytest.approx(eight_bit, abs=1e-4)


def test_float_maps_outside_0_1_and_float_masks_are_refused(tmp_path):
    data = small_dataset(tmp_path / "data")
    preds = tmp_path / "preds"
    write_predictions(data / "masks", preds)
    os.remove(preds / "synth_0001.png")
    cv2.imwrite(str(preds / "synth_0001.tif"), cv2.imread(str(preds / "synth_0000.png"), 0).astype(np.float32))
    with pytest.raises(DatasetError, match=r"synth_0001\.tif has values from 0 to 2\d\d: expected probabilities in "):
        evaluate(data, tmp_path / "out", pred_dir=preds, workers=1, progress=False)
    cv2.imwrite(str(tmp_path / "nan.tif"), np.array([[0.5, np.nan]], np.float32))
    with pytest.raises(DatasetError, match=r"nan\.tif has NaN or infinite values"):
        read_prediction(tmp_path / "nan.tif")
    cv2.imwrite(str(tmp_path / "soft_mask.tif"), np.array([[0.0, 0.2]], np.float32))  # once read as foreground > 0
    with pytest.raises(DatasetError, match=r"float32 in .*soft_mask\.tif \(expected 8 or 16 bit\)"):
        read_mask(tmp_path / "soft_mask.tif")


def test_size_mismatch_is_refused_unless_allowed(tmp_path):
    data = small_dataset(tmp_path / "data")
    cv2.imwrite(str(data / "images" / "synth_0001.jpg"), np.zeros((30, 40, 3), np.uint8))
    write_predictions(data / "masks", tmp_path / "preds")
    mismatch = "synth_0001: image 40x30, mask 64x48"
    with pytest.raises(DatasetError, match=f"1 pair\\(s\\) whose image and mask sizes differ: {mismatch}"):
        evaluate(data, tmp_path / "out", pred_dir=tmp_path / "preds", workers=1, progress=False)
    result = evaluate(
        data,
        tmp_path / "out",
        pred_dir=tmp_path / "preds",
        workers=1,
        plots=False,
        progress=False,
        allow_size_mismatch=True,
    )
    assert result["results"]["data"]["n_images"] == 3 and any(mismatch in note for note in result["notes"])
    test_model.main(
        [
            "--pred_dir",
            str(tmp_path / "preds"),
            "--data_path",
            str(data),
            "--allow_size_mismatch",
            "--output",
            str(tmp_path / "cli"),
            "--workers",
            "1",
            "--no_plots",
            "--quiet",
        ]
    )
    assert (tmp_path / "cli" / "results.json").is_file()


def test_outputs_never_replace_inputs(tmp_path):
    data = small_dataset(tmp_path / "data")
    masks = {path: path.read_bytes() for path in (data / "masks").iterdir()}
    predictor = CountingPredictor()
    with pytest.raises(OverwriteError, match=r"output .*synth_0000\.png would overwrite the input"):
        evaluate(data, tmp_path / "out", predictor=predictor, save_maps=data / "masks", workers=1, progress=False)
    with pytest.raises(OverwriteError, match="output folder"):  # PNG maps among JPEG images: no file replaced
        evaluate(data, tmp_path / "out", predictor=predictor, save_maps=data / "images", workers=1, progress=False)
    assert predictor.calls == 0 and not (tmp_path / "out").exists()
    assert {path: path.read_bytes() for path in (data / "masks").iterdir()} == masks
    preds = tmp_path / "preds"
    write_predictions(data / "masks", preds)
    for output in (preds, data / "masks"):
        with pytest.raises(SystemExit, match=r"^error: The output folder [^\n]*$"):
            test_model.main(
                [
                    "--pred_dir",
                    str(preds),
                    "--data_path",
                    str(data),
                    "--output",
                    str(output),
                    "--workers",
                    "1",
                    "--quiet",
                ]
            )
    assert sorted(os.listdir(preds)) == ["synth_0000.png", "synth_0001.png", "synth_0002.png"]


def test_cli_model_mode_passes_runtime_and_refuses_a_truncated_jpeg(tmp_path, monkeypatch):
    loaded = []

    class Predictor:  # tfseg.inference.Predictor's stand-in: no TensorFlow
        @staticmethod
        def load(path, **kwargs):
            loaded.append(kwargs)
            return CountingPredictor()

    monkeypatch.setitem(sys.modules, "tfseg.inference", types.SimpleNamespace(Predictor=Predictor))
    data = small_dataset(tmp_path / "data")
    args = [
        "--model",
        str(tmp_path / "model.keras"),
        "--runtime",
        "onnx",
        "--data_path",
        str(data),
        "--workers",
        "1",
        "--no_plots",
        "--quiet",
    ]
    test_model.main(args)
    assert loaded[0]["runtime"] == "onnx" and (tmp_path / "model_eval" / "results.json").is_file()
    truncate(data / "images" / "synth_0002.jpg")
    with pytest.raises(
        SystemExit,
        match=r"(?s)^error: Inputs that cannot be scored.*synth_0002\.jpg \(image file "
        "is truncated",
    ):
        test_model.main(args)


def test_every_output_file_is_written_atomically(tmp_path, monkeypatch):
    replaced, replace = [], os.replace
    monkeypatch.setattr(
        os, "replace", lambda source, target: replaced.append(os.fspath(target)) or replace(source, target)
    )
    data = small_dataset(tmp_path / "data")
    evaluate(
        data, tmp_path / "out", predictor=CountingPredictor(), save_maps=tmp_path / "maps", workers=1, progress=False
    )
    written = [str(path) for folder in ("out", "maps") for path in (tmp_path / folder).iterdir()]
    assert len(written) == 6 + 3 and sorted(written) == sorted(replaced)  # and no temporary file left
