"""The training loop shared by every model family: one custom loop that runs unchanged under every
tf.distribute strategy, with run folders, checkpoints, resume, logs and the export of the best model.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy (tensorflow#72388), so the step is `strategy.run` over a
distributed dataset. A family (tfseg.training.pranet, tfseg.training.earnet) gives a config extending
`TrainingConfig` and a trainer extending `SegmentationTrainer`; nothing here holds a family's defaults.
"""

import dataclasses
import datetime
import json
import logging
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfseg import files
from tfseg.data.duplicates import DATA_CHECK
from tfseg.evaluation.threshold import choose as choose_threshold
from tfseg.export import export_model
from tfseg.models.preset import command_line, save_preset
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.strategy import is_chief, is_multiworker, task_id

log = logging.getLogger(__name__)
LEGACY_SETTINGS = {"trained_model_path": "export_dir"}  # names in args.json of runs by earlier versions


@dataclasses.dataclass
class TrainingConfig:
    """The settings every family has. The family's config gives the defaults of the first group."""

    data_path: str
    epochs: int
    lr: float
    batch_size: int  # global, over all replicas
    steps_per_epoch: int  # None or 0: one pass over the training images in full batches (the data repeats)
    val_fraction: float  # of the training images, held out to pick the best checkpoint
    gclip: float  # element-wise clip of the global-batch gradient (0: off)
    strategy: str = "auto"
    mixed_precision: bool = False
    seed: int = 0
    init_weights: str = None  # a .weights.h5 to start from (see the family)
    logdir: str = "runs"
    run_name: str = None
    export_dir: str = None  # where the best model is exported (default: <run folder>/export)
    export: bool = True
    allow_near_duplicates: bool = False  # val images near-duplicating training ones: INFO, not WARNING

    @classmethod
    def from_stored(cls, stored, **overrides):
        """The config of an args.json (lists back to tuples, renamed settings of earlier versions), with the
        `overrides` that are not None."""
        stored = {LEGACY_SETTINGS.get(key, key): value for key, value in stored.items()}
        tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
        stored = {key: tuple(value) if key in tuples and value is not None else value for key, value in stored.items()}
        return cls(**{**stored, **{key: value for key, value in overrides.items() if value is not None}})

    def run_folder(self, prefix):
        """`<logdir>/<run_name>`, by default `<logdir>/<prefix>_<time>`."""
        return os.path.join(self.logdir, self.run_name or f"{prefix}_{datetime.datetime.now():%Y%m%d-%H%M%S}")


class SegmentationTrainer:
    """Model, optimizer, checkpoint and the distributed step under `strategy.scope()`; `fit_epoch` runs one
    epoch. Subclasses give the model, optimizer, per-image loss, datasets and validation."""

    score_name = "val_dice"  # the validation metric that picks the best weights
    validation_protocol = None  # how `validate` measures (the model card says it)

    def __init__(self, config, strategy):
        self.config, self.strategy = config, strategy
        if config.mixed_precision:  # bfloat16 keeps float32's range: no loss scaling needed
            keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
            if not tf.config.list_physical_devices("GPU"):
                log.warning(
                    "mixed_precision on a CPU: bfloat16 is emulated on CPUs without AMX/AVX-512 BF16 "
                    "and can be several times slower (see docs/BENCHMARKS.md)"
                )
        with strategy.scope():
            self.model = self.build_model()
            self.optimizer = self.make_optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.best_score = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(best_score=self.best_score, **self._checkpointed())
        self._step = tf.function(self._distributed_step)

    def make_optimizer(self):
        """The family's optimizer; `config.gclip` as its clipvalue, in `global_batch_clipping`'s meaning."""
        raise NotImplementedError

    def compile_metrics(self):
        """Keras metrics of the prediction output for `model.fit` (tfseg.metrics); the loop validates on its own."""
        return []

    def compile_arguments(self):
        """`model.compile(**trainer.compile_arguments())` trains the model with `fit` by this recipe: the loop's
        optimizer (under this strategy) and loss (tfseg.models.supervision), and `compile_metrics`. The loop leaves
        its model uncompiled: a compiled model's `save_weights` also writes the optimizer's state."""
        return {"optimizer": self.optimizer, "loss": self.loss_fn, "metrics": self.compile_metrics()}

    def validation_maps(self, dataset):
        """(foreground probability, boolean mask) of each validation image, as `validate` sees them."""
        raise NotImplementedError

    def _checkpointed(self):
        return {"model": self.model, "optimizer": self.optimizer, "epoch": self.epoch}

    def restore(self, path):
        """Restores a checkpoint, also one written before the best score was named `best_score` (`best_dice`)."""
        legacy = any(name.startswith("best_dice/") for name, _ in tf.train.list_variables(path))
        tf.train.Checkpoint(
            **{"best_dice" if legacy else "best_score": self.best_score}, **self._checkpointed()
        ).restore(path)

    def _replica_step(self, *batch):
        with tf.GradientTape() as tape:
            per_image = self.replica_loss(*batch)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=self.config.batch_size)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)  # gclip: the optimizer's clipvalue
        return loss

    def _distributed_step(self, *batch):
        losses = self.strategy.run(self._replica_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def train_on_batch(self, batch):
        """One optimizer step (or several); returns the loss to log."""
        return self._step(*batch)

    def on_epoch_start(self, epoch):
        """Learning-rate schedules that change per epoch."""

    def fit_epoch(self, pairs, epoch, steps, progress=True, callbacks=None):
        """One epoch; returns the mean loss over its steps. `callbacks`: a keras.callbacks.CallbackList."""
        self.on_epoch_start(epoch)
        mean = keras.metrics.Mean()
        batches = iter(self.train_dataset(pairs, epoch))
        with tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress, leave=False
        ) as bar:
            callbacks = callbacks or keras.callbacks.CallbackList()
            for step in range(steps):
                callbacks.on_train_batch_begin(step)
                loss = self.train_on_batch(next(batches))
                mean.update_state(loss)
                callbacks.on_train_batch_end(step, {"loss": float(loss)})
                bar.update()
                bar.set_postfix(loss=f"{float(mean.result()):.4f}")
        return float(mean.result())


def open_run(config, strategy, resume, new_folder):
    """The RunDirectory of a new run (refusing a folder that holds one) or of the run to resume."""
    if is_multiworker(strategy) and not (resume or config.run_name):
        raise ValueError("A multi-worker run needs a run name (--name) so that every worker uses one run folder.")
    folder = resume or new_folder
    chief = is_chief(strategy)
    if chief and not resume and os.path.isfile(os.path.join(folder, "args.json")):
        raise FileExistsError(f"Run folder {folder} already holds a run: resume it or choose another name.")
    return RunDirectory(folder, chief, task_id(strategy))


def check_callbacks(callbacks):
    """Refuses callbacks the loop cannot honour (call it before anything is built or written): it resumes its run
    folder itself, and the recipe sets the learning rate."""
    refused = {
        keras.callbacks.BackupAndRestore: "the training loop resumes its run folder (--resume)",
        keras.callbacks.ReduceLROnPlateau: "the recipe sets the learning rate",
        keras.callbacks.LearningRateScheduler: "the recipe sets the learning rate",
    }
    for callback in callbacks or ():
        for kind, reason in refused.items():
            if isinstance(callback, kind):
                raise ValueError(f"{kind.__name__} is for model.fit: {reason}")


def epoch_steps(n_train, config):
    """`config.steps_per_epoch`, or one pass over the training images in full batches."""
    if n_train < config.batch_size:
        raise ValueError(f"{n_train} training images are fewer than one batch of {config.batch_size}.")
    return config.steps_per_epoch or n_train // config.batch_size


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; `resume_path` is the folder to give `--resume` (None before it holds a run)."""

    def __init__(self, resume_path=None):
        super().__init__(resume_path)
        self.resume_path = resume_path


def run_training(
    trainer, run, train_pairs, val_data, n_val, resume=None, progress=True, data_check=None, callbacks=None
):
    """The epoch loop shared by every model: resume, train, validate (`trainer.validate` -> metrics, the best
    by `trainer.score_name`), log (CSV, TensorBoard), checkpoint. Returns {"run_dir", "best_score", "history"}.
    `data_check`: the start's near-duplicate record (tfseg.data.duplicates), kept as `<run>/data_check.json`.
    `callbacks`: Keras callbacks, called as `fit` calls them (train begin/end, epoch begin/end with the log row's
    values, batch begin/end with the loss); `model.stop_training` (EarlyStopping) ends the run after the epoch it
    committed. BackupAndRestore, ReduceLROnPlateau and LearningRateScheduler are refused (`check_callbacks`).

    A kill at any moment loses at most the current epoch: the log row and the best weights (atomic writes) come
    before the checkpoint that commits the epoch, and a resumed run drops rows beyond its checkpoint. Ctrl-C
    raises TrainingInterrupted."""
    try:
        return _epochs(trainer, run, train_pairs, val_data, n_val, resume, progress, data_check, callbacks)
    except KeyboardInterrupt as interrupt:
        started = os.path.isfile(run.args)
        raise TrainingInterrupted(run.path if started else None) from interrupt


def _epochs(trainer, run, train_pairs, val_data, n_val, resume, progress, data_check, callbacks):
    config = trainer.config
    steps = epoch_steps(len(train_pairs), config)
    check_callbacks(callbacks)
    callbacks = keras.callbacks.CallbackList(callbacks, model=trainer.model, epochs=config.epochs, steps=steps)
    manager = run.checkpoint_manager(trainer.checkpoint)
    if resume:
        run.remove_leftovers()
        if manager.latest_checkpoint:
            trainer.restore(manager.latest_checkpoint)
            log.info("Resumed %s at epoch %d", manager.latest_checkpoint, int(trainer.epoch.numpy()))
    start = int(trainer.epoch.numpy())
    if start > config.epochs:
        raise ValueError(
            f"{run.path} has completed {start} epochs, more than the {config.epochs} asked for: "
            f"nothing to do, nothing changed (ask for more than {start} epochs to continue it)"
        )
    if run.write_args(config):  # once data and model are ready (a failed start leaves no run folder behind),
        log.info("Settings written to %s", run.args)  # and on resume only when a setting changed
    if data_check is not None and run.chief:
        files.write_json(os.path.join(run.path, DATA_CHECK), data_check)
    run.truncate_log(start)
    writers = (
        {k: tf.summary.create_file_writer(os.path.join(run.tensorboard, k)) for k in ("train", "val")}
        if run.chief
        else {}
    )
    log.info(
        "%d training / %d validation images, %d steps per epoch, run folder %s",
        len(train_pairs),
        n_val,
        steps,
        run.path,
    )
    history = []
    trainer.model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(start, config.epochs):
        callbacks.on_epoch_begin(epoch)
        loss = trainer.fit_epoch(train_pairs, epoch, steps, progress=progress and run.chief, callbacks=callbacks)
        metrics = trainer.validate(val_data)
        score = metrics[trainer.score_name]
        improved = score > float(trainer.best_score.numpy())
        if improved:
            trainer.best_score.assign(score)
            run.save_best_weights(trainer.model)
        row = {"epoch": epoch + 1, "loss": loss, **metrics, "lr": float(trainer.optimizer.learning_rate.numpy())}
        history.append(row)
        run.append_log(row)
        if run.chief:
            with writers["train"].as_default():
                tf.summary.scalar("loss", loss, step=epoch + 1)
            with writers["val"].as_default():
                for name, value in metrics.items():
                    tf.summary.scalar(name.removeprefix("val_"), value, step=epoch + 1)
                writers["val"].flush()
            writers["train"].flush()
        trainer.epoch.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)  # commits the epoch: everything above is written
        log.info(
            "epoch %d/%d  loss %.4f  %s%s",
            epoch + 1,
            config.epochs,
            loss,
            "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            "  (best)" if improved else "",
        )
        callbacks.on_epoch_end(epoch, {key: value for key, value in row.items() if key != "epoch"})
        if trainer.model.stop_training:
            log.info("Stopped by a callback after epoch %d", epoch + 1)
            break
    callbacks.on_train_end(history[-1] if history else None)
    run.cleanup()
    return {"run_dir": run.path, "best_score": float(trainer.best_score.numpy()), "history": history}


def training_record(trainer, run, train_pairs, val_pairs, val_data):
    """tfseg.json's "training" block, read by every evaluation's protocol card: how the exported checkpoint was
    chosen (the best epoch by `trainer.score_name` over the whole log, resumed epochs included) and on which
    images (sha256 of each training and validation image, to flag an evaluation on them), the threshold chosen on
    the validation images (tfseg.evaluation.threshold) and the near-duplicate check at the start (data_check.json,
    where it ran). Call with the best weights in `trainer.model`."""
    rows = [row for row in run.read_log() if not np.isnan(row.get(trainer.score_name, np.nan))]
    best = max(rows, key=lambda row: row[trainer.score_name]) if rows else None
    task = trainer.model.inference_spec()["task"]
    data_check = os.path.join(run.path, DATA_CHECK)
    near_duplicates = None
    if os.path.isfile(data_check):
        with open(data_check) as f:
            near_duplicates = len(json.load(f).get("near_duplicates", []))
    config = trainer.config
    return {
        "checkpoint": {
            "rule": f"best {trainer.score_name} on the validation images" if best else "last epoch",
            "epoch": best["epoch"] if best else int(trainer.epoch.numpy()),
            "score": best[trainer.score_name] if best else None,
            "epochs": int(trainer.epoch.numpy()),
        },
        "validation": {"split": _validation_split(config), **image_digests(val_pairs)},
        "validation_protocol": trainer.validation_protocol,
        "training_images": image_digests(train_pairs),
        "threshold": choose_threshold(task, trainer.validation_maps(val_data)),
        "near_duplicates": near_duplicates,
        "run_dir": os.path.abspath(run.path),
    }


def _validation_split(config):
    if getattr(config, "val_path", None):
        return f"the folder {config.val_path}"
    if getattr(config, "split_file", None):
        return f"the ids in {config.split_file}"
    return f"a seeded {config.val_fraction:g} of the training images (seed {config.seed})"


def image_digests(pairs):
    """{"images": n, "sha256": sorted short sha256 of each image file}: enough to recognise the images later."""
    return {"images": len(pairs), "sha256": sorted(files.short_digest(pair.image) for pair in pairs)}


def export_best(trained, run, config, record=None):
    """Copies the best weights into a float32 single-device copy of the trained model (outside any strategy and
    mixed-precision policy), writes it as the preset `<run>/preset` (its model card from `preset_record`) and,
    unless `config.export` is off, exports it to `config.export_dir` or the run's export folder, with `record`
    (`training_record`) in its tfseg.json; returns {format: path, "preset": folder}. (Without the export the preset
    is what `export_model.py --model <run>/preset` exports later, in a process of its own: the export's tracing
    needs several GB on top of what a large model's training leaves, docs/BENCHMARKS.md.)"""
    keras.mixed_precision.set_dtype_policy("float32")
    model = type(trained).from_config(trained.get_config())
    model(np.zeros((1, 64, 64, 3), "float32"), training=False)  # builds subclassed models
    model.set_weights(trained.get_weights())
    if os.path.isfile(run.best_weights):
        model.load_weights(run.best_weights)
    training = preset_record(run, config, record) if record else None
    folder = save_preset(model, run.preset, training, overwrite=True)  # the run's own: a resumed run replaces it
    log.info("Preset of the best model: %s", folder)
    if not config.export:
        return {"preset": folder}
    exported = export_model(model, config.export_dir or run.export, training=record)
    return {**{name: result["path"] for name, result in exported.items()}, "preset": folder}


def preset_record(run, config, record):
    """The training record plus what the preset's model card shows: the data, the validation metrics of the chosen
    epoch (log.csv), the command line and the settings (args.json)."""
    best = next((row for row in run.read_log() if row["epoch"] == record["checkpoint"]["epoch"]), {})
    return {
        **record,
        "data_path": config.data_path,
        "metrics": {key: value for key, value in best.items() if key not in ("epoch", "loss", "lr")},
        "command": command_line(sys.argv),
        "settings": json.loads(json.dumps(dataclasses.asdict(config))),
    }
