"""EAR-Net training in two stages on the shared loop (`run_training`): stage 1 trains HRNet-OCR, its best
checkpoint on the validation split (never the test set; the official code picked it by test sensitivity) writes
the error maps of the training images, stage 2 fine-tunes EARNet from it with the error-attention loss.

Two recipes (`RECIPES`) give the defaults of the settings they cover: "cpu" trains from scratch on a CPU,
"official" is the EAR-Net recipe (NVIDIA semantic-segmentation fork, scripts/train_{stare,drive}.yml). Keras' SGD
applies weight decay decoupled from the gradient (torch adds it to the gradient): the same fixed point, slightly
other paths.
"""

import dataclasses
import gc
import logging
import os

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfseg import files, metrics
from tfseg.data import layouts, sources, vessels
from tfseg.data.duplicates import THRESHOLDS, check_near_duplicates
from tfseg.data.imageio import read_mask, write_png
from tfseg.evaluation import vessel as vessel_metrics
from tfseg.export import check_export_folder
from tfseg.losses import CRITERIA, EARNetLoss
from tfseg.models.earnet import EARNet, error_map
from tfseg.models.hrnet import IMAGENET_CHECKPOINTS, HRNetOCR, check_trunk_weights
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.loop import (
    SegmentationTrainer,
    TrainingConfig,
    TrainingInterrupted,
    check_callbacks,
    epoch_steps,
    export_best,
    open_run,
    run_training,
    training_record,
)
from tfseg.training.optimizers import global_batch_clipping
from tfseg.training.strategy import is_chief, make_strategy, task_id

log = logging.getLogger(__name__)
CHASE_TRAIN = 20  # CHASE_DB1's usual split: the first 20 images train, the last 8 test
DATASETS = ("drive", "stare", "chase", "folder")
TEST_IDS = "test_ids.txt"  # in the run folder: the held-out test images of the split protocol
ERROR_MAPS = ("in_sample", "out_of_fold")  # which stage-1 model predicts a training image's error map


NO_INIT = "none"  # backbone_weights: train stage 1 from scratch although the recipe starts from ImageNet weights
RECIPES = {
    # trains from scratch on a CPU (STARE in docs/BENCHMARKS.md); lr (stage2_lr) left out: 1e-3 adam or 1e-2 sgd
    # (lr / 10), as before recipes existed
    "cpu": {
        "config": "small",
        "norm": "group",  # with batches of 2, BN's inference statistics fail
        "optimizer": "adam",
        "momentum": 0.9,
        "poly_power": 2.0,
        "weight_decay": 4e-5,
        "crop": 384,  # smaller crops leave the 1/32 branch a few pixels: its batch statistics get noisy
        "loss": "ce",
        "batch_size": 2,
        "steps_per_epoch": 50,  # vessel sets are 20-40 images: an epoch is this many steps
        "epochs": 12,
        "stage2_epochs": 6,
    },
    # EAR-Net's scripts/train_{stare,drive}.yml (stage 2) on NVIDIA's train.py defaults; stage 1 has no script
    # of its own there (README: the same with arch ocrnet.HRNet_Mscale); see README, "Recipes"
    "official": {
        "config": "w48",  # HRNetV2-W48 (HRNET_CHECKPOINT hrnetv2_w48_imagenet_pretrained.pth)
        "norm": "batch",  # syncbn: true
        "optimizer": "sgd",  # train.py default
        "momentum": 0.9,  # train.py default
        "lr": 1e-2,  # issue 17; the stored scripts give stage 1 no HRNet value (older script and NVIDIA's: 5e-3)
        "stage2_lr": 1e-3,  # lr: 0.001
        "poly_power": 2.0,  # poly_exp: 2
        "weight_decay": 4e-5,  # weight_decay: 0.00004
        "crop": 448,  # crop_size: "448,448"
        "loss": "rmi",  # rmi_loss: true
        "batch_size": 4,  # bs_trn: 1 on each of 4 GPUs (nproc_per_node=4)
        "steps_per_epoch": 0,  # an epoch is one pass over the training images
        "epochs": 100,  # max_epoch of the older first-stage script code/scripts/train_stare.yml
        "stage2_epochs": 15,  # max_epoch: 15
    },
}
RECIPE_FIELDS = tuple(RECIPES["official"])  # the settings a recipe covers


@dataclasses.dataclass
class EARNetConfig(TrainingConfig):
    """The settings of `RECIPE_FIELDS` left None take the recipe's value (`RECIPES[recipe]`), so explicit ones
    override it: `EARNetConfig(data_path, recipe="official", crop=384)`. The official recipe starts stage 1 from
    the trunk's ImageNet weights (`backbone_weights`, or `NO_INIT`). `backbone_weights`: an `hrnet_trunk`
    .weights.h5 (convert_weights.py --model hrnet_w48 | hrnet_w18 | hrnet_w18_small) loaded into the trunk before
    stage 1; unused with `init_weights`: a whole HRNet-OCR's weights stage 1 starts from, or, when stage 2 is
    trained alone, the stage-1 weights it starts from. `export_dir`: where the last stage's model goes (default
    `stage{1,2}/export`)."""

    epochs: int = None  # stage 1
    lr: float = None  # stage 1
    batch_size: int = None
    steps_per_epoch: int = None  # 0: one pass over the training images
    val_fraction: float = 0.2  # of the training images, for checkpoint selection
    gclip: float = 0.0  # the official recipe does not clip
    recipe: str = "cpu"  # cpu | official
    dataset: str = "folder"  # drive | stare | chase | folder: which split protocol
    config: str = None  # small | w18 | w48
    backbone_weights: str = None  # the trunk's start: an hrnet_trunk .weights.h5 of `config`, or NO_INIT
    stage2_epochs: int = None
    optimizer: str = None  # adam | sgd
    stage2_lr: float = None
    momentum: float = None  # sgd
    weight_decay: float = None
    poly_power: float = None
    crop: int = None
    scale_range: tuple = (0.5, 2.0)  # random scale of the training images before cropping (official 0.5-2.0)
    folds: int = 4  # STARE: k-fold cross-validation
    fold: int = 0
    scales: tuple = (2.0, 1.0, 0.5)  # inference scales (validation, error maps, export), as the paper
    modulation: tuple = (0.5, 0.5)  # lambda, mu
    norm: str = None  # group | batch (the original)
    region_batchnorm: bool = False  # True: BN on the OCR object-region vectors, as the original (see HRNetOCR)
    loss: str = None  # ce | rmi: the criterion of both stages (EARNetLoss)
    error_maps: str = "in_sample"  # ERROR_MAPS: stage 1's best model (the original) or one that never saw the image
    error_folds: int = 3  # out_of_fold: this many stage-1 models, each trained on the other folds

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.norm not in ("group", "batch"):
            raise ValueError(f"norm must be group or batch, got {self.norm!r}")
        if self.loss not in CRITERIA:
            raise ValueError(f"loss must be one of {tuple(CRITERIA)}, got {self.loss!r}")
        if self.error_maps not in ERROR_MAPS:
            raise ValueError(f"error_maps must be one of {ERROR_MAPS}, got {self.error_maps!r}")
        if self.error_folds < 2:
            raise ValueError(f"error_folds must be at least 2, got {self.error_folds}")
        if self.lr is None:
            self.lr = 1e-3 if self.optimizer == "adam" else 1e-2
        if self.stage2_lr is None:
            self.stage2_lr = self.lr / 10

    @property
    def start_weights(self):
        """`init_weights`, None for `NO_INIT` (the official recipe's opt-out before `backbone_weights`)."""
        return None if self.init_weights == NO_INIT else self.init_weights

    @property
    def trunk_weights(self):
        """`backbone_weights` when stage 1 loads them (no `init_weights`), None for `NO_INIT`."""
        return None if self.backbone_weights == NO_INIT or self.start_weights else self.backbone_weights

    def recipe_card(self):
        """The recipe's name, the values of the settings it covers and those changed from the recipe's."""
        settings = {name: getattr(self, name) for name in RECIPE_FIELDS}
        recipe = RECIPES[self.recipe]
        changed = {name: value for name, value in settings.items() if name in recipe and value != recipe[name]}
        return {
            "name": self.recipe,
            "settings": settings,
            "changed": changed,
            "backbone_weights": self.backbone_weights,
            "init_weights": self.init_weights,
        }


def check_start(config, stages):
    """Before any run folder: the official recipe trains stage 1 from the HRNet-W48 ImageNet weights, so it refuses
    to start without them (`backbone_weights`), the explicit `NO_INIT` or a whole model's `init_weights`; trunk
    weights stage 1 would load must fit its trunk (`check_trunk_weights`). The out-of-fold error maps' stage-1
    models start as stage 1 does (`fold_config`), never from stage-1 weights given to stage 2 alone."""
    starts = [config] if 1 in stages else []
    if config.error_maps == "out_of_fold":
        starts.append(fold_config(config, stages))
    for first in starts:
        if first.recipe == "official" and first.init_weights is None and first.backbone_weights is None:
            kind, checkpoint = IMAGENET_CHECKPOINTS[first.config]
            raise ValueError(
                f"--recipe official starts from the HRNet ImageNet weights: convert {checkpoint} with "
                f"convert_weights.py --model {kind} and give the file as --backbone_weights FILE.weights.h5, or "
                f"--backbone_weights {NO_INIT} to train from scratch"
            )
        if first.trunk_weights:
            check_trunk_weights(first.trunk_weights, first.config, first.norm)


def fold_config(config, stages):
    """The config of the out-of-fold stage-1 models: stage 1's start (`init_weights` only when stage 1 is trained
    here: trained alone, stage 2's `init_weights` are stage-1 weights that saw every training image), no export."""
    return dataclasses.replace(config, init_weights=config.init_weights if 1 in stages else None, export=False)


def make_optimizer(config, stage, total_steps):
    """Adam or SGD (momentum) with weight decay and the poly schedule `lr (1 - step / total_steps)^power` of
    the stage's lr, `gclip` as in `global_batch_clipping`."""
    lr = config.lr if stage == 1 else config.stage2_lr
    schedule = keras.optimizers.schedules.PolynomialDecay(lr, max(total_steps, 1), 0.0, config.poly_power)
    clip = {"clipvalue": config.gclip or None, "weight_decay": config.weight_decay}
    if config.optimizer == "adam":
        return global_batch_clipping(keras.optimizers.Adam)(schedule, **clip)
    return global_batch_clipping(keras.optimizers.SGD)(schedule, momentum=config.momentum, **clip)


def split_pairs(config):
    """(train, val, test) pairs by the dataset's protocol; val is a seeded part of the training images."""
    if config.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {config.dataset!r}")
    root = config.data_path
    if config.dataset == "drive":
        pairs, test = (
            layouts.find_dataset(os.path.join(root, "training")),
            layouts.find_dataset(os.path.join(root, "test")),
        )
    elif config.dataset == "chase":
        everything = layouts.find_dataset(root)
        pairs, test = everything[:CHASE_TRAIN], everything[CHASE_TRAIN:]
    elif config.dataset == "stare":
        pairs, test = vessels.kfold_split(layouts.find_dataset(root), config.folds, config.fold, config.seed)
    else:
        pairs, test = layouts.find_dataset(root), []
    train, val = sources.split_pairs(pairs, config.val_fraction, config.seed)
    return train, val, test


class EARNetTrainer(SegmentationTrainer):
    """Stage 1 (HRNetOCR) or stage 2 (EARNet from `stage1_weights`, with `error_maps` per training pair)."""

    score_name = "val_F1"
    validation_protocol = (
        "pooled Acc, Se, Sp, F1 (at 0.5) and AUC (tfseg.evaluation.vessel) of the multi-scale prediction on the full "
        "validation images"
    )

    def __init__(self, config, strategy, stage, total_steps, stage1_weights=None, error_maps=None):
        self.stage, self.total_steps = stage, total_steps
        self.stage1_weights, self.error_maps = stage1_weights, error_maps
        self.loss_fn = EARNetLoss(criterion=config.loss)
        super().__init__(config, strategy)
        self._predict = tf.function(lambda x: self.model(x, training=False)["pred"], reduce_retracing=True)

    def build_model(self):
        c = self.config
        stage1 = built(HRNetOCR(c.config, scales=c.scales, region_batchnorm=c.region_batchnorm, norm=c.norm))
        start = c.start_weights if self.stage == 1 else self.stage1_weights
        if start:
            stage1.load_weights(start)
        elif self.stage == 1 and c.trunk_weights:
            stage1.load_trunk_weights(c.trunk_weights)  # ImageNet trunk, new heads
        return stage1 if self.stage == 1 else built(EARNet.from_stage1(stage1, c.modulation))

    def make_optimizer(self):
        return make_optimizer(self.config, self.stage, self.total_steps)

    def compile_metrics(self):
        return [
            metrics.Sensitivity(from_logits=True),
            metrics.Specificity(from_logits=True),
            metrics.F1(from_logits=True),
        ]

    def replica_loss(self, images, labels, errors=None):
        target = labels if errors is None else {"labels": labels, "error_maps": errors}
        return self.loss_fn.call(target, self.model(images, training=True))  # per image

    def train_dataset(self, pairs, epoch):
        c = self.config
        fn = lambda ctx: vessels.make_vessel_dataset(
            pairs,
            self.model.normalization,
            c.batch_size,
            c.crop,
            True,
            self.error_maps,
            seed=c.seed + epoch,
            input_context=ctx,
            scale_range=c.scale_range,
            repeat=True,
        )
        return self.strategy.distribute_datasets_from_function(fn)

    def probabilities(self, images):
        return tf.nn.softmax(self._predict(images))[..., 1].numpy()

    def validation_maps(self, dataset):
        """The multi-scale vessel probability and the vessel mask (label 1) of each full validation image."""
        for images, labels in dataset:
            yield self.probabilities(images)[0], labels.numpy()[0] == 1

    def validate(self, dataset):
        """Pooled Acc, Se, Sp, F1 and AUC of the multi-scale prediction on the full validation images."""
        scores = [
            vessel_metrics.score_image(self.probabilities(images)[0], labels.numpy()[0] == 1)
            for images, labels in dataset
        ]
        results = vessel_metrics.summarize(scores)
        return {f"val_{key}": results[key] for key in ("F1", "Acc", "Se", "Sp", "AUC")}


def built(model):
    """The subclassed model, called once so that weights files load into it (a resumed stage that trains no
    step has never called it)."""
    model(tf.zeros((1, 64, 64, 3)))
    return model


def write_error_maps(trainer, pairs, folder, progress=True):
    """Stage-1 error maps of the training images at full size, multi-scale, no augmentation: `folder/<stem>.png`
    (0/255), and `<folder>.json` (`error_summary`). Returns the maps' paths in the order of `pairs`."""
    counts = predict_error_maps(trainer, pairs, folder, progress)
    write_error_summary(folder, pairs, counts, "in_sample")
    return [os.path.join(folder, f"{pair.stem}.png") for pair in pairs]


def write_out_of_fold_error_maps(config, strategy, root, train, val, folder, progress=True, resume=False):
    """Error maps predicted out of fold: the training images cut into `config.error_folds` folds
    (`vessels.kfold_split`), a stage-1 model trained on the other folds (`<root>/error_folds/fold<k>`, the stage-1
    recipe and `val` for its checkpoint) predicts each fold's maps, so that no map comes from a model that fitted
    its image (in sample, a stage 1 that fits its training images leaves the maps nearly empty). Written like
    `write_error_maps`; returns the paths in the order of `train`."""
    counts = {}
    for fold in range(config.error_folds):
        fit, held = vessels.kfold_split(train, config.error_folds, fold, config.seed)
        log.info("Out-of-fold error maps: stage-1 model %d of %d on %d images", fold + 1, config.error_folds, len(fit))
        result = train_stage(
            config,
            strategy,
            1,
            os.path.join(root, "error_folds", f"fold{fold}"),
            fit,
            val,
            resume=resume,
            progress=progress,
        )
        counts.update(predict_error_maps(result["trainer"], held, folder, progress))
    write_error_summary(folder, train, counts, "out_of_fold", config.error_folds)
    return [os.path.join(folder, f"{pair.stem}.png") for pair in train]


def predict_error_maps(trainer, pairs, folder, progress=True):
    """`trainer`'s error maps of `pairs` (`error_map` of the multi-scale prediction at 0.5 = argmax) as
    `folder/<stem>.png`; returns the counts of `error_summary` by stem."""
    os.makedirs(folder, exist_ok=True)
    counts = {}
    dataset = vessels.make_vessel_dataset(pairs, trainer.model.normalization, 1, None, training=False)
    for pair, (images, _) in tqdm(
        zip(pairs, dataset), total=len(pairs), desc="error maps", disable=not progress, leave=False
    ):
        predicted = trainer.probabilities(images)[0] > 0.5  # = argmax of the two classes
        truth = read_mask(pair.mask)
        errors = error_map(predicted, truth)
        write_png(os.path.join(folder, f"{pair.stem}.png"), errors * 255)
        region = read_mask(pair.fov) if pair.fov else np.ones_like(truth)
        counts[pair.stem] = {
            "errors": int(errors[region].sum()),
            "pixels": int(region.sum()),
            "missed": int((errors.astype(bool) & truth)[region].sum()),
            "vessels": int(truth[region].sum()),
        }
    return counts


def write_error_summary(folder, pairs, counts, source, folds=None):
    """`<folder>.json`: `error_summary` of the maps of `pairs`, with how they were predicted (`ERROR_MAPS`)."""
    summary = {"source": source, "error_folds": folds, **error_summary(counts, all(pair.fov for pair in pairs))}
    files.write_json(f"{folder}.json", summary)
    log.info(
        "Error maps (%s) of %d training images: %s of the %s pixels are errors; %s of the vessel pixels missed",
        source.replace("_", " "),
        len(pairs),
        percent(summary["error_pixel_fraction"]),
        summary["region"],
        percent(summary["missed_vessel_fraction"]),
    )


def percent(fraction):
    """`error_summary`'s fractions for people: "12.34 %", or "n/a" for None."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f} %"


def error_summary(counts, fov):
    """What the error maps give stage 2 to attend to (a stage 1 that fits its training images well leaves them
    nearly empty): the pooled fraction of error pixels, of vessel pixels missed (1 - Se on the training images)
    and of background pixels marked, over each image's FOV (`fov`) or whole image, and each image's fraction
    (None for no pixel to count)."""
    total = {key: sum(count[key] for count in counts.values()) for key in ("errors", "pixels", "missed", "vessels")}
    ratio = lambda a, b: a / b if b else None
    return {
        "region": "FOV" if fov else "image",
        "images": len(counts),
        "error_pixel_fraction": ratio(total["errors"], total["pixels"]),
        "missed_vessel_fraction": ratio(total["missed"], total["vessels"]),
        "false_positive_fraction": ratio(total["errors"] - total["missed"], total["pixels"] - total["vessels"]),
        "per_image": {stem: ratio(count["errors"], count["pixels"]) for stem, count in counts.items()},
    }


def resume_config(run_dir, **overrides):
    """The configuration of the EAR-Net run folder `run_dir` (`<logdir>/<name>`, as stored by its first stage),
    with the overrides that are not None."""
    stage = "stage1" if os.path.isfile(os.path.join(run_dir, "stage1", "args.json")) else "stage2"
    stored = RunDirectory(os.path.join(run_dir, stage)).read_args()
    stored.update(
        epochs=stored["epochs"] if stage == "stage1" else None,  # the recipe's
        norm=stored.get("norm", "batch"),  # runs stored before this setting existed
        logdir=os.path.dirname(os.path.abspath(run_dir)),
        run_name=os.path.basename(os.path.abspath(run_dir)),
    )
    return EARNetConfig.from_stored(stored, **overrides)


def train_stage(
    config,
    strategy,
    stage,
    run_dir,
    train,
    val,
    stage1_weights=None,
    error_maps=None,
    resume=False,
    progress=True,
    data_check=None,
    callbacks=None,
):
    """One stage in `run_dir` (continued from its last checkpoint when `resume` and it has begun): returns
    run_training's result plus the trainer. `data_check`: the start's near-duplicate record, kept in the folder;
    `callbacks`: Keras callbacks (see `run_training`)."""
    resume = run_dir if resume and os.path.isfile(os.path.join(run_dir, "args.json")) else None
    run = open_run(config, strategy, resume, run_dir)
    keras.utils.set_random_seed(config.seed)
    epochs = config.epochs if stage == 1 else config.stage2_epochs
    stage_config = dataclasses.replace(config, epochs=epochs)
    total_steps = epochs * epoch_steps(len(train), config)
    trainer = EARNetTrainer(stage_config, strategy, stage, total_steps, stage1_weights, error_maps)
    val_data = vessels.make_vessel_dataset(val, trainer.model.normalization, 1, None, training=False)
    result = run_training(trainer, run, train, val_data, len(val), resume, progress, data_check, callbacks)
    if os.path.isfile(run.best_weights):
        trainer.model.load_weights(run.best_weights)  # the stage's best on validation, for what follows
    return {**result, "trainer": trainer, "run": run, "train": train, "val": val, "val_data": val_data}


def train_earnet(config, stages=(1, 2), progress=True, resume=False, callbacks=None):
    """Stage 1, error maps, stage 2 (or one of them), each in its own run folder under
    `<logdir>/<run name>/stage{1,2}`, each exported; returns {"stage1": ..., "stage2": ..., "test": pairs}.
    `resume` (with `resume_config(folder)` as config): every stage goes on from its last checkpoint, a finished
    one is only reloaded; the error maps are written again from stage 1's best weights. One strategy serves the
    whole run. `callbacks`: Keras callbacks, called by each stage's loop (`run_training`)."""
    check_start(config, stages)
    check_callbacks(callbacks)
    root = config.run_folder(f"earnet_{config.config}")
    strategy = make_strategy(config.strategy)
    try:
        return _train_stages(config, strategy, root, stages, progress, resume, callbacks)
    except TrainingInterrupted as interrupt:  # the whole run resumes from its root folder
        raise TrainingInterrupted(root if interrupt.resume_path else None) from interrupt


def _train_stages(config, strategy, root, stages, progress, resume, callbacks):
    stage1_best = os.path.join(root, "stage1", "best.weights.h5")
    stage1_weights = stage1_best if resume and os.path.isfile(stage1_best) else config.start_weights
    train, val, test = split_pairs(config)
    sources.check_pairs(train + val)
    if 2 in stages and config.error_maps == "out_of_fold" and config.error_folds > len(train):
        raise ValueError(f"error_folds must be at most {len(train)} (the training images), got {config.error_folds}")
    # the test images too: held out as well
    data_check = check_near_duplicates(train, val + test, config.allow_near_duplicates, THRESHOLDS["vessel"])
    if is_chief(strategy) and config.export and config.export_dir:
        check_export_folder(config.export_dir)  # now, not after the training
    results = {"test": test}
    if 1 in stages:
        first = train_stage(
            config,
            strategy,
            1,
            os.path.join(root, "stage1"),
            train,
            val,
            resume=resume,
            progress=progress,
            data_check=data_check,
            callbacks=callbacks,
        )
        stage1_weights = first["run"].best_weights
        results["stage1"] = _finish(first, config, last=2 not in stages)
    if 2 in stages and stage1_weights is None:
        raise ValueError(
            "Stage 2 needs the stage-1 weights: train stage 1, or give its best.weights.h5 as --init_weights"
        )
    error_dir = results["error_maps"] = _error_folder(root, strategy)
    if 2 in stages and config.error_maps == "out_of_fold":
        error_paths = write_out_of_fold_error_maps(
            fold_config(config, stages), strategy, root, train, val, error_dir, progress, resume
        )
    else:  # in sample (stage 1 alone writes them too: their error-pixel fraction says what stage 2 would get)
        first_trainer = (
            first["trainer"]
            if 1 in stages
            else EARNetTrainer(dataclasses.replace(config, init_weights=stage1_weights), strategy, 1, 1)
        )
        error_paths = write_error_maps(first_trainer, train, error_dir, progress)
    last_run = first["run"] if 1 in stages else None
    if 2 in stages:
        first = first_trainer = None  # stage 1's model, optimizer and traced steps go before stage 2's are built
        gc.collect()
        second = train_stage(
            config,
            strategy,
            2,
            os.path.join(root, "stage2"),
            train,
            val,
            stage1_weights,
            error_paths,
            resume=resume,
            progress=progress,
            data_check=data_check,
            callbacks=callbacks,
        )
        results["stage2"] = _finish(second, config, last=True)
        last_run = second["run"]
    if test and last_run.chief:
        results["test_ids"] = write_ids(test, os.path.join(root, TEST_IDS))
    return results


def write_ids(pairs, path):
    """The pairs' stems, one a line (for `test_model.py --split_file`); returns `path`."""
    files.write_text(path, "".join(f"{pair.stem}\n" for pair in pairs))
    return path


def _error_folder(root, strategy):
    """`root/error_maps`; other multi-worker tasks write their identical copy to a folder of their own."""
    return os.path.join(root, "error_maps" if is_chief(strategy) else f".error_maps_worker{task_id(strategy)}")


def _finish(stage_result, config, last):
    """Best validation metrics (over the whole log, resumed epochs included) and, when asked, the export of the
    stage's best model (the last stage's to `config.export_dir` when given); its preset in any case."""
    trainer, run = stage_result["trainer"], stage_result["run"]
    log_rows = run.read_log() or stage_result["history"]
    best = max(log_rows, key=lambda row: row["val_F1"]) if log_rows else {}
    out = {"run_dir": run.path, "best": best}
    if run.chief:
        stage_config = config if last else dataclasses.replace(config, export_dir=None)
        record = training_record(trainer, run, stage_result["train"], stage_result["val"], stage_result["val_data"])
        record["recipe"] = config.recipe_card()
        out["export"] = export_best(trainer.model, run, stage_config, record)
    return out
