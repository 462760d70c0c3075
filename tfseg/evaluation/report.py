"""Evaluation outputs: the markdown table, results.json / results.csv / per_image.csv, and the PNG plots, each
written whole or not at all (`tfseg.files`)."""

import csv
import io
import math
import os

import numpy as np
from matplotlib.figure import Figure

from tfseg.evaluation import polyp, vessel
from tfseg.files import atomic_path, write_json, write_text

RESULTS_JSON, RESULTS_CSV, PER_IMAGE_CSV = "results.json", "results.csv", "per_image.csv"
CURVES_PNG = "dice_vs_threshold.png"


def flatten(summary, prefix=""):
    """{'Acc': .., 'fov': {'Acc': ..}} -> {'Acc': .., 'fov_Acc': ..} (nested results as CSV columns)."""
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _format(value, digits=3):
    if isinstance(value, (int, np.integer)):
        return str(value)
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(results, columns, title=None, prefix=""):
    """One row per dataset: `| Dataset | n | column ... |`, 3 decimals as in the papers; values are read from
    the flattened results under `prefix + column`."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| Dataset | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, summary in results.items():
        flat = flatten(summary)
        lines.append(
            f"| {name} | {summary['n_images']} | " + " | ".join(_format(flat.get(prefix + c)) for c in columns) + " |"
        )
    return "\n".join(lines)


def results_markdown(results, task, threshold=0.5):
    """The terminal report: polyp, one table; vessel, pooled and per-image tables, whole image and FOV."""
    if task == "polyp":
        return markdown_table(results, polyp.metric_names(threshold))
    tables = [
        markdown_table(results, vessel.METRICS, "Vessels, pooled over all pixels (whole image)"),
        markdown_table(results, vessel.METRICS, "Mean over images (whole image)", "per_image_"),
    ]
    if any("fov" in summary for summary in results.values()):
        tables += [
            markdown_table(results, vessel.METRICS, "Pooled inside the FOV", "fov_"),
            markdown_table(results, vessel.METRICS, "Mean over images inside the FOV", "fov_per_image_"),
        ]
    return "\n\n".join(tables)


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None  # an undefined metric (e.g. AUC without vessels) is null, never NaN, in strict JSON
    return value


def write_results(results, output):
    """results.json ({dataset: {metric: value, ..., 'n_images': n}}) and results.csv (one row per dataset)."""
    write_json(os.path.join(output, RESULTS_JSON), _json_safe(results))
    rows = [{"dataset": name, **flatten(summary)} for name, summary in results.items()]
    _write_csv(os.path.join(output, RESULTS_CSV), rows)


def write_per_image(rows, output):
    _write_csv(os.path.join(output, PER_IMAGE_CSV), rows)


def _write_csv(path, rows):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def plot_curves(curves, path, ylabel="Dice"):
    """One line per dataset: {name: (thresholds, values)}."""
    figure = Figure(figsize=(6, 4.5), dpi=120)
    axes = figure.subplots()
    for name, (thresholds, values) in curves.items():
        axes.plot(thresholds, values, label=f"{name} (max {np.max(values):.3f})")
    axes.set(xlabel="threshold", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=f"{ylabel} vs threshold")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower center", fontsize=8)
    _save(figure, path)


def _save(figure, path):
    figure.tight_layout()
    with atomic_path(path) as temporary:  # same suffix: matplotlib still writes PNG
        figure.savefig(temporary)


def plot_cases(cases, path, title):
    """A grid with one row per case (image, ground truth, prediction): cases = [(label, image, gt, pred)]."""
    figure = Figure(figsize=(9, 2.6 * len(cases)), dpi=100)
    grid = figure.subplots(len(cases), 3, squeeze=False)
    for row, (label, image, gt, prediction) in zip(grid, cases):
        for axes, picture, heading in zip(row, (image, gt, prediction), ("image", "ground truth", "prediction")):
            axes.imshow(picture, cmap="gray", vmin=0, vmax=255 if picture.dtype == np.uint8 else 1)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(heading, fontsize=9)
        row[0].set_ylabel(label, fontsize=8)
    figure.suptitle(title)
    _save(figure, path)
