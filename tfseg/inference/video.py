"""`segment_video`: a Predictor over a video file or camera -> an overlaid video and a JSON-able report.

Three stages run concurrently, so the end-to-end rate approaches the model's: a reader thread decodes frames
(OpenCV gives BGR; converted to RGB for the model) and prepares batches, model workers (the calling thread, and a
second one where it pays) run the model, a writer thread turns logits into probabilities (in the frames' order),
draws the overlay and HUD, encodes and (with `show`) displays.

Two model workers, each with a runtime of its own on half the cores, keep the cores busier than one runtime on all
of them, whose threads wait for each other at every layer while the reader and writer take a core: on 2 cores,
PraNet-MobileNetV2 int8 at 352, 1.17-1.39x the frames per second (docs/BENCHMARKS.md, "Two model workers").

Both OpenCV handles are released on every exit, errors and Ctrl-C included. The video is written under a temporary
name and moved into place once finalised, so a failure or a kill never leaves a half-written file at `output` (nor
destroys a file that was there).

A file is segmented frame by frame, every frame, however long the model takes. Live (a camera, or `live=True`: a
file read at its frame rate as a camera delivers it), the model takes the newest frame and the frames it cannot
keep up with are skipped, so the overlay stays current instead of falling further behind; the output video holds
each overlay until the next, so it keeps the source's timing and shows what a viewer saw.
"""

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from tfseg import files
from tfseg.inference.overlay import binary_mask, draw_hud, draw_overlay
from tfseg.inference.runtimes import cpu_threads

log = logging.getLogger(__name__)
# H.264 first; OpenCV's pip wheels cannot encode it and say so only through isOpened()
CODECS = {
    ".mp4": ("avc1", "mp4v"),
    ".m4v": ("avc1", "mp4v"),
    ".mov": ("avc1", "mp4v"),
    ".avi": ("MJPG", "XVID"),
    ".mkv": ("avc1", "MJPG"),
}
END = object()  # marks the end of a queue's stream


class VideoError(OSError):
    """A video source or output that cannot be used."""


def open_capture(source):
    """cv2.VideoCapture of a file path or a camera index (an int, or a string of digits)."""
    if is_camera(source):
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise VideoError(f"Camera {source} is not available")
        return capture
    if not os.path.isfile(source):
        raise FileNotFoundError(f"Video not found: {source}")
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"Cannot read video {source}: not a video OpenCV can decode, or a corrupt file")
    return capture


def is_camera(source):
    return isinstance(source, int) or str(source).isdigit()


def check_writable(path):
    """Creates the folder of the file `path` and checks that it can be written (VideoError if not)."""
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VideoError(f"Cannot create the output folder {folder}: {error}") from None
    if not os.access(folder, os.W_OK):
        raise VideoError(f"The output folder {folder} is not writable")


def check_extension(path):
    """The codecs to try for the output's extension (VideoError for an unsupported one)."""
    codecs = CODECS.get(Path(path).suffix.lower())
    if codecs is None:
        raise VideoError(f"Unsupported output extension {Path(path).suffix!r}: use one of {', '.join(CODECS)}")
    return codecs


def open_writer(path, fps, size, name=None):
    """(cv2.VideoWriter, codec): the first codec of the extension's list whose writer opens (`name`: the path
    to mention in errors)."""
    codecs = check_extension(path)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a failed codec is expected, not news
    try:
        for codec in codecs:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
            if writer.isOpened():
                return writer, codec
            writer.release()
    finally:
        cv2.utils.logging.setLogLevel(level)
    raise VideoError(f"No codec could write {name or path} (tried {', '.join(codecs)})")


def display_available():
    """Whether a window can open: a display exists and this OpenCV build has a GUI (not the headless wheel)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("tfseg")
    except cv2.error:
        return False
    return True


class Worker(threading.Thread):
    """A daemon thread whose exception is kept for the caller to re-raise."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self.target, self.error = target, None

    def run(self):
        try:
            self.target()
        except BaseException as error:  # handed to the calling thread
            self.error = error


def hand_over(items, item, consumer):
    """`items.put(item)`, giving up when the `consumer` thread has died (nobody would take it)."""
    while consumer.is_alive():
        try:
            return items.put(item, timeout=0.1)
        except queue.Full:
            continue


class NewestFrame:
    """The live hand-over from reader to model: `put` never waits, it replaces a batch not yet taken (its frames
    counted in `skipped`); `get` waits for one. queue.Queue's interface, as far as the pipeline uses it."""

    def __init__(self):
        self._item, self._ready, self.skipped = None, threading.Condition(), 0

    def put(self, item, timeout=None):
        with self._ready:
            if self._item is not None:
                self.skipped += len(self._item[0])
            self._item = item
            self._ready.notify()

    def get(self, timeout=None):
        with self._ready:
            if not self._ready.wait_for(lambda: self._item is not None, timeout):
                raise queue.Empty
            item, self._item = self._item, None
            return item

    def get_nowait(self):
        return self.get(timeout=0)


def read_batches(capture, predictor, batch_size, batches, stop, counts, max_frames=None, frame_seconds=None, ends=1):
    """Reader thread: batches of up to `batch_size` RGB frames (fewer only at the end) with the model input
    prepared from them, the index of their last frame and the time it was read, into `batches` until the stream
    ends, `max_frames` or `stop`; then `ends` ENDs (one for each model worker). `frame_seconds`: read frame i no
    earlier than i * frame_seconds after the start (a file played as a camera delivers it)."""
    try:
        ended, start = False, time.perf_counter()
        while not ended and not stop.is_set():
            frames = []
            while len(frames) < batch_size and (max_frames is None or counts["in"] < max_frames):
                if frame_seconds:
                    time.sleep(max(0.0, start + counts["in"] * frame_seconds - time.perf_counter()))
                ok, bgr = capture.read()
                if not ok:
                    break
                counts["in"] += 1
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            ended = len(frames) < batch_size
            if frames:
                item = (frames, predictor.prepare(np.stack(frames)), counts["in"] - 1, time.perf_counter())
                while not stop.is_set():
                    try:
                        batches.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
    finally:
        for _ in range(ends):
            batches.put(END)


class Writer:
    """Writer thread: probabilities from logits (+ smoothing), overlay + HUD, encode (+ display), batch after
    batch in the order the model workers took them (they may finish out of order). Live, a frame that follows
    skipped ones is preceded by its predecessor's overlay once per skipped frame (what a viewer saw meanwhile), and
    `finish_live` holds the last overlay to the stream's end: the video keeps the source's timing."""

    def __init__(self, video_writer, predictor, threshold, smooth, show):
        self.video_writer, self.predictor, self.threshold, self.smooth, self.show = (
            video_writer,
            predictor,
            threshold,
            smooth,
            show,
        )
        self.items, self.recent, self.smoothed = queue.Queue(maxsize=4), deque(maxlen=30), None
        self.written, self.segmented, self.latencies, self.last_index, self.last_bgr = 0, 0, [], -1, None

    def run(self):
        waiting, number = {}, 0  # batches done before an earlier one, by their number
        while (item := self.items.get()) is not END:
            waiting[item[0]] = item[1:]
            while number in waiting:
                self.write_batch(*waiting.pop(number))
                number += 1

    def write_batch(self, frames, logits, model_ms, last_index, read_at):
        probabilities = self.predictor.finish(logits, frames[0].shape[:2], len(frames))
        indices = range(last_index - len(frames) + 1, last_index + 1)
        for index, frame, probability in zip(indices, frames, probabilities):
            if self.smooth:
                self.smoothed = (
                    probability
                    if self.smoothed is None
                    else self.smooth * self.smoothed + (1 - self.smooth) * probability
                )
                probability = self.smoothed
            first = self.last_bgr is None
            if not first:
                self.hold_last_overlay(index - self.last_index - 1)
            self.write(frame, probability, model_ms)
            if first:  # frames skipped before the first overlay: it stands for them
                self.hold_last_overlay(index)
            self.last_index = index
        self.latencies.append(time.perf_counter() - read_at)

    def hold_last_overlay(self, frames):
        for _ in range(frames):
            self.video_writer.write(self.last_bgr)
            self.written += 1

    def finish_live(self, frames_in):
        if self.last_bgr is not None:
            self.hold_last_overlay(frames_in - self.last_index - 1)

    def write(self, frame, probability, model_ms):
        self.recent.append(time.perf_counter())
        fps = (len(self.recent) - 1) / max(self.recent[-1] - self.recent[0], 1e-9) if len(self.recent) > 1 else 0
        out = draw_overlay(frame, binary_mask(probability, self.threshold))
        draw_hud(out, f"{fps:5.1f} FPS  model {model_ms:5.1f} ms  {self.predictor.runtime.name}")
        self.last_bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
        self.video_writer.write(self.last_bgr)
        self.written += 1
        self.segmented += 1
        if self.show:
            cv2.imshow("tfseg", self.last_bgr)
            cv2.waitKey(1)


def segment_video(
    predictor,
    source,
    output,
    threshold=0.5,
    batch_size=1,
    smooth=0.0,
    show=False,
    tta=None,
    max_frames=None,
    live=None,
    model_workers=None,
):
    """Overlays `predictor`'s masks on the frames of `source` (a file or a camera index) into `output`.

    `smooth` in [0, 1): exponential smoothing of the probabilities over time, p_t <- smooth * p_(t-1) +
    (1 - smooth) * p_t (0: off). `live` (default: for a camera): segment the newest frame, skipping those the
    model cannot keep up with (a file is then read at its frame rate); one frame per batch. `model_workers`:
    runtimes run in parallel (default: `model_predictors`). Returns the report: frames_in, frames_out
    (written), frames_segmented, frames_skipped, model_workers, model_threads (each worker's), model_ms_mean/p95
    (a worker's time in the runtime per frame, batch time / batch size), model_fps (what the workers together
    segment per second at that time), e2e_fps (frames segmented / wall time), latency_ms_mean/p95 (read to
    written), runtime, ...
    """
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    live = is_camera(source) if live is None else live
    if live and batch_size != 1:
        raise ValueError(f"live video segments the newest frame, one at a time: batch size 1, not {batch_size}")
    if not is_camera(source):
        files.refuse_overwrite([output], [source])
    check_extension(output)
    check_writable(output)
    predictors = model_predictors(predictor, live, model_workers)  # the replicas once the output can be written
    capture = open_capture(source)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if show and not display_available():
            log.warning("No display (or a headless OpenCV): frames are written, not shown")
            show = False
        with files.atomic_path(output) as temporary:
            video_writer, codec = open_writer(temporary, fps, size, name=output)
            try:
                return _run_pipeline(
                    predictors,
                    capture,
                    video_writer,
                    threshold,
                    batch_size,
                    smooth,
                    show,
                    tta,
                    max_frames,
                    # a file played live is read at its frame rate; a camera delivers frames at its own
                    1.0 / fps if live and not is_camera(source) else None,
                    live,
                    {"input": str(source), "output": str(output), "codec": codec, "fps": fps, "size": list(size)},
                )
            finally:
                video_writer.release()  # finalised before it is moved into place
    finally:
        capture.release()
        if show:
            cv2.destroyAllWindows()


def model_predictors(predictor, live, workers=None):
    """The predictors of the model workers: `predictor` alone, or `workers` replicas of it, each with a runtime of
    its own on cpu_threads() // workers threads. Default: two for a file on a CPU of 2 threads or more when the
    runtime can be opened twice (TFLite, ONNX Runtime); one live (the newest frame goes to the model at once) or
    for the TensorFlow runtimes. ValueError where more than one cannot run."""
    replicable = hasattr(predictor.runtime, "with_threads")
    if workers is None:
        workers = 2 if not live and replicable and cpu_threads() >= 2 else 1
    if workers < 1:
        raise ValueError(f"model workers must be 1 or more, not {workers}")
    if workers == 1:
        return [predictor]
    if live:
        raise ValueError(f"live video segments the newest frame, one at a time: one model worker, not {workers}")
    if not replicable:
        raise ValueError(
            f"the {predictor.runtime.name} runtime runs in one model worker (TensorFlow's calls share its thread "
            "pool); several workers run TFLite and ONNX files"
        )
    threads = max(1, cpu_threads() // workers)
    return [predictor.replica(threads) for _ in range(workers)]


def run_model(predictor, take, writer, writer_thread, tta, model_ms):
    """A model worker: logits of the batches it takes, handed to the writer with the batch's number; the time
    per frame in the runtime appended to `model_ms`."""
    while (taken := take()) is not None:
        number, (frames, x, last_index, read_at) = taken
        logits = predictor.logits(x, tta)
        frame_ms = 1e3 * predictor.model_seconds / len(frames)
        model_ms.extend([frame_ms] * len(frames))
        hand_over(writer.items, (number, frames, logits, frame_ms, last_index, read_at), writer_thread)


def _run_pipeline(
    predictors, capture, video_writer, threshold, batch_size, smooth, show, tta, max_frames, frame_seconds, live, report
):
    predictor = predictors[0]
    batches, stop, counts = NewestFrame() if live else queue.Queue(maxsize=4), threading.Event(), {"in": 0}
    writer = Writer(video_writer, predictor, threshold, smooth, show)
    reader = Worker(
        lambda: read_batches(
            capture, predictor, batch_size, batches, stop, counts, max_frames, frame_seconds, len(predictors)
        ),
        "video-reader",
    )
    writer_thread = Worker(writer.run, "video-writer")
    numbers, taking = itertools.count(), threading.Lock()

    def take():
        """The next batch and its number, in the order read; None at the end, when stopped or the writer died."""
        with taking:
            if stop.is_set() or not writer_thread.is_alive():
                return None
            item = batches.get()
            return None if item is END else (next(numbers), item)

    def run_other_model(predictor):
        try:
            run_model(predictor, take, writer, writer_thread, tta, model_ms)
        except BaseException:
            stop.set()  # the batch it took will not come: the writer could write no further
            raise

    model_ms, interrupted = [], False
    workers = [Worker(lambda p=p: run_other_model(p), f"video-model-{i}") for i, p in enumerate(predictors[1:], 1)]
    start = time.perf_counter()
    reader.start()
    writer_thread.start()
    for worker in workers:
        worker.start()
    try:
        run_model(predictor, take, writer, writer_thread, tta, model_ms)  # Ctrl-C reaches this thread
    except KeyboardInterrupt:
        interrupted = True
        log.warning("Interrupted: finishing the frames already predicted")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        hand_over(writer.items, END, writer_thread)
        writer_thread.join()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                reader.join(0.05)
    for worker in (*workers, writer_thread, reader):
        if worker.error is not None:
            raise worker.error
    if live and not interrupted:
        writer.finish_live(counts["in"])
    wall = time.perf_counter() - start
    mean = float(np.mean(model_ms)) if model_ms else float("nan")
    latency_ms = 1e3 * np.array(writer.latencies)
    return {
        **report,
        "live": live,
        "frames_in": counts["in"],
        "frames_out": writer.written,
        "frames_segmented": writer.segmented,
        "frames_skipped": batches.skipped if live else 0,
        "model_workers": len(predictors),
        "model_threads": getattr(predictor.runtime, "threads", None),
        "model_ms_mean": round(mean, 2),
        "model_ms_p95": round(float(np.percentile(model_ms, 95)), 2) if model_ms else float("nan"),
        "model_fps": round(len(predictors) * 1e3 / mean, 2) if model_ms else 0.0,
        "e2e_fps": round(writer.segmented / wall, 2),
        "latency_ms_mean": round(float(latency_ms.mean()), 2) if len(latency_ms) else float("nan"),
        "latency_ms_p95": round(float(np.percentile(latency_ms, 95)), 2) if len(latency_ms) else float("nan"),
        "wall_s": round(wall, 2),
        "runtime": predictor.runtime.name,
        "batch_size": batch_size,
        "threshold": threshold,
        "smooth": smooth,
        "tta": bool(predictor.tta if tta is None else tta),
        "interrupted": interrupted,
    }
