"""Kills, interruptions, bad files and careless paths (README, "Reliability"): no file a user had is lost or left
truncated, no output is written over an input, and bad inputs end in one `error:` line, never a traceback."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import ROOT, kill_when_changed, run_python
from tfseg import cli
from tfseg.data.synthetic import write_polyp_dataset
from tfseg.training import PraNetConfig, TrainingInterrupted
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.loop import run_training

# ---------------------------------------------------------------- kills while a kept file is rewritten


def test_kill_while_best_weights_are_rewritten_keeps_the_previous_best(tmp_path):
    """The defect: a kill during `save_weights(best.weights.h5)` left 96 bytes, and every later --resume died."""
    run = RunDirectory(str(tmp_path / "run"))
    model = keras.Sequential([keras.Input((2048,)), keras.layers.Dense(4096)])  # 32 MB: a write takes a while
    run.save_best_weights(model)
    code = f"""
import keras
from tfseg.training.checkpoints import RunDirectory
model = keras.Sequential([keras.Input((2048,)), keras.layers.Dense(4096)])
model.set_weights([w + 1.0 for w in model.get_weights()])
RunDirectory({run.path!r}).save_best_weights(model)
"""
    outcome, stderr = kill_when_changed(code, run.path)
    assert outcome == "killed", stderr
    reloaded = keras.Sequential([keras.Input((2048,)), keras.layers.Dense(4096)])
    reloaded.load_weights(run.best_weights)
    for saved, kept in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_array_equal(saved, kept)


def test_kill_while_args_are_rewritten_keeps_them(tmp_path):
    """The defect: a kill while --resume rewrote args.json left it empty, and the run could never be resumed."""
    run = RunDirectory(str(tmp_path / "run"))
    config = PraNetConfig(data_path="data", epochs=20)
    assert run.write_args(config)
    stored = run.read_args()
    code = f"""
from tfseg.training import PraNetConfig
from tfseg.training.checkpoints import RunDirectory
RunDirectory({run.path!r}).write_args(PraNetConfig(data_path="data", epochs=40))
"""
    outcome, stderr = kill_when_changed(code, run.path, slow_writes=True)
    assert outcome == "killed", stderr
    assert run.read_args() == stored
    modified = os.stat(run.args).st_mtime_ns
    assert not run.write_args(config) and os.stat(run.args).st_mtime_ns == modified  # same settings: untouched


# ---------------------------------------------------------------- the epoch loop, with a stand-in trainer


class CountingTrainer:
    """What `run_training` needs of a trainer, around a one-weight model: epoch e adds e + 1 to the weight and
    scores 0.1 * (e + 1) on validation, so every epoch improves."""

    score_name = "val_dice"

    def __init__(self, epochs, interrupt_at=None):
        self.config = PraNetConfig(data_path="data", epochs=epochs, batch_size=1, steps_per_epoch=1)
        weight = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        self.model = keras.Sequential([keras.Input((1,)), weight])
        self.optimizer = keras.optimizers.SGD(0.1)
        self.optimizer.build(self.model.trainable_variables)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_score = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch, best_score=self.best_score
        )
        self.interrupt_at = interrupt_at

    def restore(self, path):
        self.checkpoint.restore(path)

    def fit_epoch(self, pairs, epoch, steps, progress=True, callbacks=None):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt
        self.model.trainable_variables[0].assign_add([[epoch + 1.0]])
        return float(epoch)

    def validate(self, dataset):
        return {"val_dice": 0.1 * float(self.epoch.numpy() + 1)}


def train(run_dir, epochs, resume=False, **kwargs):
    trainer = CountingTrainer(epochs, **kwargs)
    result = run_training(trainer, RunDirectory(run_dir), ["pair"], None, 1, run_dir if resume else None, False)
    return trainer, result


def epochs_logged(run_dir):
    return [row["epoch"] for row in RunDirectory(run_dir).read_log()]


class Killed(Exception):
    """Stands for a kill at the moment the checkpoint of an epoch is committed."""


def test_log_row_is_written_before_the_checkpoint_commits_the_epoch(tmp_path, monkeypatch):
    """The defect: a kill between the checkpoint and the log row lost that epoch from log.csv for good."""
    run_dir = str(tmp_path / "run")
    save = tf.train.CheckpointManager.save

    def save_then_die(manager, checkpoint_number=None):
        if checkpoint_number == 2:
            raise Killed
        return save(manager, checkpoint_number=checkpoint_number)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_then_die)
    with pytest.raises(Killed):
        train(run_dir, 3)
    assert epochs_logged(run_dir) == [1, 2]  # epoch 2's row is there although its checkpoint is not
    monkeypatch.undo()
    trainer, _ = train(run_dir, 3, resume=True)  # epoch 2 again, then 3; the row of the lost epoch is replaced
    assert epochs_logged(run_dir) == [1, 2, 3]
    assert trainer.model.trainable_variables[0].numpy().item() == 1 + 2 + 3  # as an uninterrupted run


def test_resume_with_fewer_epochs_than_done_changes_nothing(tmp_path):
    run_dir = str(tmp_path / "run")
    train(run_dir, 2)
    run = RunDirectory(run_dir)
    before = {path: os.stat(path).st_mtime_ns for path in (run.args, run.csv, run.best_weights)}
    with pytest.raises(ValueError, match="has completed 2 epochs, more than the 1 asked for: nothing to do"):
        train(run_dir, 1, resume=True)
    assert {path: os.stat(path).st_mtime_ns for path in before} == before


def test_resume_removes_what_a_killed_run_left(tmp_path):
    run_dir = str(tmp_path / "run")
    train(run_dir, 1)
    partial = tmp_path / "run" / "checkpoints" / "ckpt-2_temp"
    partial.mkdir()
    (partial / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 1000)
    leftover = tmp_path / "run" / ".tmp999999999.best.weights.h5"
    leftover.write_bytes(b"half")
    train(run_dir, 2, resume=True)
    assert not partial.exists() and not leftover.exists() and epochs_logged(run_dir) == [1, 2]


def test_ctrl_c_in_training_names_the_folder_to_resume(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    with pytest.raises(TrainingInterrupted) as interrupted:
        train(run_dir, 3, interrupt_at=1)
    assert interrupted.value.resume_path == run_dir and epochs_logged(run_dir) == [1]

    def main(argv):
        raise interrupted.value

    with pytest.raises(SystemExit) as status:
        cli.run(main)
    assert status.value.code == cli.INTERRUPTED_STATUS
    assert capsys.readouterr().err == f"interrupted; continue with --resume {run_dir}\n"


# In the child: SIGINT arrives the moment `import tensorflow` starts, wherever the script imports it (no race
# with a poll of the child's memory maps, which a loaded machine lost). SIGINT is delivered as at a terminal: in
# the full suite the child inherited it blocked or ignored from the test process and ran on to the end.
INTERRUPT_AT_TENSORFLOW_IMPORT = """
import os, runpy, signal, sys

signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)

class InterruptAtTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAtTensorFlow())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT while the script imports TensorFlow: no traceback, exit status 130."""
    command = [sys.executable, "-c", INTERRUPT_AT_TENSORFLOW_IMPORT, "infer_image.py", "--model", str(tmp_path)]
    command += ["--image", str(tmp_path), "--output", str(tmp_path / "out")]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    assert result.returncode == cli.INTERRUPTED_STATUS, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().endswith("interrupted")


# ---------------------------------------------------------------- bad training data


def test_symlink_loop_and_truncated_jpeg_in_training_are_one_error_line(tmp_path):
    data = write_polyp_dataset(str(tmp_path / "data"), 8, size=(64, 64), seed=0)
    os.symlink("loop.jpg", os.path.join(data, "images", "loop.jpg"))
    result = run_python(["train_pranet.py", "--data_path", data, "--backbone_weights", "none"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.splitlines()[-1].startswith("error: ")
        and "loop.jpg (Too many levels of symbolic links)" in result.stderr.splitlines()[-1]
    )

    os.remove(os.path.join(data, "images", "loop.jpg"))
    image = os.path.join(data, "images", "synth_0003.jpg")
    content = open(image, "rb").read()
    open(image, "wb").write(content[: len(content) // 2])  # a valid header: PIL's verify() passes it
    result = run_python(["train_pranet.py", "--data_path", data, "--backbone_weights", "none"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.splitlines()[-1].startswith("error: ")
        and f"{image} (image file is truncated" in result.stderr.splitlines()[-1]
    )


def test_unreadable_validation_file_is_reported_before_the_overlap_check_reads_it(tmp_path, monkeypatch):
    """The defect: with --val_path, a chmod-000 file died in the overlap check (it reads bytes first) with a
    PermissionError traceback. Root reads any file, so the refusal is simulated where files are opened."""
    import builtins

    from tfseg.data import DatasetError
    from tfseg.training.pranet import load_pairs

    train = write_polyp_dataset(str(tmp_path / "train"), 4, size=(32, 32), seed=0)
    val = write_polyp_dataset(str(tmp_path / "val"), 2, size=(32, 32), seed=1)
    locked = os.path.join(val, "images", "synth_0001.jpg")
    real_open = builtins.open

    def no_permission(file, *args, **kwargs):
        if os.fspath(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_permission)
    with pytest.raises(DatasetError, match=r"synth_0001.jpg \(\[Errno 13\] Permission denied"):
        load_pairs(PraNetConfig(data_path=train, val_path=val))


def test_a_training_export_folder_that_is_not_one_is_refused_before_training(tmp_path):
    data = write_polyp_dataset(str(tmp_path / "data"), 8, size=(64, 64), seed=0)
    result = run_python(
        [
            "train_pranet.py",
            "--data_path",
            data,
            "--backbone_weights",
            "none",
            "--logdir",
            str(tmp_path / "runs"),
            "--trained_model_path",
            data,
        ]
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {data} is not empty and holds no tfseg export")
    assert not os.path.exists(tmp_path / "runs")


# ---------------------------------------------------------------- every tfseg model loads from a bare .keras


FRESH_PROCESS_LOADS = """
import sys
import export_model, infer_image, test_model
from tfseg.inference import Predictor

folder = sys.argv[1]
for name in ("pranet", "hrnet", "earnet"):
    assert type(Predictor.load(f"{folder}/{name}.keras").runtime.model).__name__ == name.replace(
        "pranet", "PraNet").replace("hrnet", "HRNetOCR").replace("earnet", "EARNet")
test_model.main(["--model", folder + "/earnet.keras", "--data_path", folder + "/vessels", "--output",
                 folder + "/eval", "--no_plots", "--quiet", "--workers", "1"])  # the vessel protocol: the model's
infer_image.main(["--model", folder + "/earnet.keras", "--image", folder + "/vessels/images", "--output",
                  folder + "/segmented", "--quiet"])
export_model.main(["--model", folder + "/earnet.keras", "--formats", "keras", "--output", folder + "/export"])
print("all loaded")
"""


def test_every_model_family_loads_from_a_keras_file_in_a_fresh_process(tmp_path):
    """The defect: `test_model.py --model stage2/export/model.keras` died with "Could not locate class 'EARNet'"
    (a fresh process had not imported the class before `keras.models.load_model`). Predictor.load (every
    inference script) and export_model.py's loader, for both families."""
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.models import EARNet, HRNetOCR, PraNet

    write_vessel_dataset(tmp_path / "vessels", 2, size=(64, 64))
    keras.utils.set_random_seed(0)
    stage1 = HRNetOCR("small", scales=(1.0,))
    stage1(np.zeros((1, 64, 64, 3), np.float32))
    stage1.save(tmp_path / "hrnet.keras")
    EARNet.from_stage1(stage1).save(tmp_path / "earnet.keras")
    pranet = PraNet("mobilenetv2", backbone_weights=None)
    pranet(np.zeros((1, 64, 64, 3), np.float32))
    pranet.save(tmp_path / "pranet.keras")
    result = run_python(["-c", FRESH_PROCESS_LOADS, str(tmp_path)])
    assert result.returncode == 0 and "all loaded" in result.stdout, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "segmented")) == sorted(
        f"vessel_{i:04d}_{kind}.png" for i in range(2) for kind in ("mask", "prob", "overlay")
    )
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["vessels"]["n_images"] == 2
    assert "AUC" in json.loads((tmp_path / "eval" / "results.json").read_text())["vessels"]  # vessel protocol
    exported = json.loads((tmp_path / "export" / "tfseg.json").read_text())
    assert exported["task"] == "vessel" and exported["input_size"] is None  # any size, from the bare .keras
