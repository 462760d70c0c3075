"""Several methods scored on the same images: each method's evaluation, then per dataset, method and metric the
mean, its 95% bootstrap confidence interval and the paired Wilcoxon signed-rank p-value against the first method
(tfseg.evaluation.statistics), in comparison.json, comparison.csv and one plot per dataset. No TensorFlow."""

import logging
import math
import os
from pathlib import Path

import numpy as np

from tfseg.data.layouts import find_datasets
from tfseg.data.sources import files_by_key, format_names, split_by_file
from tfseg.evaluation import report, statistics
from tfseg.evaluation.evaluate import PROTOCOLS, RANKED_BY, Evaluation, prediction_folder, prediction_key, scoring_pool
from tfseg.files import refuse_overwrite, write_json

COMPARISON_JSON, COMPARISON_CSV = "comparison.json", "comparison.csv"
NOT_PER_IMAGE = {  # dataset metrics that are not the mean of a per_image.csv column: no paired test
    "polyp": {"maxEm": "the maximum of the mean E-measure curve over thresholds, not a mean of per-image values"},
    "vessel": "pooled over the pixels of all images, not a mean of per-image values",
}

log = logging.getLogger(__name__)


def compare(
    data_path,
    output,
    methods,
    task=None,
    threshold=0.5,
    bootstrap=1000,
    seed=0,
    save_maps=None,
    observer=1,
    split_file=None,
    plots=True,
    **options,
):
    """Scores every method of `methods` ({name: prediction folder, or predictor}; the first is the reference) on
    the images under `data_path` as `evaluate` does (its results in `output/<name>/`, `save_maps` in
    `save_maps/<name>/`; `options`: evaluate's other arguments), then writes `output/comparison.json`,
    `comparison.csv` and, with `plots`, `comparison_<dataset>.png` (per-image meanDice, or F1 for vessels).

    Per dataset, method and metric: the mean, the 95% percentile-bootstrap interval over the images (`bootstrap`
    resamples seeded by `seed`, the same resampled images for every method) and the p-value of the Wilcoxon
    signed-rank test against the first method on the per-image values. ValueError, before any scoring, for
    invalid names, fewer than two methods, or prediction folders that lack images the others are scored on.

    Returns {"comparison": what comparison.json holds, "output": output, "notes": {method: evaluate's notes}}."""
    _check_methods(methods, bootstrap)
    folders = {name: source for name, source in methods.items() if not hasattr(source, "predict")}
    predictors = [source for name, source in methods.items() if name not in folders]
    task = task or (predictors[0].task if predictors else "polyp")
    datasets = find_datasets(data_path, observer)
    if split_file:
        datasets = [(name, split_by_file(pairs, split_file)[1]) for name, pairs in datasets]
    _refuse_unmatched(datasets, folders)
    refuse_overwrite([output], folders.values(), "output folder")
    n_scored = len(methods) * sum(len(pairs) for _, pairs in datasets)
    with scoring_pool(options.pop("workers", None), n_scored) as pool:  # one pool: its start is paid once
        evaluations, decoded = {}, {}  # each image and mask decoded once for all the methods' checks
        for name, source in methods.items():  # every method queued before any is finished: the pool never waits
            log.info("Scoring %s", name)
            predictor = None if name in folders else source
            evaluations[name] = Evaluation(
                data_path,
                os.path.join(output, name),
                task=task,
                predictor=predictor,
                pred_dir=None if predictor else source,
                threshold=threshold,
                save_maps=os.path.join(save_maps, name) if save_maps else None,
                observer=observer,
                split_file=split_file,
                plots=plots,
                bootstrap=bootstrap,
                seed=seed,
                label=f"{name}: ",
                decoded=decoded,
                **options,
            )
            evaluations[name].submit(pool)
        evaluations = {name: evaluations[name].finish() for name in methods}
    comparison = _comparison(evaluations, methods, task, threshold, bootstrap, seed)
    write_json(os.path.join(output, COMPARISON_JSON), comparison)
    report.write_csv(os.path.join(output, COMPARISON_CSV), _csv_rows(comparison))
    if plots:
        for dataset in comparison["datasets"]:
            _plot(evaluations, dataset, task, threshold, comparison_png(output, dataset))
    return {
        "comparison": comparison,
        "output": output,
        "notes": {name: evaluation["notes"] for name, evaluation in evaluations.items()},
    }


def comparison_png(output, dataset):
    return os.path.join(output, f"comparison_{dataset}.png")


def _check_methods(methods, bootstrap):
    if len(methods) < 2:
        raise ValueError(f"A comparison needs at least two methods, got {len(methods)}")
    bad = [name for name in methods if not name or name in (".", "..") or os.sep in name or "/" in name]
    if bad:
        raise ValueError(f"Method names are folder names in the output: not {format_names(map(repr, bad))}")
    if bootstrap < 1:
        raise ValueError(f"A comparison needs bootstrap resamples (>= 1; 1000 or more for a paper), got {bootstrap}")


def _refuse_unmatched(datasets, folders):
    """ValueError, in one line, naming the images that some prediction folders ({method: folder}) have no
    prediction for (a model predicts every image)."""
    several = len(datasets) > 1
    missing = []
    for name, folder in folders.items():
        for dataset, pairs in datasets:
            files = files_by_key(prediction_folder(folder, dataset, several))
            unmatched = [os.path.basename(pair.mask) for pair in pairs if prediction_key(pair, files) is None]
            missing += [f"{name} lacks {len(unmatched)} of {dataset}: {format_names(unmatched)}"] if unmatched else []
    if missing:
        raise ValueError("Every method must be scored on the same images (nothing was scored): " + "; ".join(missing))


def per_image_column(task, metric):
    """(the per_image.csv column whose mean over images is the dataset `metric`, None), or (None, why there is
    none)."""
    if task == "polyp":
        return (None, NOT_PER_IMAGE["polyp"][metric]) if metric in NOT_PER_IMAGE["polyp"] else (metric, None)
    for prefix, column_prefix in (("per_image_", ""), ("fov_per_image_", "fov_")):
        if metric.startswith(prefix):
            return column_prefix + metric.removeprefix(prefix), None
    return None, NOT_PER_IMAGE["vessel"]


def _per_image(evaluation, dataset, task, threshold):
    """{per_image.csv column: [value per image]} of one method on one dataset (NaN: undefined)."""
    rows = [PROTOCOLS[task].image_row(score, threshold) for score in evaluation["scores"][dataset].values()]
    return {key: np.array([row[key] for row in rows], np.float64) for key in rows[0]}


def _defined(value):
    return None if value is None or math.isnan(value) else float(value)


def _comparison(evaluations, methods, task, threshold, bootstrap, seed):
    """comparison.json: the protocol of the statistics, the methods and, per dataset, method and metric
    {"mean", "ci95", "p_value", "n_pairs", "p_note"}."""
    reference = next(iter(evaluations))
    datasets = {}
    for dataset in evaluations[reference]["results"]:
        images = list(evaluations[reference]["scores"][dataset])
        for name, evaluation in evaluations.items():
            if list(evaluation["scores"][dataset]) != images:
                raise ValueError(f"{name} was scored on other images of {dataset} than {reference}")
        reference_values = _per_image(evaluations[reference], dataset, task, threshold)
        by_method = {}
        for name, evaluation in evaluations.items():
            results = evaluation["results"][dataset]
            values = _per_image(evaluation, dataset, task, threshold)
            means = report.flatten(results)
            by_method[name] = {}
            for metric, interval in evaluation["ci95"][dataset].items():
                column, note = per_image_column(task, metric)
                p_value, pairs = None, 0
                if name == reference:
                    note = "reference method"
                elif column is not None:
                    p_value, pairs, note = statistics.wilcoxon(values[column], reference_values[column])
                by_method[name][metric] = {
                    "mean": _defined(means[metric]),
                    "ci95": interval,
                    "p_value": p_value,
                    "n_pairs": pairs,
                    **({"p_note": note} if note else {}),
                }
        verdicts = {name: evaluation["protocol"]["datasets"][dataset] for name, evaluation in evaluations.items()}
        datasets[dataset] = {
            "n_images": len(images),
            "methods": by_method,
            # each method's protocol card: null unknown, false when chosen or trained on these images
            "comparable": {name: {k: v.get(k) for k in ("comparable", "reason")} for name, v in verdicts.items()},
        }
    return {
        "protocol": {
            "task": task,
            "threshold": threshold,
            "reference": reference,
            "confidence_interval": {
                "level": statistics.LEVEL,
                "method": "percentile bootstrap over images: images resampled with replacement, the same "
                "resampled images for every method (paired), each resample's metrics recomputed by the protocol",
                "percentiles": list(statistics.PERCENTILES),
                "resamples": bootstrap,
                "seed": seed,
                "generator": "numpy.random.default_rng(seed).integers, one draw of [resamples, images] per dataset",
            },
            "test": {
                "name": "Wilcoxon signed-rank, two-sided, each method against the reference, on the per-image "
                "values (images where both are defined); unadjusted for multiple comparisons",
                "implementation": "scipy.stats.wilcoxon with its defaults",
            },
        },
        "methods": {name: _source_name(source) for name, source in methods.items()},
        "datasets": datasets,
    }


def _source_name(source):
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _csv_rows(comparison):
    """comparison.csv: one row per dataset, method and metric."""
    return [
        {
            "dataset": dataset,
            "method": name,
            "metric": metric,
            "mean": entry["mean"],
            "ci95_lo": entry["ci95"][0] if entry["ci95"] else None,
            "ci95_hi": entry["ci95"][1] if entry["ci95"] else None,
            "p_value": entry["p_value"],
            "n_pairs": entry["n_pairs"],
            "p_note": entry.get("p_note", ""),
        }
        for dataset, summary in comparison["datasets"].items()
        for name, metrics in summary["methods"].items()
        for metric, entry in metrics.items()
    ]


def _plot(evaluations, dataset, task, threshold, path):
    key = RANKED_BY[task]
    values = {name: _per_image(evaluation, dataset, task, threshold)[key] for name, evaluation in evaluations.items()}
    n_images = len(next(iter(values.values())))
    report.plot_paired(values, path, f"{dataset}: per-image {key} ({n_images} images)", key)


def _interval(entry):
    mean, interval = entry["mean"], entry["ci95"]
    if mean is None:
        return "n/a"
    return f"{mean:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{mean:.3f} [n/a]"


def _p(entry):
    return "n/a" if entry["p_value"] is None else f"{entry['p_value']:.3g}"


def comparison_markdown(comparison):
    """One table per dataset: a row per metric, `mean [lo, hi]` per method and the p-value of each other method
    against the reference."""
    reference = comparison["protocol"]["reference"]
    resamples = comparison["protocol"]["confidence_interval"]["resamples"]
    tables = []
    for dataset, summary in comparison["datasets"].items():
        methods = summary["methods"]
        others = [name for name in methods if name != reference]
        header = [
            "metric",
            *[f"{name} mean [95% CI]" for name in methods],
            *[f"p {name} vs {reference}" for name in others],
        ]
        lines = [
            f"**{dataset}** ({summary['n_images']} images; {resamples} bootstrap resamples; Wilcoxon signed-rank)",
            "",
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * (len(header) - 1),
        ]
        for metric in methods[reference]:
            cells = [_interval(methods[name][metric]) for name in methods] + [
                _p(methods[name][metric]) for name in others
            ]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        for name, verdict in summary.get("comparable", {}).items():
            if verdict["comparable"] is False:
                lines.append(f"\nNOT COMPARABLE: {name}: {verdict['reason']}")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def default_names(sources):
    """Method names from their paths (folder or file name without the extension), made unique with `_2`, `_3`."""
    names = []
    for source in sources:
        path = Path(source)
        name = path.name.removesuffix(".weights.h5") if path.name.endswith(".weights.h5") else path.stem
        candidate, count = name, 1
        while candidate in names:
            count += 1
            candidate = f"{name}_{count}"
        names.append(candidate)
    return names
