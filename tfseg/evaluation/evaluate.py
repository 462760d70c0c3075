"""Evaluation of one dataset or a root of several: predictions from a model (any object with
`predict(image, size)`, e.g. `tfseg.inference.Predictor`) or from a folder of maps, scored by the polyp or the
vessel protocol in worker processes, then tables, CSVs and plots. Needs no TensorFlow itself.
"""

import concurrent.futures
import logging
import multiprocessing
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from tfseg.data.imageio import image_size, read_gray, read_mask, read_rgb, write_png
from tfseg.data.layouts import find_datasets
from tfseg.data.fov import estimate_fov
from tfseg.data.sources import DatasetError, files_by_key, format_names, raise_listing, split_by_file
from tfseg.evaluation import polyp, report, vessel

PROTOCOLS = {"polyp": polyp, "vessel": vessel}
RANKED_BY = {"polyp": "meanDice", "vessel": "F1"}  # the per-image score that picks the best and worst cases
THUMBNAIL = 320  # longest side of the pictures kept for the case grids
CASES = 3  # best and worst cases shown per dataset
ESTIMATED_FOV = "<estimated>"  # in place of a FOV file: estimate the FOV from the image

log = logging.getLogger(__name__)


def evaluate(data_path, output, task="polyp", predictor=None, pred_dir=None, threshold=0.5, save_maps=None,
             observer=1, split_file=None, estimate_fov=False, workers=None, plots=True, progress=True):
    """Scores every dataset under `data_path` and writes results.json, results.csv, per_image.csv and the
    plots to `output`. Give `predictor` (maps predicted here, optionally written to `save_maps`) or `pred_dir`
    (existing maps matched to the masks by stem; `pred_dir/<dataset>` when that folder exists). `split_file`
    (one id a line) restricts a dataset to the images it lists, e.g. Kvasir-SEG's 100 PraNet test ids.
    `estimate_fov` (vessel task): images without a FOV mask get one estimated from the image (threshold and
    erosion, `tfseg.data.vessels.estimate_fov`), so that the FOV metrics exist for STARE and CHASE_DB1 too.

    Returns {"results": {dataset: metrics}, "output": output, "notes": [what the run had to handle]}.
    Raises DatasetError for missing or mismatched files, before any scoring.
    """
    if task not in PROTOCOLS:
        raise ValueError(f"task must be one of {sorted(PROTOCOLS)}, got {task!r}")
    if (predictor is None) == (pred_dir is None):
        raise ValueError("Give exactly one of predictor and pred_dir")
    if pred_dir is not None and save_maps:
        raise ValueError("save_maps writes a model's predictions; with pred_dir the maps exist already")
    datasets = find_datasets(data_path, observer)
    if split_file:
        datasets = [(name, split_by_file(pairs, split_file)[1]) for name, pairs in datasets]
    several = len(datasets) > 1
    predictions = {name: match_predictions(pairs, _prediction_folder(pred_dir, name, several), name)
                   for name, pairs in datasets} if pred_dir is not None else {}
    protocol = PROTOCOLS[task]
    results, rows, curves, notes = {}, [], {}, []
    with _executor(workers, sum(len(pairs) for _, pairs in datasets)) as pool:
        for name, pairs in datasets:
            maps_dir = os.path.join(save_maps, name) if save_maps and several else save_maps
            scores = _score_dataset(pool, name, pairs, task, threshold, predictor, predictions.get(name), maps_dir,
                                    estimate_fov, progress)
            results[name] = {**protocol.summarize(scores, threshold), "n_images": len(scores)}
            notes += _notes(name, pairs, scores, task)
            rows += [{"dataset": name, "image": os.path.basename(pair.mask), "empty_gt": score["empty_gt"],
                      **protocol.image_row(score, threshold)} for pair, score in zip(pairs, scores)]
            curves[name] = protocol.dice_curve(scores)
            if plots:
                os.makedirs(output, exist_ok=True)
                _plot_cases(name, pairs, scores, task, threshold, os.path.join(output, f"cases_{name}.png"))
    for note in notes:
        log.warning(note)
    report.write_results(results, output)
    report.write_per_image(rows, output)
    if plots:
        report.plot_curves(curves, os.path.join(output, report.CURVES_PNG))
    return {"results": results, "output": output, "notes": notes}


def _prediction_folder(pred_dir, name, several):
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
        key = next((k for k in (pair.stem, Path(pair.mask).stem) if k in files), None)
        if key is None:
            missing.append(os.path.basename(pair.mask))
        else:
            matched[pair.stem] = files[key]
    used = set(matched.values())
    extra = [os.path.basename(path) for path in files.values() if path not in used]
    raise_listing(f"The predictions in {folder} do not match the masks of {dataset}:", [
        (missing, "mask(s) without a prediction"), (extra, "prediction(s) without a mask")])
    return matched


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each job at submit time (one worker, or too few images to pay for starting processes)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to the caller through the future, as a pool would
            future.set_exception(error)
        return future


def _executor(workers, n_images):
    workers = os.cpu_count() if workers is None else workers
    if workers <= 1 or n_images < 2 * workers:
        return _InlineExecutor()
    # spawn: the parent may run TensorFlow, whose threads make fork unsafe
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _score_dataset(pool, name, pairs, task, threshold, predictor, prediction_files, maps_dir, estimate_fov,
                   progress):
    with tqdm(total=len(pairs), desc=name, unit="image", disable=not progress, leave=False) as bar:
        futures = []
        for pair in pairs:
            if predictor is None:
                prediction = str(prediction_files[pair.stem])
            else:
                prediction = _predict(predictor, pair, task)
                if maps_dir:
                    write_png(os.path.join(maps_dir, Path(pair.mask).stem + ".png"), _as_uint8(prediction))
            fov = pair.fov or (ESTIMATED_FOV if estimate_fov and task == "vessel" else None)
            future = pool.submit(score_file, task, threshold, prediction, pair.mask, fov, pair.image)
            future.add_done_callback(lambda _: bar.update())
            futures.append(future)
        return [future.result() for future in futures]


def _predict(predictor, pair, task):
    """The map the protocol scores, at the mask's size: the polyp protocol's uint8 map, or vessel probabilities."""
    probability = predictor.predict(read_rgb(pair.image), size=image_size(pair.mask))
    return polyp.prediction_map(probability) if task == "polyp" else np.asarray(probability, np.float32)


def _as_uint8(prediction):
    return prediction if prediction.dtype == np.uint8 else np.rint(np.clip(prediction, 0, 1) * 255).astype(np.uint8)


def score_file(task, threshold, prediction, mask_path, fov_path=None, image_path=None):
    """One image's protocol scores (see polyp.score_image / vessel.score_image) plus `empty_gt`, `resized_from`
    (the prediction's size when it differed from the mask's and was resized bilinearly) and a `thumbnail`.
    `prediction` is a file (read as uint8 grey) or an array: a uint8 map, or float probabilities (vessel).
    `fov_path`: a FOV mask file, or ESTIMATED_FOV to estimate it from `image_path`."""
    gt = read_mask(mask_path)
    if isinstance(prediction, str):
        prediction = read_gray(prediction)
    resized_from = None
    if prediction.shape != gt.shape:
        resized_from = prediction.shape
        prediction = cv2.resize(prediction, gt.shape[::-1], interpolation=cv2.INTER_LINEAR)
    if task == "polyp":
        score = polyp.score_image(prediction, gt, threshold)
    else:
        probability = prediction / np.float32(255) if prediction.dtype == np.uint8 else prediction
        fov = estimate_fov(read_rgb(image_path)) if fov_path == ESTIMATED_FOV else _read_fov(fov_path, gt.shape)
        score = vessel.score_image(probability, gt, fov, threshold)
    return {**score, "empty_gt": not gt.any(), "resized_from": resized_from, "thumbnail": _thumbnail(
        _as_uint8(prediction))}


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
        handling = ("scored by the protocol: Dice, IoU and wFm 0, Sm = 1 - mean(prediction)" if task == "polyp"
                    else "their per-image Se, F1, IoU and MCC are 0 and their AUC undefined")
        notes.append(f"{name}: {len(empty)} image(s) with empty ground truth ({handling}): {format_names(empty)}")
    resized = [f"{os.path.basename(p.mask)} ({s['resized_from'][1]}x{s['resized_from'][0]})"
               for p, s in zip(pairs, scores) if s["resized_from"]]
    if resized:
        notes.append(f"{name}: {len(resized)} prediction(s) differ in size from their mask and were resized "
                     f"bilinearly to it: {format_names(resized)}")
    return notes


def _plot_cases(name, pairs, scores, task, threshold, path):
    key = RANKED_BY[task]
    values = [PROTOCOLS[task].image_row(score, threshold)[key] for score in scores]
    order = np.argsort(values, kind="stable")[::-1]
    chosen = list(order[:CASES]) + [i for i in order[-CASES:] if i not in order[:CASES]]
    cases = []
    for rank, index in enumerate(chosen):
        pair = pairs[index]
        label = f"{'best' if rank < CASES else 'worst'}: {Path(pair.image).name}\n{key} {values[index]:.3f}"
        image = _thumbnail(read_rgb(pair.image))
        gt = _thumbnail(read_mask(pair.mask).astype(np.uint8) * 255)
        cases.append((label, image, gt, scores[index]["thumbnail"]))
    report.plot_cases(cases, path, f"{name}: best and worst {CASES} by {key}")
