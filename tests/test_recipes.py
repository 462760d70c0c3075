"""EAR-Net recipes (`--recipe cpu|official`): the values each sets, explicit flags over the recipe, args.json,
resume and the model card, the official recipe's ImageNet start, the optimizer and its poly schedule."""

import dataclasses
import types

import keras
import pytest

from tfseg import cli
from tfseg.commands import train_earnet as command
from tfseg.training import earnet
from tfseg.training.checkpoints import RunDirectory
from tfseg.training.optimizers import GlobalBatchClipping

TODAY = dict(  # the defaults before recipes existed
    config="small",
    norm="group",
    optimizer="adam",
    momentum=0.9,
    lr=1e-3,
    stage2_lr=1e-4,
    poly_power=2.0,
    weight_decay=4e-5,
    crop=384,
    loss="ce",
    batch_size=2,
    steps_per_epoch=50,
    epochs=12,
    stage2_epochs=6,
)
OFFICIAL = dict(
    config="w48",
    norm="batch",
    optimizer="sgd",
    momentum=0.9,
    lr=1e-2,
    stage2_lr=1e-3,
    poly_power=2.0,
    weight_decay=4e-5,
    crop=448,
    loss="rmi",
    batch_size=4,
    steps_per_epoch=0,
    epochs=100,
    stage2_epochs=15,
)


def config_of(*flags):
    args = command.parse_args(["--data_path", "x", *flags])
    return cli.config_from_args(earnet.EARNetConfig, args, scales=tuple(args.scales))


def settings(config):
    return {name: getattr(config, name) for name in TODAY}


def test_cpu_recipe_is_todays_defaults():
    for config in (config_of(), config_of("--recipe", "cpu"), earnet.EARNetConfig(data_path="x")):
        assert config.recipe == "cpu"
        assert settings(config) == TODAY
    assert config_of() == earnet.EARNetConfig(data_path="x", export=True)
    sgd = config_of("--optimizer", "sgd")  # as before: the lr follows the optimizer
    assert (sgd.lr, sgd.stage2_lr) == (1e-2, pytest.approx(1e-3))


def test_official_recipe_values():
    config = config_of("--recipe", "official", "--init_weights", "none")
    assert config.recipe == "official"
    assert settings(config) == OFFICIAL
    assert config.start_weights is None and config.init_weights == "none"
    assert earnet.EARNetConfig(data_path="x", recipe="official") == dataclasses.replace(config, init_weights=None)


def test_explicit_flags_override_the_recipe():
    config = config_of("--recipe", "official", "--crop", "384", "--lr", "5e-3", "--norm", "group", "--batch_size", "8")
    assert settings(config) == {**OFFICIAL, "crop": 384, "lr": 5e-3, "norm": "group", "batch_size": 8}
    assert earnet.EARNetConfig(data_path="x", recipe="official", crop=384).crop == 384
    card = config.recipe_card()
    assert card["name"] == "official" and card["settings"]["crop"] == 384
    assert card["changed"] == {"crop": 384, "lr": 5e-3, "norm": "group", "batch_size": 8}
    with pytest.raises(ValueError, match="recipe"):
        earnet.EARNetConfig(data_path="x", recipe="gpu")
    assert command.parse_args(["--resume", "run"]).epochs is None  # on --resume the stored settings count


def test_args_json_and_resume_keep_recipe_and_values(tmp_path):
    config = config_of("--recipe", "official", "--crop", "384", "--init_weights", "none")
    RunDirectory(str(tmp_path / "run" / "stage1")).write_args(config)
    stored = RunDirectory(str(tmp_path / "run" / "stage1")).read_args()
    assert stored["recipe"] == "official"
    assert {name: stored[name] for name in TODAY} == {**OFFICIAL, "crop": 384}
    resumed = earnet.resume_config(str(tmp_path / "run"))
    assert settings(resumed) == settings(config) and resumed.recipe == "official"
    # a stage-2 folder stores stage 2's epochs: stage 1's come back from the recipe, not the cpu default
    RunDirectory(str(tmp_path / "run2" / "stage2")).write_args(dataclasses.replace(config, epochs=15))
    assert earnet.resume_config(str(tmp_path / "run2")).epochs == 100


def test_model_card_holds_the_recipe(monkeypatch):
    config = config_of("--recipe", "official", "--crop", "384", "--init_weights", "none")
    monkeypatch.setattr(earnet, "training_record", lambda *args: {"checkpoint": {}})
    monkeypatch.setattr(earnet, "export_best", lambda model, run, config, record: record)
    run = types.SimpleNamespace(read_log=lambda: [], chief=True, path="run")
    stage = {"trainer": types.SimpleNamespace(model=None), "run": run, "history": [], "train": [], "val": []}
    card = earnet._finish({**stage, "val_data": None}, config, last=True)["export"]["recipe"]
    assert card == config.recipe_card()
    assert card["settings"]["config"] == "w48" and card["changed"] == {"crop": 384} and card["init_weights"] == "none"


def test_official_recipe_needs_the_imagenet_weights_or_an_opt_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--data_path", str(tmp_path), "--recipe", "official", "--logdir", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith("error: --recipe official") and "\n" not in message
    assert "--backbone_weights FILE.weights.h5" in message and "convert_weights.py --model hrnet_w48" in message
    assert "--backbone_weights none" in message
    official = earnet.EARNetConfig(data_path="x", recipe="official")
    earnet.check_start(official, (2,))  # stage 2 alone starts from stage-1 weights
    earnet.check_start(dataclasses.replace(official, backbone_weights="none"), (1, 2))
    earnet.check_start(dataclasses.replace(official, init_weights="none"), (1, 2))  # the earlier opt-out
    earnet.check_start(dataclasses.replace(official, init_weights="w48.weights.h5"), (1, 2))  # a whole model's
    earnet.check_start(earnet.EARNetConfig(data_path="x"), (1, 2))  # cpu: from scratch by default
    assert not list(tmp_path.iterdir())  # refused before any run folder


def schedule(optimizer):
    return keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])


def test_optimizer_and_poly_schedule():
    official = earnet.EARNetConfig(data_path="x", recipe="official")
    sgd = earnet.make_optimizer(official, 1, 100)
    assert isinstance(sgd, keras.optimizers.SGD) and isinstance(sgd, GlobalBatchClipping)
    assert (sgd.momentum, sgd.weight_decay) == (0.9, pytest.approx(4e-5))
    expected = {0: 1e-2, 25: 1e-2 * 0.75**2, 50: 1e-2 * 0.25, 100: 0.0, 150: 0.0}  # lr (1 - step / 100)^2
    for step, value in expected.items():
        assert float(schedule(sgd)(step)) == pytest.approx(value, abs=1e-9)
    assert float(schedule(earnet.make_optimizer(official, 2, 100))(50)) == pytest.approx(1e-3 * 0.25)
    adam = earnet.make_optimizer(earnet.EARNetConfig(data_path="x", poly_power=1.0), 1, 10)
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(schedule(adam)(5)) == pytest.approx(1e-3 * 0.5)
