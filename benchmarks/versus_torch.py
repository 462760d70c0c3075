#!/usr/bin/env python
"""tfseg against the PyTorch PraNet reference (tests/torch_pranet.py: the original's layers, channels_last) and,
with --earlier_port, the earlier TF port, in one process, the calls interleaved in rounds (one block of calls of
each contender in turn), so that a change in the machine's load hits all alike: batch-1 and batch-8 forward latency
of every export format, and training img/s with the first step's time. Random weights (speed does not depend on
them); needs torch. Prints markdown tables.

    python benchmarks/versus_torch.py inference --backbones resnet50 res2net50 --calibration CAL --validation VAL
    python benchmarks/versus_torch.py inference --backbones resnet50 mobilenetv2 --earlier_port PORT
    python benchmarks/versus_torch.py training --backbones resnet50 res2net50 --batch_size 4 --steps 8

PORT: a checkout of github.com/Thehunk1206/PRANet-Polyps-Segmentation (PraNet in TF 2 / tf.keras 2, ResNet50 and
MobileNetV2 backbones), run as it is from that folder under two shims for Keras 3 (see `earlier_port_model`).
"""

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.torch_pranet


def import_libraries():
    """torch, then TensorFlow and tfseg, as globals, once the arguments are parsed (--help needs neither). torch
    first: `torch.optim` imports torch._dynamo and with it triton, whose import crashes (SIGSEGV) in a process that
    has loaded TensorFlow."""
    global torch, F
    import torch
    import torch._dynamo  # noqa: F401
    import torch.nn.functional as F

    global np, tf, torch_pranet, export_model, read_metadata, EXPORT_FILES, load_runtime, PraNet
    global QUANTIZED, QuantizationError, QuantizationSettings, PraNetConfig, make_strategy, PraNetTrainer
    import numpy as np
    import tensorflow as tf

    from tests import torch_pranet
    from tfseg.export import export_model
    from tfseg.files import read_metadata
    from tfseg.inference.predictor import EXPORT_FILES, load_runtime
    from tfseg.models import PraNet
    from tfseg.quantization import QUANTIZED, QuantizationError, QuantizationSettings
    from tfseg.training import PraNetConfig, make_strategy
    from tfseg.training.pranet import PraNetTrainer


TORCH_BACKBONES = ("resnet50", "res2net50")  # tests/torch_pranet.py's
EARLIER_PORT_BACKBONES = ("resnet50", "mobilenetv2")
TORCH = "PyTorch (channels_last)"
EARLIER_PORT = "earlier TF port"


def rounds(contenders, rounds_, block, warmup):
    """{name: [seconds of each call]}: `warmup` calls each, then `rounds_` rounds of `block` calls of each in turn."""
    for call in contenders.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in contenders}
    for _ in range(rounds_):
        for name, call in contenders.items():
            for _ in range(block):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times


def earlier_port_model(path, backbone, size):
    """The earlier TF port's PRAnet and its loss (WBCEDICELoss) from the checkout at `path`, its code unchanged,
    under two shims: Keras 3 has no `layers.experimental.preprocessing` (the port's `Resizing` is now
    `keras.layers.Resizing`), and its backbones are built with weights=None (the port asks for ImageNet weights,
    which cannot be downloaded offline)."""
    import types

    import keras

    experimental = types.ModuleType("tensorflow.keras.layers.experimental")
    experimental.preprocessing = keras.layers
    sys.modules["tensorflow.keras.layers.experimental"] = experimental
    if os.path.abspath(path) not in sys.path:
        sys.path.insert(0, os.path.abspath(path))
    from model import backbone as port_backbone
    from model.PRA_net import PRAnet
    from utils.losses import WBCEDICELoss

    port_backbone.ResNet50 = functools.partial(keras.applications.ResNet50, weights=None)
    port_backbone.MobileNetV2 = functools.partial(keras.applications.MobileNetV2, weights=None)
    return PRAnet(IMG_H=size, IMG_W=size, backbone_arch=backbone), WBCEDICELoss(name="w_bce_dice_loss")


def final_map(port_model):
    """The port's forward pass under tf.function, giving its final map (s2) as tfseg's runtimes give theirs."""
    return tf.function(lambda x: port_model(x, training=False)[-1])


def torch_model(backbone, train):
    model = torch_pranet.randomize(torch_pranet.PraNet(backbone=backbone)).to(memory_format=torch.channels_last)
    return model.train(train)


def torch_input(x):
    """NHWC numpy -> NCHW tensor in channels_last memory (a view: no copy)."""
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def inference(args):
    settings = QuantizationSettings(args.calibration, args.validation, max_dice_drop=1.0, calibration_images=20)
    quantized = any(f in QUANTIZED for f in args.formats)
    for backbone in args.backbones:
        with tempfile.TemporaryDirectory() as folder:
            model = PraNet(backbone, backbone_weights=None, input_size=args.size)
            export_model(model, folder, args.formats, args.size, quantization_settings=settings if quantized else None)
            metadata = read_metadata(os.path.join(folder, "tfseg.json"))
            runtimes = {
                f: load_runtime(os.path.join(folder, EXPORT_FILES[f]), metadata=metadata)[0] for f in args.formats
            }
            reference = torch_model(backbone, train=False) if backbone in TORCH_BACKBONES else None
            port = None
            if args.earlier_port and backbone in EARLIER_PORT_BACKBONES:
                port = final_map(earlier_port_model(args.earlier_port, backbone, args.size)[0])
            for batch in args.batches:
                batched = {name: r for name, r in runtimes.items() if batch == 1 or name in ("keras", "savedmodel")}
                print_latencies(backbone, batch, batched, reference, port, args)  # ONNX and TFLite files are batch 1


def print_latencies(backbone, batch, runtimes, reference, port, args):
    """One table row per contender; ratios to the PyTorch reference and to the earlier port where each runs."""
    x = np.random.default_rng(batch).normal(size=(batch, args.size, args.size, 3)).astype("float32")
    contenders = {}
    if reference is not None:
        x_torch = torch_input(x)
        contenders[TORCH] = lambda: reference(x_torch)
    if port is not None:
        contenders[EARLIER_PORT] = functools.partial(port, x)
    contenders.update({name: functools.partial(runtime, x) for name, runtime in runtimes.items()})
    with torch.inference_mode():
        times = rounds(contenders, args.rounds, args.block, warmup=3)
    medians = {name: np.median(t) for name, t in times.items()}
    load = os.getloadavg()[0]
    for name, t in times.items():
        ratios = [f"{medians[name] / medians[base]:.2f}x" if base in medians else "-" for base in (TORCH, EARLIER_PORT)]
        cells = f"{1e3 * medians[name] / batch:.1f} | {1e3 * np.percentile(t, 90) / batch:.1f} | {' | '.join(ratios)}"
        print(f"| {backbone} | {batch} | {name} | {cells} | {load:.2f} |", flush=True)


def structure_loss(logits, mask):
    """The original's structure_loss (weighted BCE as the paper states it, weighted IoU), summed over the maps."""
    weights = 1 + 5 * torch.abs(F.avg_pool2d(mask, 31, 1, 15) - mask)
    total = 0
    for pred in logits:
        bce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
        bce = (weights * bce).sum((2, 3)) / weights.sum((2, 3))
        prob = torch.sigmoid(pred)
        inter = (prob * mask * weights).sum((2, 3))
        union = ((prob + mask) * weights).sum((2, 3))
        total = total + (bce + 1 - (inter + 1) / (union - inter + 1)).mean()
    return total


class TorchTrainer:
    """The original MyTrain.py's step: Adam, the structure loss of the four maps, clip_gradient(optimizer, 0.5)."""

    def __init__(self, backbone, images, masks, lr=1e-4, clip=0.5):
        self.model = torch_model(backbone, train=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr)
        self.images = torch_input(images)
        self.masks = torch_input(masks).contiguous(memory_format=torch.channels_last)
        self.clip = clip

    def step(self):
        self.optimizer.zero_grad()
        structure_loss(self.model(self.images), self.masks).backward()
        for p in self.model.parameters():
            if p.grad is not None:  # Res2Net's fc: in the checkpoint, never called
                p.grad.data.clamp_(-self.clip, self.clip)
        self.optimizer.step()


def timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def training(args):
    """Each contender's step on one fixed batch; the first step (the trace) timed alone, then rounds of steps."""
    rng = np.random.default_rng(0)
    for backbone in args.backbones:
        images = rng.normal(size=(args.batch_size, args.size, args.size, 3)).astype("float32")
        masks = (rng.random((args.batch_size, args.size, args.size, 1)) > 0.7).astype("float32")
        config = PraNetConfig(
            data_path=".", backbone=backbone, backbone_weights=None, input_size=args.size, batch_size=args.batch_size
        )
        trainer = PraNetTrainer(config, make_strategy("default"))
        steps = {"tfseg": functools.partial(trainer.train_on_batch, (tf.constant(images), tf.constant(masks)))}
        if backbone in TORCH_BACKBONES:
            steps[TORCH] = TorchTrainer(backbone, images, masks).step
        if args.earlier_port and backbone in EARLIER_PORT_BACKBONES:
            port_model, port_loss = earlier_port_model(args.earlier_port, backbone, args.size)
            port_model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss=port_loss)  # its train_pranet.py
            batch = {"x_img": tf.constant(images), "y_mask": tf.constant(masks), "gclip": 0.5}
            steps[EARLIER_PORT] = functools.partial(port_model.train_step, **batch)
        firsts = {name: timed(step) for name, step in steps.items()}
        times = rounds(steps, args.rounds, args.steps, warmup=2)
        rates = {name: args.batch_size / np.median(t) for name, t in times.items()}
        load = os.getloadavg()[0]
        for name, rate in rates.items():
            ratios = [f"{rate / rates[base]:.2f}x" if base in rates else "-" for base in (TORCH, EARLIER_PORT)]
            cells = f"{rate:.2f} | {' | '.join(ratios)} | {firsts[name]:.1f} s"
            print(f"| {backbone} | {args.batch_size} | {name} | {cells} | {load:.2f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["inference", "training"])
    p.add_argument(
        "--backbones", nargs="+", default=["resnet50", "res2net50"], choices=["resnet50", "res2net50", "mobilenetv2"]
    )
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--threads", type=int, default=2, help="torch's threads (TensorFlow's default is one per core)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--block", type=int, default=5, help="inference calls of each contender per round")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument(
        "--formats", nargs="+", default=["keras", "savedmodel", "onnx", "tflite", "onnx_int8", "tflite_int8"]
    )
    p.add_argument("--calibration", help="images for the int8 calibration (needed for int8 formats)")
    p.add_argument("--validation", help="images with masks for the export's Dice check (needed for int8 formats)")
    p.add_argument(
        "--earlier_port",
        metavar="PORT",
        help="a checkout of github.com/Thehunk1206/PRANet-Polyps-Segmentation: adds its PRAnet (resnet50, mobilenetv2)",
    )
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="training steps of each contender per round")
    args = p.parse_args()
    import_libraries()
    torch.set_num_threads(args.threads)
    if args.what == "inference":
        print("| backbone | batch | runtime | median ms/image | p90 ms/image | vs PyTorch | vs earlier port | load |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        try:
            inference(args)
        except QuantizationError as error:  # e.g. an int8 format without --calibration
            p.error(str(error))
    else:
        print("| backbone | batch | trainer | img/s | vs PyTorch | vs earlier port | first step | load |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        training(args)


if __name__ == "__main__":
    main()
