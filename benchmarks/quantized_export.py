#!/usr/bin/env python
"""Batch-1 latency of every export format, float and quantised, and the Dice change of each quantised file, on
exports made by tfseg.export (with its Dice check). Prints a markdown table.

    # latency: random-weight PraNets at 352 (their Dice means nothing: --max_dice_drop 1)
    python benchmarks/quantized_export.py --backbones mobilenetv2 resnet50 --calibration CAL --validation VAL \\
        --max_dice_drop 1 --runs 30
    # a trained model: the latency and the Dice change on its validation images
    python benchmarks/quantized_export.py --model runs/X/export/model.keras --calibration CAL --validation VAL
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402

from tfseg.export import FORMATS, export_model  # noqa: E402
from tfseg.files import read_metadata  # noqa: E402
from tfseg.inference.predictor import EXPORT_FILES, load_keras_model, load_runtime  # noqa: E402
from tfseg.inference.runtimes import interleaved_times  # noqa: E402
from tfseg.models import PraNet  # noqa: E402
from tfseg.quantization import QUANTIZED, QuantizationSettings  # noqa: E402


def latencies(runtimes, x, runs, warmup=5):
    """{name: (median ms, p90 ms)}, the runtimes' calls interleaved."""
    times = interleaved_times(runtimes, x, runs, warmup)
    return {name: (float(np.median(t)), float(np.percentile(t, 90))) for name, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50"])
    p.add_argument("--model", help="a .keras file (instead of random-weight PraNets on --backbones)")
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--formats", nargs="+", default=list(FORMATS))
    p.add_argument("--calibration", required=True)
    p.add_argument("--validation", required=True)
    p.add_argument("--calibration_images", type=int, default=100)
    p.add_argument("--max_dice_drop", type=float, default=0.01)
    args = p.parse_args()
    models = [args.model] if args.model else args.backbones
    settings = QuantizationSettings(
        args.calibration, args.validation, max_dice_drop=args.max_dice_drop, calibration_images=args.calibration_images
    )
    x = np.random.default_rng(0).normal(size=(1, args.size, args.size, 3)).astype("float32")
    print(
        "| model | format | median ms | p90 ms | speed-up vs float | meanDice change | dice@0.5 change | load |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for name in models:
        model = load_keras_model(Path(name)) if args.model else PraNet(name, backbone_weights=None)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            export_model(model, folder, args.formats, args.size, quantization_settings=settings)
            exported = time.perf_counter() - start
            metadata = read_metadata(os.path.join(folder, "tfseg.json"))
            runtimes = {
                f: load_runtime(os.path.join(folder, EXPORT_FILES[f]), metadata=metadata)[0] for f in args.formats
            }
            load = os.getloadavg()[0]
            timed = latencies(runtimes, x, args.runs)
            for f, (median, p90) in timed.items():
                check = metadata.get("quantization", {}).get(f)
                cells = ["", "", ""]
                if check:
                    reference = timed[QUANTIZED[f]][0]
                    cells = [
                        f"{reference / median:.2f}x",
                        *(f"{check['change'][k]:+.4f}" for k in ("meanDice", "dice@0.5")),
                    ]
                print(
                    f"| {os.path.basename(name)} | {f} | {median:.1f} | {p90:.1f} | {' | '.join(cells)} | {load:.2f} |",
                    flush=True,
                )
            print(f"<!-- {name}: export with checks {exported:.0f} s; at export: {metadata['timing']['median_ms']} -->")


if __name__ == "__main__":
    main()
