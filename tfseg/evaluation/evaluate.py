"""Evaluation of one dataset or a root of several: predictions from a model (any object with
`predict(image, size)`, e.g. `tfseg.inference.Predictor`) or from a folder of maps, scored by the polyp or the
vessel protocol in worker processes, then tables, CSVs and plots. Needs no TensorFlow itself.
"""

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import signal
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from tfseg.data.fov import estimate_fov
from tfseg.data.imageio import image_size, read_mask, read_prediction, read_problem, read_rgb, write_png
from tfseg.data.layouts import find_datasets
from tfseg.data.sources import (
    DatasetError,
    check_pairs,
    decode_all,
    decoded_size,
    files_by_key,
    format_names,
    raise_listing,
    split_by_file,
)
from tfseg.evaluation import analysis, polyp, report, statistics, vessel
from tfseg.evaluation.protocol import protocol_card
from tfseg.files import refuse_overwrite

PROTOCOLS = {"polyp": polyp, "vessel": vessel}
RANKED_BY = {"polyp": "meanDice", "vessel": "F1"}  # the per-image score that picks the best and worst cases
THUMBNAIL = 320  # longest side of the pictures kept for the case grids
CASES = 3  # best and worst cases shown per dataset
ESTIMATED_FOV = "<estimated>"  # in place of a FOV file: estimate the FOV from the image

log = logging.getLogger(__name__)


def evaluate(data_path, output, task=None, *, workers=None, pool=None, **options):
    """Scores every dataset under `data_path` and writes results.json, results.csv, per_image.csv and then the
    plots to `output`, by the protocol `task` ("polyp" | "vessel"; default the predictor's task, and the polyp
    protocol for prediction maps). Give `predictor` (maps predicted here, optionally written to `save_maps`) or
    `pred_dir`
    (existing maps matched to the masks by stem; `pred_dir/<dataset>` when that folder exists; uint8/uint16 grey,
    or float probabilities in [0, 1]). `split_file` (one id a line) restricts a dataset to the images it lists,
    e.g. Kvasir-SEG's 100 PraNet test ids. `estimate_fov` (vessel task): images without a FOV mask get one
    estimated from the image (threshold and erosion, `tfseg.data.fov.estimate_fov`), so that the FOV metrics exist
    for STARE and CHASE_DB1 too.

    Before any scoring every input is decoded whole: one DatasetError lists the damaged files and the pairs whose
    image and mask sizes differ (with `allow_size_mismatch`, a note lists these instead); with `pred_dir`, a
    damaged image (read by the case plots only) is a note too. OverwriteError (a ValueError) refuses an output
    file that is an input, or an output folder that is an input folder.

    `bootstrap` resamples (0: none) give each dataset `ci95`, {metric (results.csv column): [lo, hi]}: 95%
    percentile-bootstrap intervals over the images, seeded by `seed` (tfseg.evaluation.statistics); in
    results.json, not results.csv.

    Scoring runs in `workers` processes (default: one per core), or in `pool` (`scoring_pool`) when given.
    `options`: `Evaluation`'s other arguments (predictor, pred_dir, threshold, save_maps, observer, split_file,
    estimate_fov, plots, progress, allow_size_mismatch, bootstrap, seed, threshold_source).

    Returns {"results": {dataset: metrics}, "ci95": {dataset: intervals}, "scores": {dataset: {image (mask file
    name): its per-image scores}}, "output": output, "notes": [what the run had to handle]}.
    """
    evaluation = Evaluation(data_path, output, task, **options)
    with scoring_pool(workers, evaluation.n_images, pool) as pool:
        evaluation.submit(pool)
        return evaluation.finish()


class Evaluation:
    """`evaluate` in three steps: the checks (here), `submit` (every image's scoring queued in a pool) and
    `finish` (summaries, files, plots), so that a comparison queues every method's scoring before it finishes
    any, and the pool never waits for the parent's plots. The arguments are `evaluate`'s; `label` starts the
    progress bars' names; `decoded` ({path: `sources.decoded_size`}, filled here) spares the methods of a
    comparison decoding the same images and masks again."""

    def __init__(
        self,
        data_path,
        output,
        task=None,
        predictor=None,
        pred_dir=None,
        threshold=0.5,
        save_maps=None,
        observer=1,
        split_file=None,
        estimate_fov=False,
        plots=True,
        progress=True,
        allow_size_mismatch=False,
        bootstrap=1000,
        seed=0,
        threshold_source="as given",
        label="",
        decoded=None,
    ):
        task = task or (predictor.task if predictor is not None else "polyp")  # a model knows its own protocol
        _check_arguments(task, predictor, pred_dir, save_maps)
        datasets = find_datasets(data_path, observer)
        if split_file:
            datasets = [(name, split_by_file(pairs, split_file)[1]) for name, pairs in datasets]
        several = len(datasets) > 1
        self.predictions = (
            {
                name: match_predictions(pairs, prediction_folder(pred_dir, name, several), name)
                for name, pairs in datasets
            }
            if pred_dir is not None
            else {}
        )
        self.maps_dirs = {
            name: os.path.join(save_maps, name) if save_maps and several else save_maps for name, _ in datasets
        }
        _refuse_overwrites(datasets, self.predictions, pred_dir, output, self.maps_dirs, plots)
        self.notes = _check_inputs(
            datasets,
            self.predictions,
            predictor is not None or (estimate_fov and task == "vessel"),
            allow_size_mismatch,
            {} if decoded is None else decoded,
        )
        for note in self.notes:
            log.warning(note)
        self.datasets, self.output, self.task, self.predictor, self.pred_dir = (
            datasets,
            output,
            task,
            predictor,
            pred_dir,
        )
        self.threshold, self.estimate_fov, self.plots, self.progress, self.label = (
            threshold,
            estimate_fov,
            plots,
            progress,
            label,
        )
        self.bootstrap, self.seed, self.threshold_source = bootstrap, seed, threshold_source
        self.n_images = sum(len(pairs) for _, pairs in datasets)
        self.jobs = {}

    def submit(self, pool):
        """Queues every image's scoring in `pool` (a model predicts each image here first)."""
        for name, pairs in self.datasets:
            bar = tqdm(total=len(pairs), desc=self.label + name, unit="image", disable=not self.progress, leave=False)
            futures = []
            for pair in pairs:
                raw = None
                if self.predictor is None:
                    prediction = str(self.predictions[name][pair.stem])
                else:
                    prediction, raw = _predict(self.predictor, pair, self.task, self.threshold)
                    if self.maps_dirs[name]:
                        write_png(_map_path(self.maps_dirs[name], pair), _as_uint8(prediction))
                fov = pair.fov or (ESTIMATED_FOV if self.estimate_fov and self.task == "vessel" else None)
                future = pool.submit(score_file, self.task, self.threshold, prediction, pair.mask, fov, pair.image, raw)
                future.add_done_callback(lambda _, bar=bar: bar.update())
                futures.append(future)
            self.jobs[name] = (bar, futures)

    def finish(self):
        """Waits for the scores, writes results.json/csv, per_image.csv and the plots; returns `evaluate`'s dict."""
        task, threshold, protocol = self.task, self.threshold, PROTOCOLS[self.task]
        results, intervals, scored, rows, curves, cases, scoring_notes = {}, {}, {}, [], {}, {}, []
        for name, pairs in self.datasets:
            bar, futures = self.jobs[name]
            with bar:
                scores = [future.result() for future in futures]
            results[name] = {**protocol.summarize(scores, threshold), "n_images": len(scores)}
            results[name]["analysis"] = _analysis(task, scores, threshold, self.predictor is not None)
            if self.bootstrap:
                intervals[name] = statistics.confidence_intervals(
                    scores, protocol, threshold, self.bootstrap, self.seed
                )
            scored[name] = {
                os.path.basename(pair.mask): _without_thumbnail(score) for pair, score in zip(pairs, scores)
            }
            scoring_notes += _notes(name, pairs, scores, task)
            rows += [
                {
                    "dataset": name,
                    "image": os.path.basename(pair.mask),
                    "empty_gt": score["empty_gt"],
                    **protocol.image_row(score, threshold),
                }
                for pair, score in zip(pairs, scores)
            ]
            curves[name] = protocol.dice_curve(scores)
            cases[name] = _pick_cases(pairs, scores, task, threshold)
        for note in scoring_notes:
            log.warning(note)
        fov = _fov_source(task, self.datasets, self.estimate_fov)
        card = protocol_card(task, self.datasets, threshold, self.threshold_source, self.predictor, self.pred_dir, fov)
        report.write_results(results, self.output, card, intervals)
        report.write_per_image(rows, self.output)
        if self.plots:
            report.plot_curves(curves, os.path.join(self.output, report.CURVES_PNG))
            if task == "polyp":
                report.plot_size_bins(results, os.path.join(self.output, report.SIZE_BINS_PNG))
            for name, chosen in cases.items():
                _plot_cases(name, chosen, task, _cases_png(self.output, name))
        return {
            "results": results,
            "ci95": intervals,
            "scores": scored,
            "protocol": card,
            "output": self.output,
            "notes": self.notes + scoring_notes,
        }


def _fov_source(task, datasets, estimate_fov):
    """How the vessel protocol found each image's field of view (the protocol card's "fov")."""
    if task != "vessel":
        return None
    with_fov = sum(1 for _, pairs in datasets for pair in pairs if pair.fov)
    total = sum(len(pairs) for _, pairs in datasets)
    if estimate_fov:
        return f"the dataset's FOV masks ({with_fov} of {total} images), the others estimated from the image"
    if with_fov == total:
        return "the dataset's FOV masks"
    return f"FOV masks for {with_fov} of {total} images: FOV metrics only for datasets where every image has one"


def _analysis(task, scores, threshold, raw):
    """The error analysis of one dataset (tfseg.evaluation.analysis); `raw`: the model's own probabilities are
    at hand (else the prediction maps stand in for them)."""
    if task == "vessel":
        return analysis.vessel_summary(scores)
    source = "the model's raw probabilities" if raw else "the prediction maps as stored (map / 255)"
    return analysis.polyp_summary(scores, threshold, source)


def _check_arguments(task, predictor, pred_dir, save_maps):
    if task not in PROTOCOLS:
        raise ValueError(f"task must be one of {sorted(PROTOCOLS)}, got {task!r}")
    if (predictor is None) == (pred_dir is None):
        raise ValueError("Give exactly one of predictor and pred_dir")
    if pred_dir is not None and save_maps:
        raise ValueError("save_maps writes a model's predictions; with pred_dir the maps exist already")


def _cases_png(output, name):
    return os.path.join(output, f"cases_{name}.png")


def _map_path(maps_dir, pair):
    """Where `save_maps` writes a pair's map: a PNG named like its mask."""
    return os.path.join(maps_dir, Path(pair.mask).stem + ".png")


def _refuse_overwrites(datasets, predictions, pred_dir, output, maps_dirs, plots):
    """OverwriteError when a file the run would write is one of its inputs, or when `output` or a maps folder is a
    folder of inputs (maps written among the masks would become part of the dataset)."""
    inputs = [path for _, pairs in datasets for pair in pairs for path in (pair.image, pair.mask, pair.fov) if path]
    inputs += [str(path) for files in predictions.values() for path in files.values()]
    outputs = [os.path.join(output, name) for name in (report.RESULTS_JSON, report.RESULTS_CSV, report.PER_IMAGE_CSV)]
    if plots:
        outputs += [os.path.join(output, name) for name in (report.CURVES_PNG, report.SIZE_BINS_PNG)]
        outputs += [_cases_png(output, name) for name, _ in datasets]
    outputs += [_map_path(maps_dirs[name], pair) for name, pairs in datasets if maps_dirs[name] for pair in pairs]
    refuse_overwrite(outputs, inputs)
    input_folders = {os.path.dirname(path) for path in inputs} | ({os.fspath(pred_dir)} if pred_dir else set())
    refuse_overwrite([output, *filter(None, maps_dirs.values())], input_folders, "output folder")


def _check_inputs(datasets, predictions, needs_images, allow_size_mismatch, decoded):
    """Decodes every input before any scoring. Raises one DatasetError listing, per dataset, the damaged files
    that scoring reads and (unless `allow_size_mismatch`) the pairs whose image and mask sizes differ. Returns
    notes: the allowed mismatches, and the damaged images that scoring does not read (`needs_images` False:
    prediction maps are scored and no FOV is estimated)."""
    errors, notes = [], []
    for name, pairs in datasets:
        problems, set_aside, mismatched = _check_dataset(
            pairs, predictions.get(name, {}).values(), needs_images, allow_size_mismatch, decoded
        )
        errors += [f"{name}: {problem}" for problem in problems]
        if set_aside:
            notes.append(
                f"{name}: {len(set_aside)} damaged or unreadable image(s), not needed to score the "
                f"prediction maps (left out of the case plot): {format_names(_described(set_aside))}"
            )
        if mismatched:
            notes.append(
                f"{name}: {len(mismatched)} pair(s) whose image and mask sizes differ, scored as allowed: "
                f"{format_names(mismatched)}"
            )
    if errors:
        raise DatasetError("\n".join(["Inputs that cannot be scored (nothing was scored):", *errors]))
    return notes


def _check_dataset(pairs, prediction_files, needs_images, allow_size_mismatch, decoded):
    """(problems, {damaged image set aside: reason}, allowed size mismatches) of one dataset's files, each
    decoded once (`decoded`: `sources.decode_all`'s dict, shared by the methods of a comparison)."""
    others = [pair.fov for pair in pairs if pair.fov] + [str(path) for path in prediction_files]
    decode_all([path for pair in pairs for path in (pair.image, pair.mask)] + others, decoded)
    set_aside = {} if needs_images else {pair.image: decoded[pair.image][1] for pair in pairs if decoded[pair.image][1]}
    # a pair whose image is set aside is checked with its mask in the image's place: the mask must still decode
    checked = [pair._replace(image=pair.mask) if pair.image in set_aside else pair for pair in pairs]
    others = {path: problem for path in others if (problem := read_problem(path, decoded[path]))}
    problems, mismatched = [], []
    try:
        mismatched = check_pairs(checked, allow_size_mismatch, decoded)
    except DatasetError as error:
        problems.append(str(error))
    if others:
        problems.append(
            f"{len(others)} unreadable or damaged FOV or prediction file(s): {format_names(_described(others))}"
        )
    return problems, set_aside, mismatched


def _described(problems):
    return [f"{path} ({reason})" for path, reason in problems.items()]


def prediction_folder(pred_dir, name, several):
    """Where the predictions of dataset `name` are: `pred_dir/name` when that folder exists (required when there
    are `several` datasets), else `pred_dir`."""
    folder = Path(pred_dir) / name
    if folder.is_dir():
        return folder
    if several:
        raise DatasetError(f"No predictions for dataset {name}: expected the folder {folder}")
    return Path(pred_dir)


def match_predictions(pairs, folder, dataset):
    """{pair stem: prediction file}: a prediction is named like its image or its mask (any image extension).
    Raises DatasetError listing masks without a prediction and predictions without a mask."""
    files = files_by_key(folder)
    matched, missing = {}, []
    for pair in pairs:
        key = prediction_key(pair, files)
        if key is None:
            missing.append(os.path.basename(pair.mask))
        else:
            matched[pair.stem] = files[key]
    used = set(matched.values())
    extra = [os.path.basename(path) for path in files.values() if path not in used]
    raise_listing(
        f"The predictions in {folder} do not match the masks of {dataset}:",
        [(missing, "mask(s) without a prediction"), (extra, "prediction(s) without a mask")],
    )
    return matched


def prediction_key(pair, files):
    """The key of `files` (`files_by_key`) of a pair's prediction, named like its image or its mask; None."""
    return next((key for key in (pair.stem, Path(pair.mask).stem) if key in files), None)


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each job at submit time (one worker, or too few images to pay for starting processes)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to the caller through the future, as a pool would
            future.set_exception(error)
        return future


@contextlib.contextmanager
def scoring_pool(workers, n_images, shared=None):
    """`workers` scoring processes (default: one per core) for `n_images`, or an inline executor; or `shared`, a
    pool that the caller owns (a comparison scores every method in one). Workers ignore Ctrl-C, which the parent
    handles: on it (or any error) the queued jobs are cancelled rather than run to the end."""
    if shared is not None:
        yield shared
        return
    workers = os.cpu_count() if workers is None else workers
    if workers <= 1 or n_images < 2 * workers:
        yield _InlineExecutor()
        return
    # spawn: the parent may run TensorFlow, whose threads make fork unsafe
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=signal.signal,
        initargs=(signal.SIGINT, signal.SIG_IGN),
    )
    for _ in range(workers):  # the workers start (and import) now, while the caller still checks its inputs
        pool.submit(_ready)
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def _ready():
    """A job that does nothing: running it starts a worker process, which imports this module to run it."""


def _predict(predictor, pair, task, threshold):
    """(the map the protocol scores at the mask's size, the raw probabilities' maximum and area above
    `threshold`): the polyp protocol's uint8 map (min-max normalised), or vessel probabilities."""
    probability = np.asarray(predictor.predict(read_rgb(pair.image), size=image_size(pair.mask)), np.float32)
    raw = (float(probability.max()), float(np.count_nonzero(probability > threshold) / probability.size))
    return (polyp.prediction_map(probability) if task == "polyp" else probability), raw


def _without_thumbnail(score):
    return {key: value for key, value in score.items() if key != "thumbnail"}


def _as_uint8(prediction):
    return prediction if prediction.dtype == np.uint8 else np.rint(np.clip(prediction, 0, 1) * 255).astype(np.uint8)


def score_file(task, threshold, prediction, mask_path, fov_path=None, image_path=None, raw=None):
    """One image's protocol scores (see polyp.score_image / vessel.score_image) plus `empty_gt`, `resized_from`
    (the prediction's size when it differed from the mask's and was resized bilinearly), a `thumbnail` and the
    error analysis' values (tfseg.evaluation.analysis).
    `prediction` is a file (`imageio.read_prediction`: uint8 grey, or float probabilities) or an array: a uint8
    map, or float probabilities in [0, 1] (vessel; polyp scores them as the map p * 255, unrounded).
    `fov_path`: a FOV mask file, or ESTIMATED_FOV to estimate it from `image_path`. `raw`: (maximum, area above
    `threshold`) of the model's raw probabilities, for an empty ground truth (default: of `prediction` itself)."""
    gt = read_mask(mask_path)
    if isinstance(prediction, str):
        prediction = read_prediction(prediction)
    resized_from = None
    if prediction.shape != gt.shape:
        resized_from = prediction.shape
        prediction = cv2.resize(prediction, gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
    if task == "polyp":
        score = {**polyp.score_image(prediction, gt, threshold), **analysis.polyp_image(gt, prediction, threshold, raw)}
    else:
        probability = prediction / np.float32(255) if prediction.dtype == np.uint8 else prediction
        fov = estimate_fov(read_rgb(image_path)) if fov_path == ESTIMATED_FOV else _read_fov(fov_path, gt.shape)
        score = vessel.score_image(probability, gt, fov, threshold)
        regions = {"whole": np.ones_like(gt), **({"fov": fov} if fov is not None else {})}
        score["structure"] = analysis.vessel_image(probability > threshold, gt, regions)
    return {
        **score,
        "empty_gt": not gt.any(),
        "resized_from": resized_from,
        "thumbnail": _thumbnail(_as_uint8(prediction)),
    }


def _read_fov(path, shape):
    if path is None:
        return None
    fov = read_mask(path)
    if fov.shape != shape:
        raise DatasetError(f"FOV mask {path} is {fov.shape[1]}x{fov.shape[0]}, its image {shape[1]}x{shape[0]}")
    return fov


def _thumbnail(picture):
    scale = THUMBNAIL / max(picture.shape[:2])
    if scale >= 1:
        return picture
    size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def _notes(name, pairs, scores, task):
    """What a reader of the results must know: empty ground truths, resized predictions, undefined AUCs."""
    notes = []
    empty = [os.path.basename(p.mask) for p, s in zip(pairs, scores) if s["empty_gt"]]
    if empty:
        handling = (
            "scored by the protocol: Dice, IoU and wFm 0, Sm = 1 - mean(prediction)"
            if task == "polyp"
            else "their per-image Se, F1, IoU and MCC are 0 and their AUC undefined"
        )
        notes.append(f"{name}: {len(empty)} image(s) with empty ground truth ({handling}): {format_names(empty)}")
    resized = [
        f"{os.path.basename(p.mask)} ({s['resized_from'][1]}x{s['resized_from'][0]})"
        for p, s in zip(pairs, scores)
        if s["resized_from"]
    ]
    if resized:
        notes.append(
            f"{name}: {len(resized)} prediction(s) differ in size from their mask and were resized "
            f"bilinearly to it: {format_names(resized)}"
        )
    return notes


def _pick_cases(pairs, scores, task, threshold):
    """The best and worst CASES images by RANKED_BY[task]: [(label, pair, prediction thumbnail)]."""
    key = RANKED_BY[task]
    values = [PROTOCOLS[task].image_row(score, threshold)[key] for score in scores]
    order = np.argsort(values, kind="stable")[::-1]
    chosen = list(order[:CASES]) + [i for i in order[-CASES:] if i not in order[:CASES]]
    return [
        (
            f"{'best' if rank < CASES else 'worst'}: {Path(pairs[i].image).name}\n{key} {values[i]:.3f}",
            pairs[i],
            scores[i]["thumbnail"],
        )
        for rank, i in enumerate(chosen)
    ]


def _plot_cases(name, chosen, task, path):
    """The case grid of `_pick_cases`; an image that cannot be read whole is left out, with a warning naming it."""
    cases = []
    for label, pair, prediction in chosen:
        image = _whole_rgb(pair.image, path)
        if image is not None:
            cases.append(
                (label, _thumbnail(image), _thumbnail(read_mask(pair.mask).astype(np.uint8) * 255), prediction)
            )
    if cases:
        report.plot_cases(cases, path, f"{name}: best and worst {CASES} by {RANKED_BY[task]}")
    else:
        log.warning("%s not written: none of its images could be read", path)


def _whole_rgb(image_path, plot_path):
    """The image, or None (and a warning) when it cannot be read whole: OpenCV would show a truncated JPEG half
    grey."""
    problem = decoded_size(image_path)[1]
    try:
        if problem is None:
            return read_rgb(image_path)
    except DatasetError as error:
        problem = str(error)
    log.warning("%s left out of %s: %s", image_path, os.path.basename(plot_path), problem)
    return None
