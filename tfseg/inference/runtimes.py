"""Runtimes: an exported model as `runtime(x) -> logits`, float32 normalised (B, h, w, 3) -> the prediction
map's logits (B, h, w, C) as numpy.

`KerasRuntime` (.keras / .weights.h5, a tf.function in inference mode), `SavedModelRuntime` (its `serve`
endpoint), `OnnxRuntime` (onnxruntime) and `TFLiteRuntime` (LiteRT with XNNPACK, else tf.lite); the quantised
files (tfseg.quantization) run in the last two. `input_size` is the (h, w) an ONNX/TFLite file was exported for,
or None when any size runs. `median_latencies` times runtimes; `machine` says what they were timed on.
"""

import importlib.util
import os
import platform
import time

import numpy as np
import tensorflow as tf

# The order an export folder's runtimes are tried in when none can be timed (pick_export): fastest first on CPUs
# (docs/BENCHMARKS.md, "Inference" and "Quantised exports"); GPUs favour TensorFlow (SavedModel)
CPU_PREFERENCE = ("tflite_int8", "onnx_int8", "tflite_fp16", "tflite", "onnx", "savedmodel", "keras")
GPU_PREFERENCE = ("savedmodel", "onnx", "tflite", "onnx_int8", "tflite_int8", "tflite_fp16", "keras")


def cpu_threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# The CPU features that change which format is fastest: int8 dot products (VNNI) made int8 3.6x float32 on a
# host with them and 1.9x on one without, both reporting "AMD EPYC" (docs/BENCHMARKS.md, "infer_video")
TIMING_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def _cpuinfo(key):
    """The values of `key` in /proc/cpuinfo (Linux), [] elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return [line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == key]
    except OSError:
        return []


def cpu_model():
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    names = _cpuinfo("model name")
    return names[0] if names else platform.processor() or platform.machine()


def machine():
    """What a latency depends on besides the model: the CPU model and its vector features (TIMING_CPU_FLAGS; a
    virtual machine's model name can hide them), the threads the runtimes use, the GPUs TensorFlow sees. Two
    timings compare when these are equal."""
    gpus = tf.config.list_physical_devices("GPU")
    flags = set(next(iter(_cpuinfo("flags")), "").split())
    return {
        "cpu": cpu_model(),
        "cpu_flags": [flag for flag in TIMING_CPU_FLAGS if flag in flags],
        "threads": cpu_threads(),
        "gpus": [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus],
    }


def importable(name):
    """Whether the runtime of the format `name` can run here (ONNX files need onnxruntime)."""
    return not name.startswith("onnx") or importlib.util.find_spec("onnxruntime") is not None


# before its timed calls in a round, each runtime runs untimed SETTLE_CALLS times or SETTLE_S seconds, whichever
# ends first (right after another runtime's call, a TFLite file ran 2x slower, and at its own speed again after 8)
SETTLE_CALLS, SETTLE_S = 8, 0.1


def interleaved_times(runtimes, x, runs, warmup, budget_s=None, min_runs=3, rounds=2):
    """{name: [milliseconds of each timed call]} of each runtime of {name: runtime} on the batch `x`, in `rounds`
    rounds (a change in the machine's load reaches every runtime): in each, every runtime in turn first runs
    untimed (`warmup` calls in the first round, one later, and SETTLE_CALLS calls or SETTLE_S seconds), then makes
    its share of `runs` timed calls. Untimed first, because a runtime called right after another ran up to 2x
    slower until it had run a few times (TFLite after ONNX Runtime, in one process; docs/BENCHMARKS.md): timed
    call by call in turn, both looked twice as slow as alone. Once `budget_s` seconds have passed, a runtime with
    `min_runs` timed calls makes no more."""
    times = {name: [] for name in runtimes}
    share = -(-runs // rounds)
    started = time.perf_counter()
    over_budget = lambda: budget_s is not None and time.perf_counter() - started > budget_s
    for round_number in range(rounds):
        for name, runtime in runtimes.items():
            if len(times[name]) >= runs or (over_budget() and len(times[name]) >= min_runs):
                continue
            settle_start, calls = time.perf_counter(), 0
            while calls < (warmup if round_number == 0 else 1) or (
                calls < SETTLE_CALLS and time.perf_counter() - settle_start < SETTLE_S
            ):
                runtime(x)
                calls += 1
            for _ in range(share):
                if len(times[name]) >= runs or (over_budget() and len(times[name]) >= min_runs):
                    break
                start = time.perf_counter()
                runtime(x)
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


def median_latencies(runtimes, input_size, runs=10, warmup=3, budget_s=5.0):
    """{name: median milliseconds} of `interleaved_times` on one random (1, h, w, 3) batch: 10 timed calls for a
    model of ~0.1 s a call, 3 for one of seconds (an HRNet-W48 at a fundus image's size)."""
    x = np.random.default_rng(0).normal(size=(1, *input_size, 3)).astype("float32")
    times = interleaved_times(runtimes, x, runs, warmup, budget_s)
    return {name: round(float(np.median(t)), 2) for name, t in times.items()}


STATIC_SIZES = 4  # KerasRuntime: input sizes traced with static shapes


class KerasRuntime:
    """The Keras model under tf.function. `fixed_size` (a model run at one training size, as PraNet): one trace
    per input height and width (up to STATIC_SIZES of them), so that the model sees static sizes and its resizes
    run as native ops (tfseg.models.blocks.resize_bilinear; PraNet-ResNet50 at 352 x 352, batch 1: ~7 % faster
    than with the gathers of dynamic sizes, docs/BENCHMARKS.md); otherwise one trace for every size (EAR-Net:
    images of any size)."""

    name = "keras"
    input_size = None

    def __init__(self, model, prediction_output, fixed_size=False):
        self.model = model
        self._logits = lambda x: model(x, training=False)[prediction_output]
        self._functions = {}  # {(height, width) or None: tf.function}
        self._fixed_size = fixed_size

    def __call__(self, x):
        size = tuple(x.shape[1:3]) if self._fixed_size else None
        if size not in self._functions and len(self._functions) >= STATIC_SIZES:
            size = None  # called at many sizes after all: one trace for the rest
        if size not in self._functions:
            height, width = size or (None, None)
            self._functions[size] = tf.function(
                self._logits, input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)]
            )
        return self._functions[size](x).numpy()


class SavedModelRuntime:
    name = "savedmodel"
    input_size = None

    def __init__(self, path, prediction_output):
        self.model = tf.saved_model.load(str(path))
        # `serve_prediction` computes the prediction map alone; exports before it only have `serve` (all maps)
        self._logits = getattr(self.model, "serve_prediction", None) or (
            lambda x: self.model.serve(x)[prediction_output]
        )

    def __call__(self, x):
        return self._logits(tf.constant(x)).numpy()


def static_size(shape):
    """(h, w) of an NHWC input shape when both are fixed, else None."""
    height, width = shape[1], shape[2]
    return (
        (int(height), int(width))
        if isinstance(height, (int, np.integer)) and height > 0 and isinstance(width, (int, np.integer)) and width > 0
        else None
    )


class FileRuntime:
    """A runtime over a model file, with its own threads: `with_threads` opens the file again, so that two video
    model workers each run a runtime of their own (tfseg.inference.video)."""

    def with_threads(self, threads):
        """Another runtime of the same file with `threads` threads (and the same name)."""
        runtime = type(self)(self.path, threads)
        runtime.name = self.name
        return runtime


class OnnxRuntime(FileRuntime):
    name = "onnx"

    def __init__(self, path, threads=None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise ImportError("Running .onnx files needs onnxruntime: pip install -r requirements.txt") from error
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path, self.threads = path, threads or cpu_threads()
        options.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        model_input = self.session.get_inputs()[0]
        self.input_name, self.input_size = model_input.name, static_size(model_input.shape)
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def __call__(self, x):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


def tflite_interpreter(path, threads):
    """LiteRT's interpreter (ai-edge-litert), else TensorFlow's deprecated tf.lite one; XNNPACK either way."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=threads)


class TFLiteRuntime(FileRuntime):
    name = "tflite"

    def __init__(self, path, threads=None):
        self.path, self.threads = path, threads or cpu_threads()
        self.interpreter = tflite_interpreter(path, self.threads)
        model_input = self.interpreter.get_input_details()[0]
        self.input_index, self.input_size = model_input["index"], static_size(model_input["shape_signature"])
        self.output_index = self.interpreter.get_output_details()[0]["index"]  # exported with one output
        self.interpreter.allocate_tensors()

    def __call__(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if tuple(self.interpreter.get_input_details()[0]["shape"]) != x.shape:  # another batch (or size)
            self.interpreter.resize_tensor_input(self.input_index, x.shape)
            self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()  # the buffer is reused by the next call
