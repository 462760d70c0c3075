"""Comparing methods (tfseg.evaluation.compare, statistics): bootstrap intervals contain the means and are seeded,
the reference's means are its single-method results, p-values are scipy's Wilcoxon on the same per-image pairs,
unequal image sets are refused, and test_model.py compares several --pred_dir folders."""

import csv
import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
from scipy import stats

import test_model
from tfseg.data import sources
from tfseg.data.synthetic import write_polyp_dataset
from tfseg.evaluation import evaluate, polyp, statistics, vessel
from tfseg.evaluation.compare import compare, default_names

METHODS = ("A", "B", "C")


def write_method(data, folder, blur, noise, seed):
    """Prediction maps named like the masks: each mask blurred and made noisy."""
    rng = np.random.default_rng(seed)
    for dataset in sorted(os.listdir(data)):
        os.makedirs(folder / dataset)
        for name in sorted(os.listdir(data / dataset / "masks")):
            gt = cv2.imread(str(data / dataset / "masks" / name), cv2.IMREAD_GRAYSCALE).astype(np.float64)
            prediction = cv2.GaussianBlur(gt, (0, 0), blur) + rng.normal(0, noise, gt.shape)
            cv2.imwrite(str(folder / dataset / name), np.clip(prediction, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def methods_data(tmp_path_factory):
    """Two small polyp datasets and three methods: A, a noisier B, and C, a copy of A (zero differences)."""
    root = tmp_path_factory.mktemp("compare")
    for dataset, n, seed in [("SetA", 8, 1), ("SetB", 6, 2)]:
        write_polyp_dataset(str(root / "data" / dataset), n, size=(40, 48), seed=seed)
    write_method(root / "data", root / "A", blur=2, noise=10, seed=0)
    write_method(root / "data", root / "B", blur=5, noise=60, seed=1)
    shutil.copytree(root / "A", root / "C")
    return root


@pytest.fixture(scope="module")
def compared(methods_data):
    root = methods_data
    return compare(
        root / "data",
        root / "out",
        {name: root / name for name in METHODS},
        bootstrap=300,
        seed=3,
        workers=1,
        progress=False,
    )


def test_intervals_contain_the_means_and_the_reference_is_its_single_evaluation(methods_data, compared, tmp_path):
    single = evaluate(
        methods_data / "data",
        tmp_path / "A",
        pred_dir=methods_data / "A",
        bootstrap=300,
        seed=3,
        workers=1,
        plots=False,
        progress=False,
    )
    with open(tmp_path / "A" / "results.json") as f:
        results = json.load(f)
    datasets = compared["comparison"]["datasets"]
    assert list(datasets) == ["SetA", "SetB"] and datasets["SetA"]["n_images"] == 8
    for dataset, summary in datasets.items():
        assert list(summary["methods"]) == list(METHODS)
        assert list(summary["methods"]["A"]) == list(polyp.metric_names())
        for metric, entry in summary["methods"]["A"].items():
            assert entry["mean"] == results[dataset][metric], (dataset, metric)
            assert entry["ci95"] == results[dataset]["ci95"][metric]  # same seed, same resampled images
        for name, metrics in summary["methods"].items():
            for metric, entry in metrics.items():
                low, high = entry["ci95"]
                assert low - 1e-12 <= entry["mean"] <= high + 1e-12, (dataset, name, metric)
        # the copy of A gets A's intervals: the resampled images are the same for every method
        assert summary["methods"]["C"]["meanDice"]["ci95"] == summary["methods"]["A"]["meanDice"]["ci95"]
    assert single["ci95"]["SetA"] == results["SetA"]["ci95"]


def test_p_values_are_scipys_wilcoxon_on_the_per_image_pairs(compared):
    output = compared["output"]
    per_image = {}
    for name in ("A", "B"):
        with open(os.path.join(output, name, "per_image.csv")) as f:
            per_image[name] = [row for row in csv.DictReader(f) if row["dataset"] == "SetA"]
    methods = compared["comparison"]["datasets"]["SetA"]["methods"]
    for metric in ("meanDice", "wFm", "Sm", "MAE", "dice@0.5"):
        a, b = ([float(row[metric]) for row in per_image[name]] for name in ("A", "B"))
        assert methods["B"][metric]["p_value"] == pytest.approx(stats.wilcoxon(b, a).pvalue, rel=1e-12)
        assert methods["B"][metric]["n_pairs"] == 8
    assert methods["B"]["maxEm"]["p_value"] is None and "not a mean of per-image" in methods["B"]["maxEm"]["p_note"]
    assert methods["A"]["meanDice"]["p_value"] is None and methods["A"]["meanDice"]["p_note"] == "reference method"
    assert methods["C"]["meanDice"]["p_value"] is None
    assert methods["C"]["meanDice"]["p_note"] == "all paired differences are zero"


def test_outputs_state_the_protocol(compared):
    output = compared["output"]
    with open(os.path.join(output, "comparison.json")) as f:
        comparison = json.load(f)
    assert comparison == json.loads(json.dumps(compared["comparison"]))
    interval = comparison["protocol"]["confidence_interval"]
    assert (interval["resamples"], interval["seed"], interval["percentiles"]) == (300, 3, [2.5, 97.5])
    assert "scipy.stats.wilcoxon" in comparison["protocol"]["test"]["implementation"]
    with open(os.path.join(output, "comparison.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 * len(polyp.metric_names())
    row = next(r for r in rows if (r["dataset"], r["method"], r["metric"]) == ("SetB", "B", "meanDice"))
    entry = comparison["datasets"]["SetB"]["methods"]["B"]["meanDice"]
    assert [float(row[key]) for key in ("mean", "ci95_lo", "ci95_hi", "p_value")] == [
        entry["mean"],
        *entry["ci95"],
        entry["p_value"],
    ]
    for name in ("comparison_SetA.png", "comparison_SetB.png", "A/results.json", "C/per_image.csv"):
        assert os.path.getsize(os.path.join(output, name)) > 0, name


def test_bootstrap_is_seeded_and_recomputes_the_protocol(methods_data, tmp_path):
    evaluation = evaluate(
        methods_data / "data",
        tmp_path,
        pred_dir=methods_data / "B",
        bootstrap=0,
        workers=1,
        plots=False,
        progress=False,
    )
    assert evaluation["ci95"] == {}
    scores = list(evaluation["scores"]["SetA"].values())
    first = statistics.confidence_intervals(scores, polyp, resamples=200, seed=7)
    assert statistics.confidence_intervals(scores, polyp, resamples=200, seed=7) == first
    assert statistics.confidence_intervals(scores, polyp, resamples=200, seed=8) != first
    indices = statistics.resampled_indices(len(scores), 5, seed=7)
    replicates = statistics.bootstrap_replicates(scores, polyp, 0.5, indices)
    for i, row in enumerate(indices):  # every resample (all at once) as the protocol summarises those images
        resample = polyp.summarize([scores[j] for j in row])
        assert {key: replicates[key][i] for key in resample} == pytest.approx(resample, rel=1e-12, abs=1e-15)
    assert len(set(replicates["maxEm"])) > 1  # maxEm, not a mean of per-image values, recomputed per resample


def test_every_input_is_decoded_once_for_all_methods(methods_data, tmp_path, monkeypatch):
    decoded = []
    real = sources.decoded_size
    monkeypatch.setattr(sources, "decoded_size", lambda path: decoded.append(os.fspath(path)) or real(path))
    methods = {name: methods_data / name for name in METHODS}
    compare(methods_data / "data", tmp_path / "out", methods, bootstrap=10, workers=1, plots=False, progress=False)
    inputs = [str(path) for folder in ("data", *METHODS) for path in (methods_data / folder).rglob("*.*")]
    assert sorted(decoded) == sorted(inputs)  # images and masks checked once, not once per method


def test_unequal_image_sets_are_refused_before_scoring(methods_data, tmp_path):
    for name in METHODS:
        shutil.copytree(methods_data / name, tmp_path / name)
    os.remove(tmp_path / "B" / "SetA" / "synth_0003.png")
    os.remove(tmp_path / "C" / "SetB" / "synth_0001.png")
    with pytest.raises(ValueError) as error:
        compare(methods_data / "data", tmp_path / "out", {n: tmp_path / n for n in METHODS}, workers=1, progress=False)
    message = str(error.value)
    assert "\n" not in message and "nothing was scored" in message
    assert "B lacks 1 of SetA: synth_0003.png" in message and "C lacks 1 of SetB: synth_0001.png" in message
    assert not (tmp_path / "out").exists()


def test_vessel_pooled_metrics_have_intervals_but_no_paired_test(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("data/images", "data/masks", "data/fov", "P", "Q"):
        (tmp_path / folder).mkdir(parents=True)
    for i in range(6):
        gt = np.zeros((32, 32), np.uint8)
        gt[:, 4 + 4 * i : 7 + 4 * i] = 255
        if i == 0:
            gt[:] = 0  # no vessel: per-image AUC undefined
        cv2.imwrite(str(tmp_path / "data" / "images" / f"im{i}.png"), rng.integers(0, 255, (32, 32, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"im{i}.png"), gt)
        cv2.imwrite(str(tmp_path / "data" / "fov" / f"im{i}.png"), np.pad(np.full((28, 28), 255, np.uint8), 2))
        for name, noise in (("P", 40), ("Q", 90)):
            noisy = np.clip(gt * 0.8 + rng.normal(0, noise, gt.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / name / f"im{i}.png"), noisy)
    result = compare(
        tmp_path / "data",
        tmp_path / "out",
        {"P": tmp_path / "P", "Q": tmp_path / "Q"},
        task="vessel",
        bootstrap=200,
        workers=1,
        progress=False,
    )
    methods = result["comparison"]["datasets"]["data"]["methods"]
    assert methods["Q"]["F1"]["p_value"] is None and "pooled" in methods["Q"]["F1"]["p_note"]
    assert methods["Q"]["F1"]["ci95"] is not None and methods["Q"]["fov_AUC"]["ci95"] is not None
    with open(tmp_path / "out" / "P" / "per_image.csv") as f:
        p_rows = list(csv.DictReader(f))
    with open(tmp_path / "out" / "Q" / "per_image.csv") as f:
        q_rows = list(csv.DictReader(f))
    for metric, column in (("per_image_F1", "F1"), ("fov_per_image_Se", "fov_Se"), ("per_image_AUC", "AUC")):
        pairs = [(float(q[column]), float(p[column])) for p, q in zip(p_rows, q_rows)]
        pairs = [pair for pair in pairs if not np.isnan(pair).any()]  # per-image AUC: undefined without vessels
        expected = stats.wilcoxon(*zip(*pairs)).pvalue
        assert methods["Q"][metric]["p_value"] == pytest.approx(expected, rel=1e-12), metric
        assert methods["Q"][metric]["n_pairs"] == len(pairs) == (5 if column == "AUC" else 6)
    assert set(methods["P"]) == set(vessel.METRICS) | {
        f"{prefix}{key}" for prefix in ("per_image_", "fov_", "fov_per_image_") for key in vessel.METRICS
    }


def test_default_names_are_unique():
    assert default_names(["runs/a/export", "runs/b/export", "maps/PraNet", "m.weights.h5"]) == [
        "export",
        "export_2",
        "PraNet",
        "m",
    ]


def test_cli_compares_prediction_folders(methods_data, tmp_path, capsys):
    test_model.main(
        [
            "--pred-dir",  # the dash spelling
            *(str(methods_data / name) for name in ("A", "B")),
            "--names",
            "ours",
            "theirs",
            "--data_path",
            str(methods_data / "data"),
            "--output",
            str(tmp_path / "out"),
            "--bootstrap",
            "200",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert "**SetA** (8 images" in printed and "p theirs vs ours" in printed
    assert re.search(r"\| meanDice \| 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] \| 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] \| ", printed)
    for name in ("comparison.json", "comparison.csv", "comparison_SetA.png", "ours/results.json", "theirs/results.csv"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_cli_single_method_adds_intervals_to_results_json_only(methods_data, tmp_path, capsys):
    test_model.main(
        [
            "--pred_dir",
            str(methods_data / "A"),
            "--data_path",
            str(methods_data / "data"),
            "--output",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--no_plots",
            "--quiet",
        ]
    )
    assert "| SetA | 8 |" in capsys.readouterr().out  # today's table
    with open(tmp_path / "out" / "results.json") as f:
        results = json.load(f)
    assert list(results["SetA"]["ci95"]) == list(polyp.metric_names())  # 1000 resamples by default
    with open(tmp_path / "out" / "results.csv") as f:
        assert "ci95" not in f.readline()
