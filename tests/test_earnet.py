"""HRNet-OCR (EAR-Net stage 1) and EAR-Net (stage 2): shapes at odd sizes, the multi-scale fusion formulas on
constant inputs, stage 2 from stage-1 weights, the error-map definition, the losses."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import random_images
from tests.model_test_case import check_export_parity, check_model
from tfseg.data.imageio import read_mask
from tfseg.losses import EARNetLoss, masked_cross_entropy, masked_mse
from tfseg.models.earnet import EARNet, error_map
from tfseg.models.hrnet import HRNET_CONFIGS, HRNetOCR


@pytest.fixture(scope="module")
def stage1():
    keras.utils.set_random_seed(0)
    return HRNetOCR("small", scales=(1.0, 0.5))


def test_odd_sizes_keep_their_shape(stage1):
    x = random_images(1, 584, 565)  # DRIVE: no power-of-two divisibility anywhere
    assert stage1(x, training=False)["pred"].shape == (1, 584, 565, 2)
    for training in (True, False):  # one output structure in both modes
        outputs = stage1(random_images(2, 75, 61), training=training)
        assert set(outputs) == {"pred", "aux", "pred_05", "pred_10"}
        assert all(v.shape == (2, 75, 61, 2) for v in outputs.values())


def test_small_config_is_w18_small_v1(stage1):
    config = HRNET_CONFIGS["small"]
    assert [channels for _, _, channels in config.stages][-1] == (16, 32, 64, 128)
    assert all(modules == 1 and blocks == 2 for modules, blocks, _ in config.stages)
    assert 1.2e6 < stage1.net.count_params() < 2.0e6


class ConstantNet:
    """Stands in for the single-scale network: at input height h (16 at scale 1) every map is constant,
    logits `h / 16` (so 2, 1, 0.5 at scales 2, 1, 0.5), scale attention `h / 64`, error attention 0.5."""

    def __call__(self, images, training=False):
        h, w = images.shape[1], images.shape[2]
        fill = lambda value, channels: ops.full((images.shape[0], h, w, channels), value)
        return {
            "cls": fill(h / 16, 2),
            "aux": fill(h / 8, 2),
            "scale_attention": fill(h / 64, 1),
            "error_attention": fill(0.5, 1),
        }


def constant_model(model_class, scales):
    model = model_class("small", scales=scales)
    object.__setattr__(model, "net", ConstantNet())  # bypass Keras' layer tracking for the stand-in
    return model


def test_inference_fusion_high_to_low():
    pred = constant_model(HRNetOCR, (2.0, 1.0, 0.5))(np.zeros((1, 16, 16, 3), "float32"))["pred"]
    p2, p1, p05, a1, a05 = 2.0, 1.0, 0.5, 16 / 64, 8 / 64
    expected = p2
    expected = a1 * p1 + (1 - a1) * expected  # P = a_1 p_1 + (1 - a_1) down(P)
    expected = a05 * p05 + (1 - a05) * expected  # P = up(a_0.5 p_0.5) + (1 - up(a_0.5)) P
    np.testing.assert_allclose(ops.convert_to_numpy(pred), expected, rtol=1e-6)


def test_training_fusion_of_two_scales():
    out = constant_model(HRNetOCR, (1.0,))(np.zeros((1, 16, 16, 3), "float32"), training=True)
    a05 = 8 / 64
    np.testing.assert_allclose(ops.convert_to_numpy(out["pred"]), a05 * 0.5 + (1 - a05) * 1.0, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out["aux"]), a05 * 1.0 + (1 - a05) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out["pred_05"]), 0.5)


def test_error_attention_modulates_fused_logits_in_training_and_each_scale_at_inference():
    model = constant_model(EARNet, (1.0, 0.5))
    factor = 0.5 + 0.5 * 0.5  # lambda + mu * A
    out = model(np.zeros((1, 16, 16, 3), "float32"), training=True)
    a05 = 8 / 64
    np.testing.assert_allclose(ops.convert_to_numpy(out["pred"]), (a05 * 0.5 + (1 - a05) * 1.0) * factor, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(out["pred_10"]), 1.0)  # single-scale terms unmodulated
    pred = model(np.zeros((1, 16, 16, 3), "float32"))["pred"]
    np.testing.assert_allclose(ops.convert_to_numpy(pred), a05 * 0.5 * factor + (1 - a05) * 1.0 * factor, rtol=1e-6)


def test_stage2_starts_from_stage1_weights(stage1):
    stage2 = EARNet.from_stage1(stage1)
    assert stage2.scales == stage1.scales and isinstance(stage2, HRNetOCR) and "error_attention" in stage2.extra_heads
    for layer in stage1.net.layers:
        for a, b in zip(layer.get_weights(), stage2.net.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert stage2.net.get_layer("error_attn_out").weights  # the new head
    assert stage2.net.count_params() > stage1.net.count_params()
    out = stage2(random_images(1, 40, 36), training=True)
    assert out["error_attention"].shape == (1, 40, 36, 1)
    rebuilt = EARNet.from_config(stage2.get_config())
    assert rebuilt.get_config() == stage2.get_config()


def test_error_map_marks_false_positives_and_negatives():
    prediction = np.array([[0, 1], [1, 0]])
    truth = np.array([[0, 1], [0, 1]])
    assert error_map(prediction, truth).tolist() == [[0, 0], [1, 1]]
    assert error_map(prediction.astype(bool), truth.astype(bool)).dtype == np.uint8


def test_cross_entropy_ignores_the_ignore_label():
    logits = np.log(np.array([[[[0.8, 0.2], [0.3, 0.7]], [[0.5, 0.5], [0.9, 0.1]]]], "float32"))
    labels = np.array([[[0, 1], [255, 1]]])
    expected = -(np.log(0.8) + np.log(0.7) + np.log(0.1)) / 3
    assert float(masked_cross_entropy(labels, logits)[0]) == pytest.approx(expected, rel=1e-6)
    attention = np.array([[[[0.2], [0.9]], [[0.4], [0.0]]]], "float32")
    errors = np.array([[[0, 1], [255, 1]]])
    assert float(masked_mse(errors, attention)[0]) == pytest.approx((0.04 + 0.01 + 1.0) / 3, rel=1e-6)


def test_earnet_loss_weights():
    rng = np.random.default_rng(0)
    outputs = {k: rng.normal(size=(2, 6, 5, 2)).astype("float32") for k in ("pred", "aux", "pred_05", "pred_10")}
    outputs["error_attention"] = rng.random((2, 6, 5, 1)).astype("float32")
    labels, errors = rng.integers(0, 2, (2, 6, 5)), rng.integers(0, 2, (2, 6, 5))
    ce = {k: masked_cross_entropy(labels, outputs[k]) for k in outputs if k != "error_attention"}
    expected = ce["pred"] + 0.4 * ce["aux"] + 0.05 * (ce["pred_05"] + ce["pred_10"])
    np.testing.assert_allclose(EARNetLoss(reduction=None)(labels, outputs), expected, rtol=1e-6)
    np.testing.assert_allclose(
        EARNetLoss(reduction=None)({"labels": labels, "error_maps": errors}, outputs),
        expected + 0.5 * masked_mse(errors, outputs["error_attention"]),
        rtol=1e-6,
    )


def test_crop_padding_is_ignored_in_labels_and_error_maps():
    import tensorflow as tf

    from tfseg.data.vessels import augment_sample
    from tfseg.preprocessing import IGNORE_LABEL

    labels, errors = tf.ones([10, 12], tf.int32), tf.zeros([10, 12], tf.int32)
    image, labels, errors = augment_sample(
        tf.fill([10, 12, 3], 100.0), [labels, errors], tf.constant([1, 2], tf.int64), 32, "torch", (1.0, 1.0), 0.0, 0.0
    )
    assert image.shape == (32, 32, 3) and labels.shape == errors.shape == (32, 32)
    assert (labels.numpy() == 1).sum() == (errors.numpy() == 0).sum() == 120  # the 10x12 image, all of it
    assert set(np.unique(labels)) == {1, IGNORE_LABEL} and set(np.unique(errors)) == {0, IGNORE_LABEL}
    np.testing.assert_array_equal(labels.numpy() == IGNORE_LABEL, errors.numpy() == IGNORE_LABEL)


def test_kfold_validates_every_image_once():
    from tfseg.data.vessels import kfold_split

    folds = [kfold_split(list(range(20)), 4, k)[1] for k in range(4)]
    assert sorted(sum(folds, [])) == list(range(20)) and all(len(f) == 5 for f in folds)


def test_a_few_steps_of_each_stage_lower_the_loss(tmp_path):
    from tfseg.data.layouts import find_dataset
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.data.vessels import make_vessel_dataset
    from tfseg.training.earnet import EARNetConfig, EARNetTrainer, write_error_maps
    from tfseg.training.strategy import make_strategy

    pairs = find_dataset(write_vessel_dataset(tmp_path / "vessels", 4, size=(64, 64), seed=0))
    config = EARNetConfig(data_path="", crop=64, batch_size=2, stage2_lr=1e-3, scales=(1.0,))  # Adam 1e-3
    strategy = make_strategy("default")
    keras.utils.set_random_seed(0)
    first = EARNetTrainer(config, strategy, 1, total_steps=100)
    images, labels = next(iter(make_vessel_dataset(pairs, "torch", 2, 64, True)))
    # eagerly: the step code without its ~50 s trace (train_earnet.py runs it traced)
    losses = [float(first._distributed_step(images, labels)) for _ in range(4)]
    assert losses[-1] < losses[0], losses
    first.model.save_weights(tmp_path / "stage1.weights.h5")
    error_maps = write_error_maps(first, pairs, tmp_path / "errors", progress=False)
    assert [os.path.basename(p) for p in error_maps] == [f"{p.stem}.png" for p in pairs]
    with open(tmp_path / "errors.json") as f:  # the error-pixel fraction, over the FOV, read back from the maps
        summary = json.load(f)
    fovs = [read_mask(pair.fov) for pair in pairs]
    maps = [read_mask(path) for path in error_maps]
    assert summary["region"] == "FOV" and summary["images"] == 4
    assert summary["error_pixel_fraction"] == pytest.approx(
        sum(int(m[fov].sum()) for m, fov in zip(maps, fovs)) / sum(int(fov.sum()) for fov in fovs)
    )
    missed = sum(int((m & read_mask(pair.mask))[fov].sum()) for m, fov, pair in zip(maps, fovs, pairs))
    vessels = sum(int(read_mask(pair.mask)[fov].sum()) for fov, pair in zip(fovs, pairs))
    assert summary["missed_vessel_fraction"] == pytest.approx(missed / vessels)
    assert summary["per_image"][pairs[0].stem] == pytest.approx(maps[0][fovs[0]].mean())

    second = EARNetTrainer(config, strategy, 2, 100, str(tmp_path / "stage1.weights.h5"), error_maps)
    batch = next(iter(make_vessel_dataset(pairs, "torch", 2, 64, True, error_maps)))
    assert len(batch) == 3  # images, labels, error maps
    losses = [float(second._distributed_step(*batch)) for _ in range(4)]
    assert losses[-1] < losses[0], losses


def test_out_of_fold_error_maps_come_from_models_that_never_saw_the_image(tmp_path, monkeypatch):
    """--error_maps out_of_fold: each training image's map is predicted by a stage-1 model trained on the other
    folds; the maps cover every image, in order, and their summary says how they were made. The folds' training
    (run_training, tested elsewhere) is replaced by untrained models here."""
    from tfseg.data.layouts import find_dataset
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.training import earnet
    from tfseg.training.strategy import make_strategy

    pairs = find_dataset(write_vessel_dataset(tmp_path / "v", 5, size=(48, 40), seed=0))
    train, val = pairs[:4], pairs[4:]
    config = earnet.EARNetConfig(data_path="", scales=(1.0,), error_maps="out_of_fold", error_folds=2)
    fitted, predicted = [], []
    real_predict = earnet.predict_error_maps

    def train_stage(config, strategy, stage, run_dir, train, val, **options):
        assert stage == 1 and os.path.basename(run_dir) == f"fold{len(fitted)}"
        trainer = earnet.EARNetTrainer(config, strategy, 1, 1)
        fitted.append((trainer, {pair.stem for pair in train}))
        return {"trainer": trainer}

    def predict_error_maps(trainer, pairs, folder, progress=True):
        predicted.append((trainer, {pair.stem for pair in pairs}))
        return real_predict(trainer, pairs, folder, progress)

    monkeypatch.setattr(earnet, "train_stage", train_stage)
    monkeypatch.setattr(earnet, "predict_error_maps", predict_error_maps)
    folder = tmp_path / "run" / "error_maps"
    paths = earnet.write_out_of_fold_error_maps(
        config, make_strategy("default"), str(tmp_path / "run"), train, val, str(folder), progress=False
    )
    stems = {pair.stem for pair in train}
    assert len(fitted) == len(predicted) == 2
    for (fold_model, fit), (predictor, held) in zip(fitted, predicted):
        assert predictor is fold_model and held and fit == stems - held  # never its own training images
    assert set.union(*(held for _, held in predicted)) == stems
    assert paths == [str(folder / f"{pair.stem}.png") for pair in train] and all(map(os.path.isfile, paths))
    with open(f"{folder}.json") as f:
        summary = json.load(f)
    assert (summary["source"], summary["error_folds"], summary["images"]) == ("out_of_fold", 2, 4)
    assert set(summary["per_image"]) == stems


def test_stage1_is_released_before_stage2_is_built(tmp_path, monkeypatch):
    """The stage-1 trainer (model, optimizer, traced steps) is gone once its error maps are written: held through
    stage 2, it took the W48 official recipe's stage-2 export past a 24 GB machine's memory."""
    import types
    import weakref

    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.training import earnet
    from tfseg.training.strategy import make_strategy

    class Trainer:  # a stand-in that, like a Keras model, is part of a reference cycle
        def __init__(self):
            self.cycle = self

    stage1, run = [], types.SimpleNamespace(chief=False, best_weights="stage1.weights.h5")

    def train_stage(config, strategy, stage, run_dir, train, val, *args, **options):
        if stage == 1:
            trainer = Trainer()
            stage1.append(weakref.ref(trainer))
            return {"trainer": trainer, "run": run}
        assert stage1[0]() is None, "stage 1's trainer is still held while stage 2 is built"
        return {"trainer": Trainer(), "run": run}

    monkeypatch.setattr(earnet, "train_stage", train_stage)
    monkeypatch.setattr(earnet, "write_error_maps", lambda trainer, pairs, folder, progress: [])
    monkeypatch.setattr(earnet, "_finish", lambda result, config, last: {})
    data = write_vessel_dataset(tmp_path / "v", 4, size=(48, 40), seed=0)
    config = earnet.EARNetConfig(data_path=str(data), val_fraction=0.25, logdir=str(tmp_path / "runs"))
    results = earnet._train_stages(config, make_strategy("default"), str(tmp_path / "run"), (1, 2), False, False, None)
    assert stage1 and set(results) >= {"stage1", "stage2"}


def test_out_of_fold_error_maps_are_refused_before_any_training(tmp_path):
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.training.earnet import EARNetConfig, check_start, train_earnet

    data = write_vessel_dataset(tmp_path / "v", 4, size=(48, 40), seed=0)  # 3 training images, 1 validation
    config = EARNetConfig(
        data_path=str(data), val_fraction=0.25, logdir=str(tmp_path / "runs"), error_maps="out_of_fold"
    )
    with pytest.raises(ValueError, match="error_folds must be at most 3"):
        train_earnet(dataclasses.replace(config, error_folds=4), progress=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="error_folds must be at least 2"):
        dataclasses.replace(config, error_folds=1)
    # stage 2 alone: its --init_weights are stage 1's, so the fold models need the recipe's own start
    official = EARNetConfig(data_path="", recipe="official", init_weights="stage1.weights.h5")
    check_start(official, (2,))
    with pytest.raises(ValueError, match="--backbone_weights"):
        check_start(dataclasses.replace(official, error_maps="out_of_fold"), (2,))


def test_training_and_eval_batches_are_normalised_alike(tmp_path):
    from tfseg.data.layouts import find_dataset
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.data.vessels import make_vessel_dataset

    pairs = find_dataset(write_vessel_dataset(tmp_path / "v", 2, size=(40, 40)))
    ((train_images, _),) = make_vessel_dataset(pairs, "torch", 2, 40, True, scale_range=(1.0, 1.0), jitter=0.0).take(1)
    eval_images, eval_labels = next(iter(make_vessel_dataset(pairs, "torch", 1, None, False)))
    assert eval_images.shape == (1, 40, 40, 3) and eval_labels.shape == (1, 40, 40)
    for images in (train_images, eval_images):  # ImageNet mean/std: black is (0 - 0.485) / 0.229 = -2.1
        assert -2.2 < float(np.min(images)) and float(np.max(images)) < 2.7


def test_repeated_vessel_crops_are_new_each_pass(tmp_path):
    from tfseg.data.layouts import find_dataset
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.data.vessels import make_vessel_dataset

    pairs = find_dataset(write_vessel_dataset(tmp_path / "v", 2, size=(48, 48)))
    dataset = make_vessel_dataset(pairs, "torch", 2, 32, True, repeat=True)
    first, second = [labels.numpy() for _, labels in dataset.take(2)]
    assert not np.array_equal(first, second)  # a plain .repeat() would replay the same crops


def test_cli_trains_both_stages_resumes_exports_and_evaluates(tmp_path, capsys):
    """train_earnet.py --stage all on a DRIVE-layout folder, then --resume of stage 2 with more epochs, then the
    stage-2 export (SavedModel == Keras inference) scored on the test split. In-process with tf.functions run
    eagerly: the same code without ~2 min of tracing."""
    import json

    import tensorflow as tf

    import train_earnet
    from tests.test_training import read_log
    from tfseg.data.synthetic import write_vessel_dataset
    from tfseg.evaluation import evaluate
    from tfseg.inference import Predictor

    for split, n in (("training", 4), ("test", 2)):
        write_vessel_dataset(tmp_path / "DRIVE" / split, n, size=(112, 100), seed=len(split), layout="drive")
    run_dir = tmp_path / "runs" / "run"
    common = ["--steps_per_epoch", "1", "--quiet", "--no_export"]
    tf.config.run_functions_eagerly(True)
    try:
        train_earnet.main(
            [
                "--data_path",
                str(tmp_path / "DRIVE"),
                "--dataset",
                "drive",
                "--epochs",
                "1",
                "--stage2_epochs",
                "1",
                "--batchsize",
                "2",
                "--crop",
                "96",
                "--val_split",
                "0.25",
                "--scales",
                "1.0",
                "0.5",
                "--norm",
                "batch",  # the export must keep BN in inference mode
                "--logdir",
                str(tmp_path / "runs"),
                "--name",
                "run",
                *common,
            ]
        )
        first = capsys.readouterr().out
        assert "| stage1 (best validation epoch) |" in first and "| stage2 (best validation epoch) |" in first
        assert f"error maps: {run_dir / 'error_maps'} (" in first
        for stage in ("stage1", "stage2"):  # --no_export: the presets, for export_model.py in a process of its own
            assert f"{stage} preset: {run_dir / stage / 'preset'} (export: python export_model.py" in first
            assert (run_dir / stage / "preset" / "model.weights.h5").is_file()
            assert not (run_dir / stage / "export").exists()
        maps = os.listdir(run_dir / "error_maps")  # named like the images, of the 3 training (not validation) ones
        assert len(maps) == 3 and all(name.endswith("_training.png") for name in maps)
        # stage 2 alone goes on from its checkpoint, from stage 1's best weights and error maps written again
        train_earnet.main(["--resume", str(run_dir), "--stage", "2", "--stage2_epochs", "2", "--quiet"])
    finally:
        tf.config.run_functions_eagerly(False)
    assert [row["epoch"] for row in read_log(run_dir / "stage1")] == ["1"]
    assert [row["epoch"] for row in read_log(run_dir / "stage2")] == ["1", "2"]
    reader = tf.train.load_checkpoint(str(run_dir / "stage2" / "checkpoints"))
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 2  # resumed, not redone
    with open(run_dir / "stage2" / "args.json") as f:
        assert json.load(f)["scales"] == [1.0, 0.5]

    export = run_dir / "stage2" / "export"
    model = keras.models.load_model(export / "model.keras")
    assert type(model) is EARNet and model.scales == (1.0, 0.5)
    served = tf.saved_model.load(str(export / "savedmodel"))
    x = random_images(1, 37, 45)
    check_export_parity(model, x, export)
    assert float(np.max(np.abs(served.serve(tf.constant(x))["pred"] - model(x, training=False)["pred"]))) < 1e-4
    assert float(np.max(np.abs(model(x, training=True)["pred"] - model(x, training=False)["pred"]))) > 1e-3

    results = evaluate(
        str(tmp_path / "DRIVE" / "test"),
        str(tmp_path / "eval"),
        task="vessel",
        predictor=Predictor.load(str(export / "savedmodel")),
        progress=False,
        plots=False,
    )
    assert sorted((run_dir / "test_ids.txt").read_text().split()) == ["21_training", "22_training"]
    assert f"--data_path {tmp_path / 'DRIVE' / 'test'}" in capsys.readouterr().out  # DRIVE: the test/ folder
    (scores,) = results["results"].values()
    assert 0.0 <= scores["AUC"] <= 1.0 and scores["n_images"] == 2


def test_region_transforms_have_batchnorm_only_when_asked():
    for region_batchnorm in (False, True):
        model = HRNetOCR("small", region_batchnorm=region_batchnorm)
        attention = model.net.get_layer("ocr_object_attention")
        region_layers = [*attention.key, attention.value, attention.up]
        region_layers.append(model.net.get_layer("ocr_distri_fuse"))  # fed by the context
        assert all(hasattr(layer, "bn") == region_batchnorm for layer in region_layers)
        assert all(hasattr(layer, "bn") for layer in attention.query)  # pixel queries keep BN either way
        assert HRNetOCR.from_config(model.get_config()).region_batchnorm == region_batchnorm


@pytest.mark.parametrize("region_batchnorm", [False, True])
def test_object_attention_is_built_from_shapes_alone(region_batchnorm):
    """As PraNet's blocks (tests/test_models.py): `build` from the shapes creates the weights a call creates,
    so constructing HRNet-OCR does not trace the block's `call` on symbolic inputs."""
    from tfseg.models.hrnet import ObjectAttention, SpatialGather

    built, called = (ObjectAttention(8, 16, region_batchnorm, name="ocr") for _ in range(2))
    built.build((None, None, None, 12), (None, 2, 12))
    features, logits = np.ones((1, 5, 6, 12), "float32"), np.zeros((1, 5, 6, 2), "float32")
    regions = SpatialGather()(features, logits)
    assert tuple(regions.shape) == SpatialGather().compute_output_shape(features.shape, logits.shape) == (1, 2, 12)
    assert tuple(called(features, regions).shape) == built.compute_output_shape(features.shape, regions.shape)
    assert {w.path: w.shape for w in built.weights} == {w.path: w.shape for w in called.weights}


def test_group_norm_makes_each_sample_independent_of_its_batch():
    model = HRNetOCR("small", scales=(1.0,), norm="group")
    norms = [layer for layer in model.net._flatten_layers() if isinstance(layer, keras.layers.GroupNormalization)]
    assert norms and not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.net._flatten_layers()
    )
    x = random_images(2, 64, 48)
    # the aux logits: no dropout on their path
    alone, together = model.net(x[:1], training=True)["aux"], model.net(x, training=True)["aux"][:1]
    assert np.allclose(alone, together, atol=1e-4)  # BatchNorm would mix the two samples' statistics
    assert np.allclose(model.net(x, training=False)["aux"], model.net(x, training=True)["aux"], atol=1e-4)
    restored = HRNetOCR.from_config(model.get_config())
    assert restored.norm == "group" and EARNet.from_stage1(model).norm == "group"


@pytest.mark.parametrize("family", [HRNetOCR, EARNet])
def test_hrnet_ocr_and_earnet_pass_the_model_checks(family, tmp_path):
    keras.utils.set_random_seed(0)
    model = family("small", scales=(1.0, 0.5), norm="group")
    check_model(model, random_images(1, 48, 40), tmp_path)


def test_trainer_models_take_weights_files_before_any_step(tmp_path):
    """A resumed run whose stage 1 is complete trains no step there, then loads the stage's best weights: the
    subclassed model must be built already (it failed with "loading weights into a model that has not yet been
    built")."""
    from tfseg.training.earnet import EARNetConfig, EARNetTrainer
    from tfseg.training.strategy import make_strategy

    config = EARNetConfig(data_path="unused", scales=(1.0,), norm="group")
    stage1 = EARNetTrainer(config, make_strategy("default"), 1, total_steps=1)
    stage1.model.save_weights(tmp_path / "stage1.weights.h5")
    stage2 = EARNetTrainer(config, make_strategy("default"), 2, 1, stage1_weights=str(tmp_path / "stage1.weights.h5"))
    stage1.model.load_weights(tmp_path / "stage1.weights.h5")
    stage2.model.save_weights(tmp_path / "stage2.weights.h5")
    stage2.model.load_weights(tmp_path / "stage2.weights.h5")
