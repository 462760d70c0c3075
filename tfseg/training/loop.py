"""PraNet training: one custom loop that runs unchanged under every tf.distribute strategy.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy (tensorflow#72388), so the step is `strategy.run` over
a distributed dataset. The recipe follows the official MyTrain.py: Adam, structure loss on all four maps,
element-wise gradient clipping, step decay `lr * decay_rate ** (epoch // decay_epoch)`, optional multi-scale
training (each batch at 0.75/1/1.25 of the size, one optimizer step per scale).
"""

import dataclasses
import datetime
import logging
import os

import keras
import tensorflow as tf
from tqdm import tqdm

from tfseg.data import pipeline, sources
from tfseg.export import check_export_folder, export_model
from tfseg.losses import StructureLoss
from tfseg.models import PraNet
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.strategy import is_chief, is_multiworker, make_strategy, task_id

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    data_path: str
    val_path: str = None  # a separate validation folder, or
    split_file: str = None  # ids of the validation images, or
    val_fraction: float = 0.1  # a seeded split of data_path
    backbone: str = "resnet50"
    backbone_weights: str = "imagenet"
    channels: int = 32
    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 16  # global, over all replicas
    input_size: int = 352
    gclip: float = 0.5
    decay_rate: float = 0.1
    decay_epoch: int = 50
    multiscale: bool = False
    augment: bool = False
    weighted_bce: bool = True
    strategy: str = "auto"
    mixed_precision: bool = False
    seed: int = 0
    steps_per_epoch: int = None  # default: every full batch once (the data repeats, so more is fine)
    logdir: str = "runs"
    run_name: str = None
    trained_model_path: str = None  # where the final model goes (default: <run>/export)
    export: bool = True


def load_pairs(config):
    """(train, val) pairs from separate folders, a split file of validation ids, or a seeded split."""
    pairs = sources.find_pairs(config.data_path)
    if config.val_path:
        train, val = pairs, sources.find_pairs(config.val_path)
    elif config.split_file:
        train, val = sources.split_by_file(pairs, config.split_file)
    else:
        train, val = sources.split_pairs(pairs, config.val_fraction, config.seed)
    sources.check_pairs(train + val)  # every file decodes: before the overlap check reads their bytes
    if config.val_path:
        sources.check_disjoint(train, val)
    return train, val


def dice_per_image(logits, masks):
    """Dice of sigmoid(logits) > 0.5 per image; an image with empty mask and empty prediction scores 1."""
    pred = tf.cast(tf.cast(logits, tf.float32) > 0.0, tf.float32)
    inter = tf.reduce_sum(pred * masks, (1, 2, 3))
    total = tf.reduce_sum(pred, (1, 2, 3)) + tf.reduce_sum(masks, (1, 2, 3))
    return tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), 1.0)


class SegmentationTrainer:
    """Model, optimizer, checkpoint and the distributed step under `strategy.scope()`; `fit_epoch` runs one
    epoch. Subclasses give the model, optimizer, per-image loss, datasets and validation."""

    score_name = "val_dice"  # the validation metric that picks the best weights

    def __init__(self, config, strategy):
        self.config, self.strategy = config, strategy
        if config.mixed_precision:  # bfloat16 keeps float32's range: no loss scaling needed
            keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
            if not tf.config.list_physical_devices("GPU"):
                log.warning("mixed_precision on a CPU: bfloat16 is emulated on CPUs without AMX/AVX-512 BF16 "
                            "and can be several times slower (see docs/BENCHMARKS.md)")
        with strategy.scope():
            self.model = self.build_model()
            self.optimizer = self.make_optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.best_score = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, epoch=self.epoch,
                                              best_dice=self.best_score)
        self._step = tf.function(self._distributed_step)

    def _replica_step(self, *batch):
        with tf.GradientTape() as tape:
            per_image = self.replica_loss(*batch)
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=self.config.batch_size)
        grads = tape.gradient(loss, self.model.trainable_variables)
        if self.config.gclip:
            # Keras' optimizer clips before it sums the replicas' gradients; the original clips the full-batch
            # gradient. So: sum here, clip element-wise, and give each replica 1/N back for the optimizer's sum.
            context = tf.distribute.get_replica_context()
            replicas = context.num_replicas_in_sync
            if replicas > 1:
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads = [tf.clip_by_value(g, -self.config.gclip, self.config.gclip) / replicas for g in grads]
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss

    def _distributed_step(self, *batch):
        losses = self.strategy.run(self._replica_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def train_on_batch(self, batch):
        """One optimizer step (or several); returns the loss to log."""
        return self._step(*batch)

    def on_epoch_start(self, epoch):
        """Learning-rate schedules that change per epoch."""

    def fit_epoch(self, pairs, epoch, steps, progress=True):
        """One epoch; returns the mean loss over its steps."""
        self.on_epoch_start(epoch)
        mean = keras.metrics.Mean()
        batches = iter(self.train_dataset(pairs, epoch))
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress,
                  leave=False) as bar:
            for _ in range(steps):
                mean.update_state(self.train_on_batch(next(batches)))
                bar.update()
                bar.set_postfix(loss=f"{float(mean.result()):.4f}")
        return float(mean.result())


class PraNetTrainer(SegmentationTrainer):
    """PraNet: Adam, structure loss over the four maps, step decay, optional multi-scale steps."""

    def __init__(self, config, strategy):
        self.loss_fn = StructureLoss(config.weighted_bce, reduction=None)
        self.sizes = pipeline.multiscale_sizes(config.input_size) if config.multiscale else [config.input_size]
        super().__init__(config, strategy)
        ra2_dice = lambda images, masks: dice_per_image(self.model(images, training=False)[-1], masks)
        self._val_dice = tf.function(ra2_dice, reduce_retracing=True)

    def build_model(self):
        c = self.config
        return PraNet(c.backbone, c.backbone_weights, c.channels)

    def make_optimizer(self):
        return keras.optimizers.Adam(self.config.lr)

    def replica_loss(self, images, masks, size):
        if size != self.config.input_size:
            images, masks = pipeline.rescale_batch(images, masks, size)
        return self.loss_fn(masks, self.model(images, training=True))

    def on_epoch_start(self, epoch):
        c = self.config
        self.optimizer.learning_rate.assign(c.lr * c.decay_rate ** (epoch // c.decay_epoch))

    def train_on_batch(self, batch):
        images, masks = batch
        losses = {size: self._step(images, masks, size) for size in self.sizes}  # one trace per scale
        return losses[self.config.input_size]

    def validate(self, dataset):
        """{"val_dice": mean per-image Dice of the ra2 map} (inference mode; the whole set on every worker)."""
        scores = [self._val_dice(images, masks) for images, masks in dataset]
        return {"val_dice": float(tf.reduce_mean(tf.concat(scores, 0))) if scores else float("nan")}

    def train_dataset(self, pairs, epoch):
        """Per-epoch dataset (seed + epoch: a resumed run sees the same order), endless so that every worker
        runs the same number of steps, each pass freshly augmented."""
        c = self.config
        fn = lambda ctx: pipeline.make_dataset(pairs, c.backbone, c.input_size, c.batch_size, training=True,
                                                augment=c.augment, seed=c.seed + epoch, input_context=ctx,
                                                repeat=True)
        return self.strategy.distribute_datasets_from_function(fn)


def _run_folder(config):
    name = config.run_name or f"pranet_{config.backbone}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return os.path.join(config.logdir, name)


def resume_config(run_dir, **overrides):
    """The configuration stored in `run_dir`, with the overrides that are not None (e.g. more epochs)."""
    stored = RunDirectory(run_dir).read_args()
    return TrainConfig(**{**stored, **{k: v for k, v in overrides.items() if v is not None}})


def train_pranet(config, resume=None, progress=True):
    """Trains PraNet as configured, or continues the run folder `resume` from its last checkpoint (pass
    `resume_config(resume)` as config), exports the best model and returns
    `{"run_dir", "best_dice", "history", "export"}`."""
    strategy = make_strategy(config.strategy)
    run = open_run(config, strategy, resume, _run_folder(config))
    keras.utils.set_random_seed(config.seed)
    train_pairs, val_pairs = load_pairs(config)
    if run.chief and config.export:
        check_export_folder(config.trained_model_path or run.export)  # now, not after the training
    trainer = PraNetTrainer(config, strategy)
    val_data = pipeline.make_dataset(val_pairs, config.backbone, config.input_size, config.batch_size,
                                     training=False)
    result = run_training(trainer, run, train_pairs, val_data, len(val_pairs), resume, progress)
    result["best_dice"] = result["best_score"]
    if run.chief and config.export:
        result["export"] = export_best(trainer.model, run, config)
    return result


def open_run(config, strategy, resume, new_folder):
    """The RunDirectory of a new run (refusing a folder that holds one) or of the run to resume."""
    if is_multiworker(strategy) and not (resume or config.run_name):
        raise ValueError("A multi-worker run needs a run name (--name) so that every worker uses one run folder.")
    folder = resume or new_folder
    chief = is_chief(strategy)
    if chief and not resume and os.path.isfile(os.path.join(folder, "args.json")):
        raise FileExistsError(f"Run folder {folder} already holds a run: resume it or choose another name.")
    return RunDirectory(folder, chief, task_id(strategy))


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


def run_training(trainer, run, train_pairs, val_data, n_val, resume=None, progress=True):
    """The epoch loop shared by every model: resume, train, validate (`trainer.validate` -> metrics, the best
    by `trainer.score_name`), log (CSV, TensorBoard), checkpoint. Returns {"run_dir", "best_score", "history"}.

    A kill at any moment loses at most the current epoch: the log row and the best weights (atomic writes) come
    before the checkpoint that commits the epoch, and a resumed run drops rows beyond its checkpoint. Ctrl-C
    raises TrainingInterrupted."""
    try:
        return _epochs(trainer, run, train_pairs, val_data, n_val, resume, progress)
    except KeyboardInterrupt as interrupt:
        started = os.path.isfile(run.args)
        raise TrainingInterrupted(run.path if started else None) from interrupt


def _epochs(trainer, run, train_pairs, val_data, n_val, resume, progress):
    config = trainer.config
    steps = epoch_steps(len(train_pairs), config)
    manager = run.checkpoint_manager(trainer.checkpoint)
    if resume:
        run.remove_leftovers()
        if manager.latest_checkpoint:
            trainer.checkpoint.restore(manager.latest_checkpoint)
            log.info("Resumed %s at epoch %d", manager.latest_checkpoint, int(trainer.epoch.numpy()))
    start = int(trainer.epoch.numpy())
    if start > config.epochs:
        raise ValueError(f"{run.path} has completed {start} epochs, more than the {config.epochs} asked for: "
                         f"nothing to do, nothing changed (ask for more than {start} epochs to continue it)")
    if run.write_args(config):  # once data and model are ready (a failed start leaves no run folder behind),
        log.info("Settings written to %s", run.args)  # and on resume only when a setting changed
    run.truncate_log(start)
    writers = {k: tf.summary.create_file_writer(os.path.join(run.tensorboard, k)) for k in ("train", "val")} \
        if run.chief else {}
    log.info("%d training / %d validation images, %d steps per epoch, run folder %s",
             len(train_pairs), n_val, steps, run.path)
    history = []
    for epoch in range(start, config.epochs):
        loss = trainer.fit_epoch(train_pairs, epoch, steps, progress=progress and run.chief)
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
        log.info("epoch %d/%d  loss %.4f  %s%s", epoch + 1, config.epochs, loss,
                 "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), "  (best)" if improved else "")
    run.cleanup()
    return {"run_dir": run.path, "best_score": float(trainer.best_score.numpy()), "history": history}


def export_best(trained, run, config):
    """Copies the best weights into a float32 single-device model (outside any strategy) and exports it."""
    keras.mixed_precision.set_dtype_policy("float32")
    model = PraNet.from_config(trained.get_config())
    model.set_weights(trained.get_weights())
    if os.path.isfile(run.best_weights):
        model.load_weights(run.best_weights)
    folder = config.trained_model_path or run.export
    exported = export_model(model, folder, input_size=config.input_size)
    return {name: result["path"] for name, result in exported.items()}
