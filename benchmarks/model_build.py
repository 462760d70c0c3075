#!/usr/bin/env python
"""Seconds to construct each model and to load it back from a .keras file (what every training start, export,
`load_model` and test pays before any step), median of --repeats in one process.

python benchmarks/model_build.py --repeats 3
"""

import argparse
import functools
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tfseg.models import PraNet  # noqa: E402
from tfseg.models.earnet import EARNet  # noqa: E402
from tfseg.models.hrnet import HRNetOCR  # noqa: E402

MODELS = {
    "pranet_mobilenetv2": lambda: PraNet("mobilenetv2", backbone_weights=None),
    "pranet_resnet50": lambda: PraNet("resnet50", backbone_weights=None),
    "pranet_res2net50": lambda: PraNet("res2net50", backbone_weights=None),
    "hrnet_ocr_small": lambda: HRNetOCR("small", scales=(1.0, 0.5)),
    "earnet_small": lambda: EARNet("small", scales=(1.0, 0.5)),
}


def seconds(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print("| model | construct s | load .keras s |\n|---|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            path = os.path.join(folder, f"{name}.keras")
            construct, load = [], []
            for _ in range(args.repeats):
                elapsed, model = seconds(MODELS[name])
                construct.append(elapsed)
                model.save(path)
                load.append(seconds(functools.partial(keras.models.load_model, path))[0])
            print(f"| {name} | {statistics.median(construct):.2f} | {statistics.median(load):.2f} |", flush=True)


if __name__ == "__main__":
    main()
