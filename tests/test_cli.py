"""Every command line and benchmark script imports and answers --help (so none can rot unseen), and every console
entry point of pyproject.toml names a command."""

import glob
import os
import runpy
import sys

import pytest

from tests.helpers import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))


def answers_help(call, argv0, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [argv0, "--help"])
    with pytest.raises(SystemExit) as exit_status:
        call()
    return exit_status.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: os.path.relpath(path, ROOT))
def test_every_script_answers_help(script, monkeypatch, capsys):
    assert answers_help(lambda: runpy.run_path(script, run_name="__main__"), script, monkeypatch, capsys)


def test_every_console_entry_point_answers_help(monkeypatch, capsys):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        entry_points = tomllib.load(f)["project"]["scripts"]
    assert {
        "tfseg-train-pranet",
        "tfseg-train-earnet",
        "tfseg-eval",
        "tfseg-export",
        "tfseg-infer-image",
        "tfseg-infer-video",
    } <= set(entry_points)
    for name, target in entry_points.items():
        module, attribute = target.split(":")
        console = getattr(__import__(module, fromlist=[attribute]), attribute)
        assert answers_help(console, name, monkeypatch, capsys), name
