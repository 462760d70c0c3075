#!/usr/bin/env python
"""Batch-1 latency of PraNet at 352x352 in every runtime (Keras tf.function, SavedModel, ONNX Runtime, TFLite),
on exports made by tfseg.export (random weights: speed does not depend on them). Prints a markdown table.

    python benchmarks/inference_latency.py --backbones mobilenetv2 resnet50 --runs 50
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

from tfseg.export import export_model  # noqa: E402
from tfseg.files import read_metadata  # noqa: E402
from tfseg.inference.predictor import EXPORT_FILES, load_runtime  # noqa: E402
from tfseg.models import PraNet  # noqa: E402


def median_ms(function, x, runs, warmup=5):
    for _ in range(warmup):
        function(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function(x)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 90))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50"])
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--runtimes", nargs="+", default=["keras", "savedmodel", "onnx", "tflite"])
    args = p.parse_args()
    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype("float32")
    print("| backbone | runtime | median ms | p90 ms | load average (1 min) before |\n|---|---|---:|---:|---:|")
    for backbone in args.backbones:
        with tempfile.TemporaryDirectory() as folder:
            export_model(PraNet(backbone, backbone_weights=None), folder, args.runtimes, args.size)
            for name in args.runtimes:
                path = os.path.join(folder, EXPORT_FILES[name])
                runtime, _ = load_runtime(path, metadata=read_metadata(path))
                load = os.getloadavg()[0]
                median, p90 = median_ms(runtime, x, args.runs)
                print(f"| {backbone} | {name} | {median:.1f} | {p90:.1f} | {load:.2f} |", flush=True)


if __name__ == "__main__":
    main()
