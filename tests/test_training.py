import csv
import dataclasses
import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import max_abs_diff, random_images, run_python
from tfseg.inference import Predictor
from tfseg.training import PraNetConfig
from tfseg.training.pranet import PraNetTrainer, load_pairs
from tfseg.training.strategy import make_strategy


def tiny_config(polyp_dir, **overrides):
    return PraNetConfig(
        **{
            "data_path": polyp_dir,
            "backbone": "mobilenetv2",
            "backbone_weights": None,
            "input_size": 64,
            "batch_size": 4,
            "lr": 1e-3,
            **overrides,
        }
    )


def test_steps_lower_the_loss(polyp_dir):
    config = tiny_config(polyp_dir)
    train, _ = load_pairs(config)
    trainer = PraNetTrainer(config, make_strategy("default"))
    images, masks = next(iter(trainer.train_dataset(train, epoch=0)))
    losses = [float(trainer._step(images, masks, 64)) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], losses


def check_export_matches_inference(export_dir):
    """SavedModel `serve` == the exported Keras model in inference mode, at two sizes; `serve_uint8` works."""
    model = keras.models.load_model(os.path.join(export_dir, "model.keras"))
    reloaded = tf.saved_model.load(os.path.join(export_dir, "savedmodel"))
    for height, width in [(64, 64), (96, 64)]:
        x = random_images(2, height, width, seed=height)
        assert max_abs_diff(reloaded.serve(tf.constant(x)), model(x, training=False)) < 1e-4
    # BatchNorm statistics have moved from their start, so inference mode differs from training mode and the
    # comparison above means something.
    assert max_abs_diff(model(x, training=True), model(x, training=False)) > 1e-3

    # TF Serving's view: the two endpoints as signatures, `serve` also as the default one, inputs named "images"
    assert set(reloaded.signatures) == {"serve", "serve_prediction", "serve_uint8", "serving_default"}
    for name, dtype in (("serving_default", tf.float32), ("serve_uint8", tf.uint8)):
        assert reloaded.signatures[name].structured_input_signature[1]["images"].dtype == dtype
    # `serve` at the export's size runs a branch traced with static sizes: native resizes, no gathers
    library = reloaded.signatures["serve"].graph.as_graph_def().library.function
    branches = [{node.op for node in function.node_def} for function in library]
    assert any("ResizeBilinear" in ops and "GatherV2" not in ops for ops in branches)

    rgb = np.random.default_rng(0).integers(0, 256, (1, 75, 103, 3)).astype("uint8")
    probabilities = reloaded.serve_uint8(tf.constant(rgb)).numpy()
    assert probabilities.shape == (1, 75, 103, 1)
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0
    with open(os.path.join(export_dir, "tfseg.json")) as f:
        metadata = json.load(f)
    assert metadata["input_size"] == [64, 64] and metadata["normalization"] == "tf"

    # The Predictor gives the served probabilities, from either file, and at any requested size
    from_savedmodel = Predictor.load(os.path.join(export_dir, "savedmodel"))
    from_keras = Predictor.load(os.path.join(export_dir, "model.keras"))
    assert max_abs_diff(from_savedmodel.predict(rgb[0]), probabilities[0, ..., 0]) < 1e-6
    assert max_abs_diff(from_keras.predict(rgb[0], size=(40, 50)), from_savedmodel.predict(rgb[0], (40, 50))) < 1e-5


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def test_cli_trains_exports_and_resumes(polyp_dir, tmp_path, caplog):
    """train_pranet.py, then --resume with one more epoch. In-process with tf.functions run eagerly: the same
    code without ~2 min of tracing (the export is traced either way)."""
    import train_pranet

    common = [
        "--backbone",
        "mobilenetv2",
        "--backbone-weights",
        "none",
        "--batchsize",
        "4",
        "--inputsize",
        "64",
        "--steps_per_epoch",
        "2",
        "--quiet",
    ]
    run_dir = tmp_path / "run"
    caplog.set_level(logging.INFO)
    tf.config.run_functions_eagerly(True)
    try:
        train_pranet.main(
            common
            + [
                "--data_path",
                polyp_dir,
                "--epoch",
                "1",
                "--logdir",
                str(tmp_path),
                "--name",
                "run",
                "--augment",
                "--val_fraction",
                "0.25",
            ]
        )
        assert [r["epoch"] for r in read_log(run_dir)] == ["1"]
        for name in (
            "args.json",
            "best.weights.h5",
            "export/model.keras",
            "export/savedmodel/saved_model.pb",
            "export/tfseg.json",
        ):
            assert (run_dir / name).exists(), name
        assert os.listdir(run_dir / "tensorboard" / "train")
        record = json.loads((run_dir / "export" / "tfseg.json").read_text())["training"]  # the protocol card's
        assert record["checkpoint"]["epoch"] == 1 and record["checkpoint"]["rule"].startswith("best val_dice")
        assert record["validation"]["images"] == 6 and record["training_images"]["images"] == 18
        assert 0 < record["threshold"]["value"] < 1 and record["threshold"]["images"] == 6
        data_check = json.loads((run_dir / "data_check.json").read_text())  # the start's near-duplicate check
        assert record["near_duplicates"] == len(data_check["near_duplicates"]) and data_check["n_val"] == 6
        assert record["threshold"]["score"] >= record["threshold"]["score_at_0.5"]
        assert Predictor.load(str(run_dir / "export")).threshold == record["threshold"]["value"]
        assert Predictor.load(str(run_dir / "export" / "savedmodel")).metadata["training"] == record  # alone too
        train_pranet.main(["--resume", str(run_dir), "--epoch", "2", "--no_export", "--quiet"])
    finally:
        tf.config.run_functions_eagerly(False)
    check_export_matches_inference(str(run_dir / "export"))
    assert "Resumed" in caplog.text and "at epoch 1" in caplog.text
    log = read_log(run_dir)
    assert [r["epoch"] for r in log] == ["1", "2"]
    assert all(np.isfinite(float(r["loss"])) for r in log)
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 4  # 2 epochs x 2 steps


def test_cli_reports_bad_data_clearly(tmp_path):
    result = run_python(["train_pranet.py", "--data_path", str(tmp_path / "nowhere"), "--backbone_weights", "none"])
    assert result.returncode != 0
    assert "nowhere" in result.stderr


def test_an_input_size_pranet_cannot_take_is_refused_before_a_run_folder(tmp_path):
    import train_pranet

    message = "error: input size 300 x 300: PraNet takes heights and widths divisible by 32"
    with pytest.raises(SystemExit, match=message):
        train_pranet.main(
            ["--data_path", str(tmp_path), "--inputsize", "300", "--backbone_weights", "none"]
            + ["--logdir", str(tmp_path / "runs")]
        )
    assert not (tmp_path / "runs").exists()


def test_resume_ends_where_an_uninterrupted_run_ends(polyp_dir, tmp_path):
    """Two epochs straight, and one epoch then --resume for the second: the same weights, bit for bit (the data
    order and augmentation of an epoch depend on seed + epoch only, and the checkpoint holds the optimizer)."""
    from tfseg.training import train_pranet

    config = tiny_config(polyp_dir, epochs=2, steps_per_epoch=1, augment=True, export=False, logdir=str(tmp_path))
    tf.config.run_functions_eagerly(True)
    try:
        straight = train_pranet(dataclasses.replace(config, run_name="straight"), progress=False)
        train_pranet(dataclasses.replace(config, run_name="resumed", epochs=1), progress=False)
        resumed = train_pranet(
            dataclasses.replace(config, run_name="resumed"), resume=str(tmp_path / "resumed"), progress=False
        )
    finally:
        tf.config.run_functions_eagerly(False)
    assert [row["val_dice"] for row in straight["history"]][1:] == [row["val_dice"] for row in resumed["history"]]
    weights = {}
    for name in ("straight", "resumed"):
        reader = tf.train.load_checkpoint(str(tmp_path / name / "checkpoints"))
        weights[name] = {
            key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if key.startswith("model/")
        }
    assert weights["straight"].keys() == weights["resumed"].keys() and len(weights["straight"]) > 100
    for key, value in weights["straight"].items():
        np.testing.assert_array_equal(value, weights["resumed"][key], err_msg=key)


def test_checkpoints_of_earlier_versions_resume(polyp_dir, tmp_path):
    """Run folders written before the best score was named `best_score` hold it as `best_dice`."""
    config = tiny_config(polyp_dir)
    earlier = PraNetTrainer(config, make_strategy("default"))
    earlier.epoch.assign(3)
    earlier.best_score.assign(0.7)
    path = tf.train.Checkpoint(
        model=earlier.model, optimizer=earlier.optimizer, epoch=earlier.epoch, best_dice=earlier.best_score
    ).save(str(tmp_path / "ckpt"))
    trainer = PraNetTrainer(config, make_strategy("default"))
    trainer.restore(path)
    assert int(trainer.epoch.numpy()) == 3 and float(trainer.best_score.numpy()) == 0.7
    assert max_abs_diff(trainer.model.get_weights(), earlier.model.get_weights()) == 0
