"""tfseg.metrics against tfseg.evaluation on the same maps (fed in several batches, reset), the ignore label and the
FOV, the state summed over the replicas of MirroredStrategy (2 logical CPUs), and the metrics and losses in
`compile` + `fit` / `evaluate` on tiny models, saved to .keras and loaded."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import ROOT, run_python
from tfseg import metrics
from tfseg.evaluation import polyp, vessel
from tfseg.losses import EARNetLoss, MaskedMSE, StructureLoss

VESSEL_METRICS = {"Se": metrics.Sensitivity, "Sp": metrics.Specificity, "F1": metrics.F1, "MCC": metrics.MCC}


def blobs(rng, n, height, width):
    """[n, H, W] bool discs of random centre and radius."""
    y, x = np.mgrid[:height, :width]
    centres = rng.integers((height // 4, width // 4), (3 * height // 4, 3 * width // 4), (n, 2))
    radii = rng.integers(3, 8, n)
    return np.stack([(y - cy) ** 2 + (x - cx) ** 2 <= r**2 for (cy, cx), r in zip(centres, radii)])


def polyp_maps(seed=0):
    """(probabilities [6, 24, 32] float32, masks [6, 24, 32] bool): noisy blobs in [0.05, 0.75] (so the protocol's
    min-max normalisation moves `> 0.5`), an empty mask (image 1), an empty prediction (2) and a near-constant map
    (3: range 1e-9, whose uint8 map reaches 42, which pysodmetrics stretches to 255)."""
    rng = np.random.default_rng(seed)
    masks = blobs(rng, 6, 24, 32)
    masks[1] = False
    probabilities = np.clip(0.2 + 0.4 * masks + rng.normal(0, 0.15, masks.shape), 0.05, 0.75).astype(np.float32)
    probabilities[2] = 0
    probabilities[3] = (1e-9 * rng.random((24, 32)) + 1e-9 * masks[3]).astype(np.float32)
    return probabilities, masks


def polyp_protocol(probabilities, masks, threshold=0.5):
    """tfseg.evaluation's results on PraNet's stored maps of the probabilities (as `test_model.py --model`)."""
    scores = [polyp.score_image(polyp.prediction_map(p), m, threshold) for p, m in zip(probabilities, masks)]
    return polyp.summarize(scores, threshold)


def in_batches(metric, y_true, y_pred, sample_weight=None, splits=(2, 3)):
    """The metric's result after updates on the batches [:2], [2:3], [3:]."""
    for part in np.split(np.arange(len(y_true)), splits):
        metric.update_state(y_true[part], y_pred[part], None if sample_weight is None else sample_weight[part])
    return float(metric.result())


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_polyp_metrics_equal_the_protocol(threshold):
    probabilities, masks = polyp_maps()
    expected = polyp_protocol(probabilities, masks, threshold)
    y_true, y_pred = masks[..., None].astype("float32"), probabilities[..., None]
    assert in_batches(metrics.Dice(threshold), y_true, y_pred) == pytest.approx(expected[f"dice@{threshold:g}"], 1e-6)
    assert in_batches(metrics.IoU(threshold), y_true, y_pred) == pytest.approx(expected[f"iou@{threshold:g}"], 1e-6)
    assert in_batches(metrics.MeanDice(), y_true, y_pred) == pytest.approx(expected["meanDice"], 1e-6)
    # the maps exercise the normalisation: Dice of the raw `p > threshold` is another value
    predicted = probabilities > threshold
    raw = np.mean(2 * (predicted & masks).sum((1, 2)) / np.maximum(predicted.sum((1, 2)) + masks.sum((1, 2)), 1))
    assert raw != pytest.approx(expected[f"dice@{threshold:g}"], abs=0.01)


def test_polyp_metrics_from_logits_reset_and_weighted_per_image():
    probabilities, masks = polyp_maps(seed=1)
    logits = np.random.default_rng(1).normal(0, 3, probabilities.shape).astype("float32")
    y_true, y_pred = masks[..., None].astype("float32"), logits[..., None]
    expected = polyp_protocol(np.asarray(ops.sigmoid(logits)), masks)
    for metric, key in [(metrics.Dice(from_logits=True), "dice@0.5"), (metrics.MeanDice(from_logits=True), "meanDice")]:
        assert in_batches(metric, y_true, y_pred) == pytest.approx(expected[key], 1e-6)
        metric.reset_state()
        kept = np.array([1, 0, 1, 1, 0, 1], "float32")  # weight 0: the image is left out of the mean
        subset = polyp_protocol(np.asarray(ops.sigmoid(logits[kept > 0])), masks[kept > 0])
        assert in_batches(metric, y_true, y_pred, kept) == pytest.approx(subset[key], 1e-6)
        assert subset[key] != pytest.approx(expected[key], 1e-3)


def vessel_maps(seed=0, quantised=False):
    """(probabilities [3, 20, 28] float32, labels [3, 20, 28] 0/1, FOV [3, 20, 28] bool): no vessel in image 1."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((3, 20, 28)) < 0.25).astype("int32")
    labels[1] = 0
    probabilities = np.clip(0.5 * labels + rng.normal(0.3, 0.2, labels.shape), 0, 1).astype("float32")
    if quantised:  # the values of an 8-bit map
        probabilities = (np.rint(probabilities * 255) / 255).astype("float32")
    return probabilities, labels, blobs(rng, 3, 40, 56)[:, 10:30, 14:42] | blobs(rng, 3, 20, 28)


def vessel_protocol(probabilities, labels, fov=None):
    """(tfseg.evaluation's pooled results, inside `fov` when given; the AUC on its bootstrap grid)."""
    fovs = [None] * len(labels) if fov is None else fov
    scores = [vessel.score_image(p, g == 1, f) for p, g, f in zip(probabilities, labels, fovs)]
    region = "whole" if fov is None else "fov"
    results = vessel.summarize(scores)
    grid = vessel.auc(vessel.merge_value_counts([vessel.on_grid(s[region]["values"]) for s in scores]))
    return (results if fov is None else results["fov"]), grid


@pytest.mark.parametrize("quantised", [False, True])
def test_vessel_metrics_equal_the_protocol(quantised):
    probabilities, labels, _ = vessel_maps(quantised=quantised)
    expected, grid_auc = vessel_protocol(probabilities, labels)
    y_pred = probabilities[..., None]
    for key, kind in VESSEL_METRICS.items():
        assert in_batches(kind(), labels, y_pred, splits=(1,)) == pytest.approx(expected[key], abs=1e-6), key
    auc = in_batches(metrics.AUC(), labels, y_pred, splits=(1,))
    assert metrics.AUC_BINS == vessel.BOOTSTRAP_LEVELS  # the evaluator's grid (not imported: it loads OpenCV)
    assert auc == pytest.approx(grid_auc, abs=1e-6)
    # 65536 bins: exact for 8-bit maps; on these float maps (1522 distinct values) the exact AUC is 1.3e-6 away
    assert auc == pytest.approx(expected["AUC"], abs=1e-7 if quantised else 5e-6)


def test_ignore_label_and_fov_are_left_out():
    probabilities, labels, fov = vessel_maps(seed=2)
    ignored = labels.copy()
    ignored[0, :4], ignored[2, :, :5] = 255, 255  # crop padding
    expected, grid_auc = vessel_protocol(probabilities, labels, fov & (ignored != 255))
    whole, _ = vessel_protocol(probabilities, labels)
    outside_ignored = np.where(fov, ignored, 255)  # the FOV given as the ignore label (for `fit`)
    y_pred = probabilities[..., None]
    for key, kind in [*VESSEL_METRICS.items(), ("AUC", metrics.AUC)]:
        reference = grid_auc if key == "AUC" else expected[key]
        assert reference != pytest.approx(whole[key], abs=1e-3), key  # the region matters on these maps
        assert in_batches(kind(), ignored, y_pred, fov.astype("float32")) == pytest.approx(reference, abs=1e-6), key
        assert in_batches(kind(), ignored, y_pred, fov[..., None], splits=(1,)) == pytest.approx(reference, abs=1e-6)
        assert in_batches(kind(), outside_ignored, y_pred) == pytest.approx(reference, abs=1e-6), key


def test_vessel_weight_per_image_leaves_images_out():
    probabilities, labels, _ = vessel_maps(seed=3)
    expected, grid_auc = vessel_protocol(probabilities[[0, 2]], labels[[0, 2]])
    weights = np.array([1.0, 0.0, 1.0], "float32")
    for key, kind in [*VESSEL_METRICS.items(), ("AUC", metrics.AUC)]:
        reference = grid_auc if key == "AUC" else expected[key]
        assert in_batches(kind(), labels, probabilities[..., None], weights, (1,)) == pytest.approx(reference, abs=1e-6)


MIRRORED_SCRIPT = r"""
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tfseg import metrics

rng = np.random.default_rng(0)
probabilities = rng.random((4, 16, 20, 1)).astype("float32")
masks = (rng.random((4, 16, 20, 1)) < 0.3).astype("float32")
masks[0] = 0  # no foreground in the first replica's first image
labels = masks.astype("int32")
labels[1, :3] = 255
kinds = [metrics.Dice, metrics.IoU, metrics.MeanDice] + [
    metrics.Sensitivity, metrics.Specificity, metrics.F1, metrics.MCC, metrics.AUC
]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    mirrored = [kind() for kind in kinds]
single, first_half = [kind() for kind in kinds], [kind() for kind in kinds]


def update(group, masks, labels, probabilities):
    for index, metric in enumerate(group):
        metric.update_state(masks if index < 3 else labels, probabilities)


halves = strategy.experimental_distribute_values_from_function(
    lambda context: tuple(a[2 * context.replica_id_in_sync_group :][:2] for a in (masks, labels, probabilities))
)
strategy.run(tf.function(lambda *batch: update(mirrored, *batch)), args=halves)
update(single, masks, labels, probabilities)
update(first_half, masks[:2], labels[:2], probabilities[:2])
print("RESULTS", json.dumps({
    a.name: {
        "mirrored": float(a.result()),
        "single": float(b.result()),
        "first_half": float(c.result()),
        "state": max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a.variables, b.variables)),
    }
    for a, b, c in zip(mirrored, single, first_half)
}))
"""


def test_state_is_summed_over_replicas(tmp_path):
    script = tmp_path / "mirrored_metrics.py"
    script.write_text(MIRRORED_SCRIPT)
    result = run_python([str(script)], env={"PYTHONPATH": ROOT}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.split("RESULTS")[1])
    assert len(values) == 8
    for name, value in values.items():
        assert value["mirrored"] == pytest.approx(value["single"], rel=1e-6), name
        assert value["state"] <= 1e-5, name  # counts equal, sums of per-image scores to float32 rounding
        assert value["first_half"] != pytest.approx(value["single"], rel=1e-3), name  # one replica's part alone


def conv_trunk(inputs):
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    return keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)


def test_polyp_metrics_and_structure_loss_compile_fit_evaluate_save(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(4)
    images = rng.normal(size=(6, 24, 32, 3)).astype("float32")
    masks = blobs(rng, 6, 24, 32)[..., None].astype("float32")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1)(conv_trunk(inputs)))  # logits
    chosen = [metrics.Dice(0.3, from_logits=True), metrics.IoU(from_logits=True), metrics.MeanDice(from_logits=True)]
    model.compile(keras.optimizers.SGD(0.1), loss=StructureLoss(), metrics=chosen)
    history = model.fit(images[:4], masks[:4], batch_size=4, verbose=0)  # one step
    assert {"loss", "dice", "iou", "mean_dice"} <= set(history.history)
    results = model.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)  # batches of 4 and 2
    logits = model.predict(images, verbose=0)
    probabilities = np.asarray(ops.sigmoid(logits))[..., 0]
    at_03, at_05 = (polyp_protocol(probabilities, masks[..., 0] > 0, t) for t in (0.3, 0.5))
    assert at_03["dice@0.3"] != pytest.approx(at_05["dice@0.5"], abs=1e-3)  # the saved threshold matters
    assert results["dice"] == pytest.approx(at_03["dice@0.3"], abs=1e-6)
    assert results["iou"] == pytest.approx(at_05["iou@0.5"], abs=1e-6)
    assert results["mean_dice"] == pytest.approx(at_05["meanDice"], abs=1e-6)
    assert results["loss"] == pytest.approx(float(StructureLoss()(masks, logits)), rel=1e-5)
    model.save(tmp_path / "polyp.keras")
    loaded = keras.saving.load_model(tmp_path / "polyp.keras")
    assert loaded.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True) == pytest.approx(results, 1e-6)


def test_earnet_loss_and_vessel_metrics_compile_fit_evaluate_save(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    images = rng.normal(size=(4, 20, 28, 3)).astype("float32")
    labels = (rng.random((4, 20, 28)) < 0.3).astype("int32")
    errors = (rng.random((4, 20, 28)) < 0.2).astype("int32")
    labels[:2, :, :6], errors[:2, :, :6] = 255, 255  # crop padding
    inputs = keras.Input((None, None, 3))
    features = conv_trunk(inputs)
    outputs = {name: keras.layers.Conv2D(2, 1, name=name)(features) for name in ("pred", "aux", "pred_05", "pred_10")}
    outputs["error_attention"] = keras.layers.Conv2D(1, 1, activation="sigmoid", name="error_attention")(features)
    model = keras.Model(inputs, outputs)
    loss = EARNetLoss()
    vessel_metrics = [kind(from_logits=True) for kind in VESSEL_METRICS.values()] + [metrics.AUC(from_logits=True)]
    arguments = {**loss.compile_arguments(error_maps=True), "metrics": {"pred": vessel_metrics}}
    model.compile(keras.optimizers.SGD(0.1), **arguments, run_eagerly=True)  # fast; `fit` traced: the polyp test
    y = {"pred": labels, "aux": labels, "pred_05": labels, "pred_10": labels, "error_attention": errors}
    model.fit(images, y, batch_size=4, verbose=0)  # one step
    results = model.evaluate(images, y, batch_size=3, verbose=0, return_dict=True)  # batches of 3 and 1
    predicted = model.predict(images, verbose=0)
    assert results["loss"] == pytest.approx(float(loss({"labels": labels, "error_maps": errors}, predicted)), rel=1e-5)
    probabilities = np.asarray(ops.softmax(predicted["pred"]))[..., 1]
    expected, grid_auc = vessel_protocol(probabilities, labels, labels != 255)
    for key, metric in zip([*VESSEL_METRICS, "AUC"], vessel_metrics):
        reference = grid_auc if key == "AUC" else expected[key]
        assert results[f"pred_{metric.name}"] == pytest.approx(reference, abs=1e-6), key
    model.save(tmp_path / "vessel.keras")
    loaded = keras.saving.load_model(tmp_path / "vessel.keras")
    loaded.run_eagerly = True
    assert loaded.evaluate(images, y, batch_size=3, verbose=0, return_dict=True) == pytest.approx(results, 1e-6)


def test_configs_round_trip():
    chosen = {
        metrics.Dice(0.3, from_logits=True, name="d"): {"threshold": 0.3, "from_logits": True, "name": "d"},
        metrics.MeanDice(from_logits=True): {"from_logits": True},
        metrics.F1(0.4, from_logits=True, ignore_label=9): {"threshold": 0.4, "from_logits": True, "ignore_label": 9},
        metrics.AUC(ignore_label=9): {"ignore_label": 9},
        MaskedMSE(ignore_label=9): {"ignore_label": 9},
    }
    for item, arguments in chosen.items():
        config = item.get_config()
        assert arguments.items() <= config.items()
        rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(item))
        assert type(rebuilt) is type(item) and rebuilt.get_config() == config
