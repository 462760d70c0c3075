"""Keras-native training: `compile` / `fit` / `evaluate` / `predict` on tfseg's models, the same step as the training
loop (float64 parity), and Keras callbacks in the loop."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg import metrics
from tfseg.losses import EARNetLoss, StructureLoss
from tfseg.models import PraNet
from tfseg.models.earnet import EARNet
from tfseg.training import PraNetConfig
from tfseg.training.pranet import PraNetTrainer, load_pairs, train_pranet
from tfseg.training.strategy import make_strategy


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def tiny_config(polyp_dir, tmp_path, **overrides):
    settings = dict(backbone="mobilenetv2", backbone_weights=None, input_size=64, batch_size=4, lr=1e-3)
    return PraNetConfig(data_path=polyp_dir, logdir=str(tmp_path), export=False, **{**settings, **overrides})


def test_fit_and_the_loop_end_with_the_same_weights(polyp_dir, tmp_path, float64):
    """Two steps of PraNet's recipe (Adam, structure loss on the four maps, gclip) through `model.fit` and through
    the loop's step, from the same weights on the same batches: the same weights at the end."""
    config = tiny_config(polyp_dir, tmp_path, gclip=2e-3)  # small enough to clip most gradient elements
    train, _ = load_pairs(config)
    strategy = make_strategy("default")
    looped, fitted = PraNetTrainer(config, strategy), PraNetTrainer(config, strategy)
    fitted.model.set_weights(looped.model.get_weights())
    start = [v.numpy() for v in looped.model.trainable_variables]
    batches = iter(looped.train_dataset(train, epoch=0))
    data = [tuple(tf.cast(t, "float64") for t in next(batches)) for _ in range(2)]
    for images, masks in data:  # eagerly, both: the same code without two 1-min traces
        looped._distributed_step(images, masks, config.input_size)
    fitted.model.compile(**fitted.compile_arguments(), run_eagerly=True)
    dataset = tf.data.Dataset.from_tensor_slices(tuple(tf.stack(t) for t in zip(*data)))
    history = fitted.model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert {"loss", "dice", "iou"} <= set(history.history)
    moved = max(float(np.max(np.abs(a - b.numpy()))) for a, b in zip(start, looped.model.trainable_variables))
    diff = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(looped.model.trainable_variables, fitted.model.trainable_variables)
    )
    assert moved > 1e-4 and diff < 1e-6 * moved, (diff, moved)  # 1.4e-8 measured
    statistics = [v for v in looped.model.non_trainable_variables if "moving" in v.path]
    assert statistics and all(
        np.allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12)
        for a, b in zip(statistics, [v for v in fitted.model.non_trainable_variables if "moving" in v.path])
    )


def test_one_target_supervises_every_output_and_metrics_score_the_prediction():
    """`compile(loss=StructureLoss(), metrics=[...])` with the mask as the only target: the loss sums the four maps
    (as StructureLoss on the list), the metrics score ra2; `predict` returns the four maps."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 64, 64, 3)).astype("float32")
    masks = np.zeros((4, 64, 64, 1), "float32")
    masks[:, 16:40, 20:50] = 1
    model = PraNet("mobilenetv2", None, input_size=64)
    model.compile("adam", loss=StructureLoss(), metrics=[metrics.Dice(from_logits=True)], run_eagerly=True)
    outputs = model.predict(tf.data.Dataset.from_tensor_slices(images).batch(2), verbose=0)
    assert isinstance(outputs, list) and [o.shape for o in outputs] == [(4, 64, 64, 1)] * 4
    results = model.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(float(StructureLoss()(masks, outputs)), rel=1e-5)
    dice = metrics.Dice(from_logits=True)
    dice.update_state(masks, outputs[-1])
    assert results["dice"] == pytest.approx(float(dice.result()), abs=1e-6)
    single = StructureLoss()(masks, outputs[-1])
    assert results["loss"] > float(single) * 1.5  # all four maps, not the prediction alone


def test_loop_calls_keras_callbacks(polyp_dir, tmp_path):
    """EarlyStopping ends the run after the epoch it committed, CSVLogger gets the loop's rows, a callback sees
    every batch; BackupAndRestore is refused before any run folder (the run folder resumes itself)."""
    seen = {"batches": 0, "epochs": []}
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.update(batches=seen["batches"] + 1),
        on_epoch_end=lambda epoch, logs: seen["epochs"].append((epoch, sorted(logs))),
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=0, min_delta=10.0)
    log = tmp_path / "keras_log.csv"
    config = tiny_config(polyp_dir, tmp_path, epochs=5, steps_per_epoch=2, run_name="run")
    result = train_pranet(config, progress=False, callbacks=[counter, stop, keras.callbacks.CSVLogger(str(log))])
    assert len(result["history"]) == 2  # improvement > 10 never happens: stopped after patience + 1 epochs
    assert seen["batches"] == 4 and [epoch for epoch, _ in seen["epochs"]] == [0, 1]
    assert {"loss", "val_dice", "lr"} <= set(seen["epochs"][0][1])
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"] and float(rows[1]["val_dice"]) == pytest.approx(
        result["history"][1]["val_dice"]
    )
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(ValueError, match="BackupAndRestore is for model.fit"):
        train_pranet(tiny_config(polyp_dir, tmp_path, epochs=1, run_name="other"), callbacks=[backup])
    assert not (tmp_path / "other").exists()


def test_earnet_fits_with_labels_and_error_maps_as_one_target():
    """Stage 2's target {"labels", "error_maps"}: EARNetLoss gets the outputs whole (error attention included), the
    metrics the "pred" logits and the labels; `predict` returns the documented dict."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    labels = (rng.random((2, 64, 64)) < 0.3).astype("int32")
    errors = (rng.random((2, 64, 64)) < 0.2).astype("int32")
    labels[:, :, :8], errors[:, :, :8] = 255, 255  # crop padding
    target = {"labels": labels, "error_maps": errors}
    model = EARNet("small", scales=(1.0, 0.5), norm="group")
    model.compile("adam", loss=EARNetLoss(), metrics=[metrics.F1(from_logits=True)], run_eagerly=True)
    model.fit(images, target, batch_size=2, verbose=0)  # one step
    results = model.evaluate(images, target, batch_size=2, verbose=0, return_dict=True)
    outputs = model.predict(images, verbose=0)
    assert {name: value.shape[1:] for name, value in outputs.items()} == {
        **{name: (64, 64, 2) for name in ("pred", "aux", "pred_05", "pred_10")},
        "error_attention": (64, 64, 1),
    }
    assert results["loss"] == pytest.approx(float(EARNetLoss()(target, outputs)), rel=1e-5)
    assert results["loss"] > float(EARNetLoss()(labels, outputs)) + 1e-4  # the error-attention term counts
    f1 = metrics.F1(from_logits=True)
    f1.update_state(labels, outputs["pred"])
    assert results["f1"] == pytest.approx(float(f1.result()), abs=1e-6)


LOAD_SCRIPT = """
import sys
import keras
import tfseg.training  # registers the recipes' optimizers
model = keras.saving.load_model(sys.argv[1])
print("LOADED", type(model.optimizer).__name__, model.optimizer.clipvalue)
"""


def test_a_model_compiled_with_a_recipe_optimizer_loads_in_a_fresh_process(tmp_path):
    from tests.helpers import ROOT, run_python
    from tfseg.training.optimizers import global_batch_clipping

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(global_batch_clipping(keras.optimizers.SGD)(1e-2, momentum=0.9, clipvalue=0.5), "mse")
    model.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)
    model.save(tmp_path / "model.keras")
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    result = run_python([str(script), str(tmp_path / "model.keras")], env={"PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED GlobalBatchClippedSGD 0.5" in result.stdout


def test_recipe_adam_updates_variables_as_keras_adam():
    """The recipes' Adam (one fused op per variable, tfseg.training.optimizers.FusedAdamUpdate) moves the weights
    as keras.optimizers.Adam does, step after step, in a traced step as the loop runs it."""
    from tfseg.training.optimizers import global_batch_clipping

    start = [np.random.default_rng(0).normal(size=shape).astype("float32") for shape in ((3, 4), (4,))]
    grads = [
        [np.random.default_rng(step).normal(size=w.shape).astype("float32") * step for w in start]
        for step in range(1, 6)
    ]

    def train(optimizer):
        variables = [keras.Variable(w) for w in start]
        optimizer.build(variables)
        step = tf.function(lambda g: optimizer.apply(g, variables))
        for g in grads:
            step([tf.constant(x) for x in g])
        return [v.numpy() for v in variables]

    expected = train(keras.optimizers.Adam(1e-2))
    fused = train(global_batch_clipping(keras.optimizers.Adam)(1e-2))
    assert max(float(np.max(np.abs(a - w))) for a, w in zip(expected, start)) > 1e-2  # the weights moved
    np.testing.assert_allclose(
        np.concatenate([f.ravel() for f in fused]), np.concatenate([e.ravel() for e in expected]), atol=1e-6
    )


def test_recipe_adam_builds_one_update_op_per_variable_and_the_step_scalars_once():
    """The traced update of n variables holds n ResourceApplyAdam ops and one b1^t and b2^t (tf.pow) for all of
    them: the first step's graph of a 461-variable Res2Net-50 PraNet lost ~5000 nodes so."""
    from tfseg.training.optimizers import global_batch_clipping

    variables = [keras.Variable(np.zeros((3,), "float32")) for _ in range(5)]
    optimizer = global_batch_clipping(keras.optimizers.Adam)(1e-2, clipvalue=0.5)
    optimizer.build(variables)
    step = tf.function(lambda g: optimizer.apply(g, variables))
    graph = step.get_concrete_function([tf.TensorSpec((3,), tf.float32)] * 5).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ResourceApplyAdam") == 5 and ops.count("Pow") == 2
