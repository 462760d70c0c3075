"""tfseg's models through Keras' own `compile` / `fit`, with the standard callbacks, on small synthetic data.

    python examples/keras_fit.py --out keras_fit            # PraNet-MobileNetV2, then EAR-Net stage 1 and 2
    python examples/keras_fit.py --out keras_fit --check    # the same, each fit killed once and restarted

One mask is the target of every output (tfseg.models.supervision): StructureLoss sums PraNet's four maps,
EARNetLoss weighs HRNet-OCR's, and the metrics score the prediction output. `--check` runs each fit in a child
process, kills it (SIGKILL) when BackupAndRestore has written its first backup, starts it again, and checks that it
went on from the backup rather than from epoch 0 and ended with every callback's files.
"""

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time

FITS = ("pranet", "earnet_stage1", "earnet_stage2")


def callbacks(folder, monitor):
    import keras

    return [  # in this order at each epoch's end: the backup last, after every file of the epoch is written
        keras.callbacks.CSVLogger(os.path.join(folder, "log.csv"), append=True),
        keras.callbacks.ModelCheckpoint(
            os.path.join(folder, "best.weights.h5"),
            monitor=monitor,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=3),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", patience=2, factor=0.5),
        keras.callbacks.TensorBoard(os.path.join(folder, "tensorboard")),
        keras.callbacks.BackupAndRestore(os.path.join(folder, "backup")),
    ]


def fit(name, out, epochs, size, eager=False):
    """One fit: PraNet-MobileNetV2 on polyps, or EAR-Net's stage 1 (HRNetOCR) or 2 (EARNet) on vessels."""
    import keras
    import numpy as np

    from tfseg import metrics
    from tfseg.data import layouts, pipeline, sources, synthetic, vessels
    from tfseg.data.imageio import read_mask, write_png
    from tfseg.losses import EARNetLoss, StructureLoss
    from tfseg.models import PraNet
    from tfseg.models.earnet import EARNet, error_map
    from tfseg.models.hrnet import HRNetOCR

    keras.utils.set_random_seed(0)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    if name == "pranet":
        pairs = sources.find_pairs(str(synthetic.write_polyp_dataset(os.path.join(out, "polyps"), 16, (96, 96))))
        model = PraNet("mobilenetv2", None, input_size=size)
        data = lambda chosen, training: pipeline.make_dataset(chosen, model.normalization, size, 4, training)
        model.compile(
            keras.optimizers.Adam(1e-3),
            loss=StructureLoss(),
            metrics=[metrics.Dice(from_logits=True), metrics.IoU(from_logits=True), metrics.MeanDice(from_logits=True)],
            run_eagerly=eager,
        )
        train, val, monitor = data(pairs[:12], True), data(pairs[12:], False), "val_dice"
    else:
        pairs = layouts.find_dataset(str(synthetic.write_vessel_dataset(os.path.join(out, "vessels"), 8, (96, 96))))
        stage1 = HRNetOCR("small", norm="group")
        stage1(np.zeros((1, 64, 64, 3), "float32"))
        errors = None
        if name == "earnet_stage2":  # from stage 1's best weights, its error maps on the training images
            stage1.load_weights(os.path.join(out, "earnet_stage1", "best.weights.h5"))
            errors = []
            for pair in pairs[:6]:
                image = next(iter(vessels.make_vessel_dataset([pair], stage1.normalization, 1, None, False)))[0]
                probability = keras.ops.softmax(stage1.predict(image, verbose=0)["pred"])[0, ..., 1]
                errors.append(os.path.join(folder, f"{pair.stem}_error.png"))
                write_png(errors[-1], error_map(np.asarray(probability) > 0.5, read_mask(pair.mask)) * 255)
        model = stage1 if errors is None else EARNet.from_stage1(stage1)
        model(np.zeros((1, 64, 64, 3), "float32"))  # builds it (BackupAndRestore loads into built models only)
        train = vessels.make_vessel_dataset(pairs[:6], model.normalization, 2, 64, True, errors, repeat=True)
        if errors:  # y: the labels and the error maps, for EARNetLoss's error-attention term
            train = train.map(lambda images, labels, maps: (images, {"labels": labels, "error_maps": maps}))
        val = vessels.make_vessel_dataset(pairs[6:], model.normalization, 1, None, False)
        vessel_metrics = [kind(from_logits=True) for kind in (metrics.F1, metrics.Sensitivity, metrics.AUC)]
        model.compile(keras.optimizers.Adam(1e-3), loss=EARNetLoss(), metrics=vessel_metrics, run_eagerly=eager)
        monitor = "val_f1"
    steps = {"steps_per_epoch": 6} if name != "pranet" else {}
    # the datasets shuffle themselves (seeded)
    model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks(folder, monitor), shuffle=False, **steps)


def backed_up_epochs(path):
    """The epochs done in BackupAndRestore's training_metadata.json, None before it is whole."""
    try:
        with open(path) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError, KeyError):
        return None


def check(args):
    """Each fit killed once after its first backup, then restarted: it must go on from the backup."""
    failures = []
    for name in FITS:
        folder = os.path.join(args.out, name)
        command = [sys.executable, __file__, "--out", args.out, "--fit", name, "--epochs", str(args.epochs)]
        command += ["--size", str(args.size)] + (["--eager"] if args.eager else [])
        backup = os.path.join(folder, "backup", "training_metadata.json")
        child = subprocess.Popen(command)
        while child.poll() is None and (backed_up := backed_up_epochs(backup)) is None:
            time.sleep(0.05)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()
            print(f"{name}: killed after the backup of {backed_up} epoch(s)", flush=True)
        else:
            failures.append(f"{name}: ended (code {child.returncode}) before its first backup")
            continue
        if subprocess.run(command).returncode != 0:
            failures.append(f"{name}: the restarted fit failed")
            continue
        with open(os.path.join(folder, "log.csv")) as f:
            epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
        missing = [
            part
            for part, path in (("best weights", "best.weights.h5"), ("TensorBoard", "tensorboard/train"))
            if not os.path.exists(os.path.join(folder, path))
        ]
        if epochs != list(range(len(epochs))) or len(epochs) <= backed_up:  # a restart from 0 repeats epochs
            failures.append(f"{name}: the log's epochs {epochs} do not go on from the backup of {backed_up} epoch(s)")
        if os.path.exists(os.path.join(folder, "backup")):
            failures.append(f"{name}: the backup folder was left behind after the fit ended")
        if missing:
            failures.append(f"{name}: no {', '.join(missing)}")
        print(f"{name}: log epochs {epochs}", flush=True)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a new folder for the data and the fits")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="PraNet's input size")
    parser.add_argument("--fit", choices=FITS, help="one fit only (what --check runs in a child)")
    parser.add_argument("--eager", action="store_true", help="run_eagerly: no graph traces (quicker for tiny runs)")
    parser.add_argument("--check", action="store_true", help="kill each fit after its first backup, restart it")
    args = parser.parse_args(argv)
    if args.check:
        return check(args)
    for name in [args.fit] if args.fit else FITS:
        fit(name, args.out, args.epochs, args.size, args.eager)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
