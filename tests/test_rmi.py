import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.losses import EARNetLoss, RMILoss, masked_cross_entropy, masked_sigmoid_bce, rmi_loss
from tfseg.preprocessing import IGNORE_LABEL

RADIUS, POOL, ALPHA = 3, 4, 5e-4


def numpy_rmi(logits, labels, weight_lambda=0.5):
    """Per image, float64, from the formulas: sigmoid BCE over valid pixels / (valid + 1), and the RMI lower bound
    0.5 log det(Cov(Y) - Cov(Y,P) (Cov(P) + aI)^-1 Cov(Y,P)^T + aI) / 9 summed over classes, on 3x3 region vectors
    of the 4x4 average pool (stride 4, zero padding 2 counted) of the one-hot labels and the masked sigmoids."""
    x = logits.astype("float64")
    batch, height, width, classes = x.shape
    valid = labels != IGNORE_LABEL
    one_hot = np.stack([(labels == c) & valid for c in range(classes)], axis=-1).astype("float64")
    sigmoid = 1.0 / (1.0 + np.exp(-x))
    bce = -(one_hot * np.log(sigmoid) + (1 - one_hot) * np.log(1 - sigmoid)) * valid[..., None]
    bce = bce.sum(axis=(1, 2, 3)) / (valid.sum(axis=(1, 2)) + 1.0)
    probs = sigmoid * valid[..., None] + 1e-6

    def pool(maps):  # [H, W] -> [Ho, Wo]
        rows, cols = (height + 2 * (POOL // 2) - POOL) // POOL + 1, (width + 2 * (POOL // 2) - POOL) // POOL + 1
        out = np.zeros((rows, cols))
        for i in range(rows):
            for j in range(cols):
                top, left = i * POOL - POOL // 2, j * POOL - POOL // 2
                window = maps[max(top, 0) : top + POOL, max(left, 0) : left + POOL]
                out[i, j] = window.sum() / POOL**2
        return out

    def vectors(maps):  # [Ho, Wo] -> [9, N]
        rows, cols = maps.shape
        points = []
        for i in range(rows - RADIUS + 1):
            for j in range(cols - RADIUS + 1):
                points.append([maps[i + dy, j + dx] for dy in range(RADIUS) for dx in range(RADIUS)])
        return np.array(points).T

    rmi = np.zeros(batch)
    eye = np.eye(RADIUS * RADIUS)
    for b in range(batch):
        for c in range(classes):
            y, p = vectors(pool(one_hot[b, ..., c])), vectors(pool(probs[b, ..., c]))
            y, p = y - y.mean(axis=1, keepdims=True), p - p.mean(axis=1, keepdims=True)
            cov_y, cov_p, cov_yp = y @ y.T, p @ p.T, y @ p.T
            posterior = cov_y - cov_yp @ np.linalg.inv(cov_p + ALPHA * eye) @ cov_yp.T
            sign, log_det = np.linalg.slogdet(posterior + ALPHA * eye)
            assert sign > 0
            rmi[b] += 0.5 * log_det / (RADIUS * RADIUS)
    return weight_lambda * bce + (1 - weight_lambda) * rmi


def make_batch(ignored=False, seed=0):
    """2 images of 32x28 (-> 9x8 after pooling -> 42 region vectors): vessel-like stripes, noisy logits."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((2, 32, 28), "int64")
    labels[0, :, 6:9] = 1
    labels[0, 20:23, :] = 1
    labels[1, 4:12, 10:26] = 1
    labels[1, 25:, 3:5] = 1
    logits = np.stack([-(2 * labels - 1), 2 * labels - 1], axis=-1) * 1.5 + rng.normal(0, 1.5, (2, 32, 28, 2))
    if ignored:
        labels[0, :5] = IGNORE_LABEL  # crop padding
        labels[1][rng.random((32, 28)) < 0.2] = IGNORE_LABEL
    return logits.astype("float32"), labels


@pytest.mark.parametrize("ignored, weight_lambda", [(False, 0.5), (True, 0.5), (True, 0.0)])
def test_rmi_matches_numpy(ignored, weight_lambda):
    logits, labels = make_batch(ignored)
    expected = numpy_rmi(logits, labels, weight_lambda)
    got = np.asarray(rmi_loss(labels, logits, weight_lambda=weight_lambda))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_ignored_pixels_change_the_value():
    logits, labels = make_batch(ignored=True)
    _, clean = make_batch(ignored=False)
    assert not np.allclose(np.asarray(rmi_loss(labels, logits)), np.asarray(rmi_loss(clean, logits)), atol=1e-3)


def test_keras_loss_is_the_batch_mean_and_serializes():
    logits, labels = make_batch(ignored=True)
    loss = RMILoss()
    assert float(loss(labels, logits)) == pytest.approx(float(np.mean(rmi_loss(labels, logits))), rel=1e-6)
    rebuilt = keras.saving.deserialize_keras_object(json.loads(json.dumps(keras.saving.serialize_keras_object(loss))))
    assert isinstance(rebuilt, RMILoss) and rebuilt.get_config() == loss.get_config()


def gradient(labels, logits):
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = tf.reduce_mean(rmi_loss(labels, logits))
    return float(value), tape.gradient(value, logits).numpy()


def test_gradients_are_finite_and_a_perfect_prediction_scores_lower():
    logits, labels = make_batch(ignored=True)
    value, grad = gradient(labels, logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    assert np.all(grad[labels == IGNORE_LABEL] == 0)  # ignored pixels get no gradient
    perfect = np.stack([-(2 * labels - 1), 2 * labels - 1], axis=-1).astype("float32") * 20.0
    perfect_value, perfect_grad = gradient(labels, perfect)
    assert np.isfinite(perfect_value) and np.all(np.isfinite(perfect_grad))
    assert perfect_value < value


def test_all_ignored_is_finite_with_zero_gradient():
    logits, labels = make_batch()
    labels[:] = IGNORE_LABEL
    value, grad = gradient(labels, logits)
    assert np.isfinite(value) and np.all(grad == 0)
    np.testing.assert_array_equal(np.asarray(masked_sigmoid_bce(labels, logits)), 0.0)


def test_earnet_loss_with_rmi_criterion():
    rng = np.random.default_rng(1)
    logits, labels = make_batch(ignored=True)
    outputs = {"pred": logits, **{k: rng.normal(size=logits.shape).astype("float32") for k in ("aux", "pred_05")}}
    outputs["pred_10"] = logits + rng.normal(size=logits.shape).astype("float32")
    outputs["error_attention"] = rng.random(logits.shape[:3] + (1,)).astype("float32")
    errors = rng.integers(0, 2, labels.shape)
    bce = {k: masked_sigmoid_bce(labels, outputs[k]) for k in ("aux", "pred_05", "pred_10")}
    expected = rmi_loss(labels, logits) + 0.4 * bce["aux"] + 0.05 * (bce["pred_05"] + bce["pred_10"])
    rmi = np.asarray(EARNetLoss(criterion="rmi", reduction=None)(labels, outputs))
    np.testing.assert_allclose(rmi, expected, rtol=1e-6)
    assert np.all(np.isfinite(rmi))
    ce = np.asarray(EARNetLoss(criterion="ce", reduction=None)(labels, outputs))
    assert ce[0] > float(masked_cross_entropy(labels, logits)[0])  # the ce criterion: softmax CE terms
    assert not np.allclose(rmi, ce, atol=1e-3)
    stage2 = np.asarray(EARNetLoss(criterion="rmi", reduction=None)({"labels": labels, "error_maps": errors}, outputs))
    assert np.all(stage2 > rmi)
    compiled = EARNetLoss(criterion="rmi").compile_arguments(error_maps=True)["loss"]
    assert isinstance(compiled["pred"], RMILoss) and not isinstance(compiled["aux"], RMILoss)
    with pytest.raises(ValueError, match="criterion"):
        EARNetLoss(criterion="dice")


def test_loss_flag_reaches_config_args_json_and_trainer(tmp_path, monkeypatch):
    from tfseg import cli
    from tfseg.commands.train_earnet import parse_args
    from tfseg.training import earnet
    from tfseg.training.checkpoints import RunDirectory

    assert parse_args(["--data_path", "x"]).loss == "ce"
    args = parse_args(["--data_path", "x", "--loss", "rmi"])
    config = cli.config_from_args(earnet.EARNetConfig, args, scales=tuple(args.scales))
    assert config.loss == "rmi"
    run = RunDirectory(str(tmp_path / "run" / "stage1"))
    run.write_args(config)
    assert run.read_args()["loss"] == "rmi"
    assert earnet.resume_config(str(tmp_path / "run")).loss == "rmi"
    monkeypatch.setattr(earnet.SegmentationTrainer, "__init__", lambda self, config, strategy: None)
    assert earnet.EARNetTrainer(config, None, 1, 1).loss_fn.criterion == "rmi"
    with pytest.raises(ValueError, match="loss"):
        earnet.EARNetConfig(data_path="x", loss="dice")


def test_compiled_rmi_criterion_matches_the_direct_loss():
    logits, labels = make_batch(ignored=True)
    inputs = keras.Input((None, None, 2))
    outputs = {name: keras.layers.Conv2D(2, 1, name=name)(inputs) for name in ("pred", "aux", "pred_05", "pred_10")}
    model = keras.Model(inputs, outputs)
    loss = EARNetLoss(criterion="rmi")
    model.compile(**loss.compile_arguments(), run_eagerly=True)
    results = model.evaluate(logits, {name: labels for name in outputs}, batch_size=2, verbose=0, return_dict=True)
    expected = float(loss(labels, model.predict(logits, verbose=0)))
    assert results["loss"] == pytest.approx(expected, rel=1e-5)
