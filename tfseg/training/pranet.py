"""PraNet's training recipe on the shared loop, as the official MyTrain.py: Adam, structure loss on all four
maps, element-wise gradient clipping, step decay `lr * decay_rate ** (epoch // decay_epoch)`, optional
multi-scale training (each batch at 0.75/1/1.25 of the size, one optimizer step per scale).
"""

import dataclasses
import os

import keras
import tensorflow as tf

from tfseg import metrics
from tfseg.data import pipeline, sources
from tfseg.data.duplicates import check_near_duplicates
from tfseg.export import check_export_folder
from tfseg.losses import StructureLoss
from tfseg.models import PraNet
from tfseg.models.spec import check_input_size
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.loop import (
    SegmentationTrainer,
    TrainingConfig,
    check_callbacks,
    export_best,
    open_run,
    run_training,
    training_record,
)
from tfseg.training.optimizers import global_batch_clipping
from tfseg.training.strategy import make_strategy


@dataclasses.dataclass
class PraNetConfig(TrainingConfig):
    """Defaults: the official MyTrain.py (Adam, lr 1e-4, batch 16, 352 px, clip 0.5, 20 epochs)."""

    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 16
    steps_per_epoch: int = None
    val_fraction: float = 0.1  # a seeded split of data_path, unless val_path or split_file
    gclip: float = 0.5
    val_path: str = None  # a separate validation folder, or
    split_file: str = None  # ids of the validation images
    backbone: str = "resnet50"
    backbone_weights: str = "imagenet"
    channels: int = 32
    input_size: int = 352
    decay_rate: float = 0.1
    decay_epoch: int = 50
    multiscale: bool = False
    augment: bool = False
    weighted_bce: bool = True


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


class PraNetTrainer(SegmentationTrainer):
    """PraNet: Adam, structure loss over the four maps, step decay, optional multi-scale steps."""

    validation_protocol = "mean per-image Dice of sigmoid(ra2) > 0.5 at the input size, inference mode (val_dice)"

    def __init__(self, config, strategy):
        self.loss_fn = StructureLoss(config.weighted_bce)
        self.sizes = pipeline.multiscale_sizes(config.input_size) if config.multiscale else [config.input_size]
        super().__init__(config, strategy)
        ra2_dice = lambda images, masks: dice_per_image(self.model(images, training=False)[-1], masks)
        self._val_dice = tf.function(ra2_dice, reduce_retracing=True)

    def build_model(self):
        """PraNet on its backbone; `init_weights` (a whole PraNet's .weights.h5, e.g. a run's best weights or the
        original PraNet-19 converted by convert_weights.py) replaces the backbone's ImageNet start."""
        c = self.config
        model = PraNet(c.backbone, None if c.init_weights else c.backbone_weights, c.channels, c.input_size)
        if c.init_weights:
            model.load_weights(c.init_weights)
        return model

    def make_optimizer(self):
        return global_batch_clipping(keras.optimizers.Adam)(self.config.lr, clipvalue=self.config.gclip or None)

    def compile_metrics(self):
        return [metrics.Dice(from_logits=True), metrics.IoU(from_logits=True)]

    def replica_loss(self, images, masks, size):
        if size != self.config.input_size:
            images, masks = pipeline.rescale_batch(images, masks, size)
        return self.loss_fn.call(masks, self.model(images, training=True))  # per image

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

    def validation_maps(self, dataset):
        """Sigmoid of the ra2 map and the mask of each validation image, at the training input size."""
        for images, masks in dataset:
            probabilities = tf.sigmoid(tf.cast(self.model(images, training=False)[-1], tf.float32))
            for probability, mask in zip(probabilities.numpy()[..., 0], masks.numpy()[..., 0]):
                yield probability, mask > 0.5

    def train_dataset(self, pairs, epoch):
        """Per-epoch dataset (seed + epoch: a resumed run sees the same order), endless so that every worker
        runs the same number of steps, each pass freshly augmented."""
        c = self.config
        fn = lambda ctx: pipeline.make_dataset(
            pairs,
            self.model.normalization,
            c.input_size,
            c.batch_size,
            training=True,
            augment=c.augment,
            seed=c.seed + epoch,
            input_context=ctx,
            repeat=True,
        )
        return self.strategy.distribute_datasets_from_function(fn)


def resume_config(run_dir, **overrides):
    """The configuration stored in the PraNet run folder `run_dir`, with the overrides that are not None."""
    return PraNetConfig.from_stored(RunDirectory(run_dir).read_args(), **overrides)


def train_pranet(config, resume=None, progress=True, callbacks=None):
    """Trains PraNet as configured, or continues the run folder `resume` from its last checkpoint (pass
    `resume_config(resume)` as config), exports the best model and returns
    `{"run_dir", "best_dice", "history", "export"}`. `callbacks`: Keras callbacks (see `run_training`)."""
    check_callbacks(callbacks)
    check_input_size(config.input_size, PraNet.size_multiple, "PraNet")  # before a run folder is made
    strategy = make_strategy(config.strategy)
    run = open_run(config, strategy, resume, config.run_folder(f"pranet_{config.backbone}"))
    keras.utils.set_random_seed(config.seed)
    train_pairs, val_pairs = load_pairs(config)
    data_check = check_near_duplicates(train_pairs, val_pairs, config.allow_near_duplicates)
    if run.chief and config.export:
        check_export_folder(config.export_dir or run.export)  # now, not after the training
    trainer = PraNetTrainer(config, strategy)
    val_data = pipeline.make_dataset(
        val_pairs, trainer.model.normalization, config.input_size, config.batch_size, training=False
    )
    result = run_training(trainer, run, train_pairs, val_data, len(val_pairs), resume, progress, data_check, callbacks)
    result["best_dice"] = result["best_score"]
    if run.chief:
        if os.path.isfile(run.best_weights):
            trainer.model.load_weights(run.best_weights)  # the threshold is chosen with the exported weights
        record = training_record(trainer, run, train_pairs, val_pairs, val_data)
        result["export"] = export_best(trainer.model, run, config, record)
    return result
