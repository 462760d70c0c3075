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
SIZE_BINS_PNG = "dice_by_size.png"  # polyp
JSON_ONLY = ("analysis",)  # nested results kept out of results.csv
NOT_COMPARABLE = "(NOT COMPARABLE: see the protocol)"


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


def markdown_table(results, columns, title=None, prefix="", protocol=None):
    """One row per dataset: `| Dataset | n | column ... |`, 3 decimals as in the papers; values are read from
    the flattened results under `prefix + column`. A dataset the protocol card marks not comparable (the model's
    checkpoint chosen or trained on it) is named with NOT_COMPARABLE."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| Dataset | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, summary in results.items():
        flat = flatten(summary)
        lines.append(
            f"| {_row_name(name, protocol)} | {summary['n_images']} | "
            + " | ".join(_format(flat.get(prefix + c)) for c in columns)
            + " |"
        )
    return "\n".join(lines)


def _row_name(name, protocol):
    comparable = ((protocol or {}).get("datasets", {}).get(name) or {}).get("comparable")
    return f"{name} {NOT_COMPARABLE}" if comparable is False else name


def results_markdown(results, task, threshold=0.5, protocol=None):
    """The terminal report: polyp, one table; vessel, pooled and per-image tables, whole image and FOV."""
    if task == "polyp":
        return markdown_table(results, polyp.metric_names(threshold), protocol=protocol)
    tables = [
        markdown_table(results, vessel.METRICS, "Vessels, pooled over all pixels (whole image)", "", protocol),
        markdown_table(results, vessel.METRICS, "Mean over images (whole image)", "per_image_", protocol),
    ]
    if any("fov" in summary for summary in results.values()):
        tables += [
            markdown_table(results, vessel.METRICS, "Pooled inside the FOV", "fov_", protocol),
            markdown_table(results, vessel.METRICS, "Mean over images inside the FOV", "fov_per_image_", protocol),
        ]
    return "\n\n".join(tables)


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None  # an undefined metric (e.g. AUC without vessels) is null, never NaN, in strict JSON
    return value


def write_results(results, output, protocol=None, intervals=None):
    """results.json ({dataset: {metric: value, ..., 'n_images': n[, 'ci95': intervals[dataset]]}, "protocol": the
    protocol card}) and results.csv (one row per dataset, without the intervals)."""
    intervals = intervals or {}
    with_intervals = {
        name: {**summary, **({"ci95": intervals[name]} if name in intervals else {})}
        for name, summary in results.items()
    }
    write_json(
        os.path.join(output, RESULTS_JSON),
        _json_safe({**with_intervals, **({"protocol": protocol} if protocol else {})}),
    )
    rows = [
        {"dataset": name, **flatten({k: v for k, v in summary.items() if k not in JSON_ONLY})}
        for name, summary in results.items()
    ]
    write_csv(os.path.join(output, RESULTS_CSV), rows)


def write_per_image(rows, output):
    write_csv(os.path.join(output, PER_IMAGE_CSV), rows)


def write_csv(path, rows):
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


def plot_size_bins(results, path):
    """Polyp error analysis: meanDice per polyp-size bin, one group of bars per dataset (image counts above)."""
    figure = Figure(figsize=(6, 4.5), dpi=120)
    axes = figure.subplots()
    width = 0.8 / max(1, len(results))
    for index, (name, summary) in enumerate(results.items()):
        bins = summary["analysis"]["by_size"]
        positions = np.arange(len(bins)) + index * width
        values = [entry["meanDice"] or 0.0 for entry in bins.values()]
        bars = axes.bar(positions, values, width, label=name)
        axes.bar_label(bars, [f"n={entry['images']}" for entry in bins.values()], fontsize=7)
        axes.set_xticks(np.arange(len(bins)) + width * (len(results) - 1) / 2, list(bins))
    axes.set(xlabel="polyp area / image area", ylabel="meanDice", ylim=(0, 1.1), title="meanDice by polyp size")
    axes.legend(fontsize=8)
    _save(figure, path)


def _save(figure, path, tight=True):
    if tight:
        figure.tight_layout()
    with atomic_path(path) as temporary:  # same suffix: matplotlib still writes PNG
        figure.savefig(temporary)


def plot_cases(cases, path, title):
    """A grid with one row per case (image, ground truth, prediction): cases = [(label, image, gt, pred)], each
    picture uint8, or float in [0, 1]. Drawn as one mosaic in one axes (an axes per panel took 2-3 s a plot)."""
    cells = [[_as_rgb(picture) for picture in case[1:]] for case in cases]
    height = max(cell.shape[0] for row in cells for cell in row)
    width = max(cell.shape[1] for row in cells for cell in row)
    gap = max(2, width // 40)
    mosaic = np.full(((height + gap) * len(cells) - gap, (width + gap) * 3 - gap, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):  # centred in its cell
            top, left = (
                r * (height + gap) + (height - cell.shape[0]) // 2,
                c * (width + gap) + (width - cell.shape[1]) // 2,
            )
            mosaic[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
    margin_left, margin_top, figure_width = 0.45, 0.75, 9.0  # inches: the row labels, the title and headings
    axes_width = figure_width - margin_left - 0.1
    axes_height = axes_width * mosaic.shape[0] / mosaic.shape[1]
    figure_height = axes_height + margin_top + 0.1
    figure = Figure(figsize=(figure_width, figure_height), dpi=100)
    axes = figure.add_axes(
        (margin_left / figure_width, 0.1 / figure_height, axes_width / figure_width, axes_height / figure_height)
    )
    axes.imshow(mosaic)
    axes.set_axis_off()
    for c, heading in enumerate(("image", "ground truth", "prediction")):
        axes.text(c * (width + gap) + width / 2, -gap, heading, ha="center", va="bottom", fontsize=9)
    for r, case in enumerate(cases):
        y = r * (height + gap) + height / 2
        axes.text(-gap, y, case[0], rotation=90, ha="right", va="center", fontsize=8, multialignment="center")
    figure.suptitle(title, y=1 - 0.12 / figure_height, va="top")
    _save(figure, path, tight=False)


def _as_rgb(picture):
    """uint8 HxWx3 of a uint8 or [0, 1] float picture, grey or RGB."""
    if picture.dtype != np.uint8:
        picture = np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8)
    return np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture


def plot_paired(values, path, title, ylabel):
    """A box plot per method of one per-image metric, each image a point, its values under every method joined by
    a faint line (the pairing the statistics use): values = {method: [value per image, same images in order]}."""
    figure = Figure(figsize=(1.6 + 1.3 * len(values), 4.5), dpi=120)
    axes = figure.subplots()
    table = np.array([np.asarray(v, np.float64) for v in values.values()])  # [methods, images]
    positions = np.arange(1, len(values) + 1)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, table.shape[1])  # fixed: the same picture every run
    axes.plot(positions[:, None] + jitter, table, color="grey", alpha=0.15, linewidth=0.6)
    for position, row in zip(positions, table):
        axes.scatter(position + jitter, row, s=8, alpha=0.6, zorder=3)
    axes.boxplot([row[~np.isnan(row)] for row in table], positions=positions, widths=0.5, showfliers=False)
    axes.set_xticks(positions, list(values), rotation=20 if len(values) > 4 else 0)
    axes.set(ylabel=ylabel, title=title, ylim=(-0.02, 1.02))
    axes.grid(axis="y", alpha=0.3)
    _save(figure, path)
