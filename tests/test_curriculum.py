"""Curricula: a recipe of stages trained in one command, deterministic and resumable."""

from __future__ import annotations

import json

import pytest
import tomli_w
from typer.testing import CliRunner

from baselines.cnn.configs import CONFIGS, ConfigError
from baselines.cnn.curriculum import find_curriculum, read_curriculum, registered
from challenge.cli import app

pytest.importorskip("keras")
runner = CliRunner()


def _tiny_curriculum(path):
    tiny = CONFIGS[("blend2flux", "tiny")].to_dict()
    stage = {k: tiny[k] for k in ("name", "arch", "train")}
    second = {**stage, "name": "tiny-again",
              "train": {**stage["train"], "learning_rate": 5e-4, "augment": False}}
    doc = {"name": "tiny-recipe", "model": "blend2flux",
           "stages": [{**stage, "epochs": 1, "seed": 1}, {**second, "epochs": 2, "seed": 2}]}
    path.write_text(tomli_w.dumps(json.loads(json.dumps(doc))))
    return path


def test_the_robust_recipes_are_registered_stage_by_stage():
    for model, epochs, first in (("blend2flux", 90, "compact-robust"),
                                 ("blend2mask2flux", 60, "compact")):
        assert "robust" in registered(model)
        recipe = find_curriculum(model, "robust")
        assert recipe.epochs == epochs and recipe.stages[0].config.name == first
        assert recipe.stages[-1].config.arch.noise_from_image
    assert find_curriculum("blend2flux", "compact") is None


def test_a_curriculum_trains_in_one_command_resumes_and_repeats(tiny_release, tmp_path):
    recipe = _tiny_curriculum(tmp_path / "recipe.toml")
    args = ["train", "blend2flux", "--config", str(recipe), "--data", str(tiny_release),
            "--limit", "32", "--quiet"]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["curriculum"] and [s["name"] for s in run["stages"]] == ["tiny", "tiny-again"]
    assert [s["epochs_run"] for s in run["stages"]] == [1, 2] and run["epochs"] == 3
    second_stage = json.loads(
        (tmp_path / "a" / "stages" / "2-tiny-again" / "run.json").read_text())
    assert second_stage["init_weights"]["path"].endswith("1-tiny/model.keras")
    model = (tmp_path / "a" / "model.keras").read_bytes()
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--resume"])
    assert again.exit_code == 0 and "stage 1/" not in again.output  # every stage done
    assert (tmp_path / "a" / "model.keras").read_bytes() == model
    other = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert other.exit_code == 0, other.output
    history = [(tmp_path / d / "history.csv").read_text().splitlines() for d in ("a", "b")]
    losses = [[line.split(",")[:8] for line in h] for h in history]  # epoch ... val_mape
    assert len(losses[0]) == 3 and losses[0] == losses[1]  # same recipe and seeds: same run
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--epochs", "5"])
    assert refused.exit_code == 2 and "--epochs" in refused.output


def test_bad_curricula_get_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    for text, match in (('name = "r"\nmodel = "blend2flux"\n', "no \\[\\[stages\\]\\]"),
                        ('name = "r"\nmodel = "blend2flux"\n[[stages]]\nepochs = 0\nseed = 1\n'
                         'name = "s"\n', "epochs"),
                        ('name = "r"\nmodel = "blend2flux"\n[[stages]]\nepochs = 1\nseed = -1\n'
                         'name = "s"\n', "seed"),
                        ('name = "r"\nmodel = "blend2flux"\n[[stages]]\nepochs = 1\nseed = 1\n'
                         'name = "s"\n[stages.train]\nknot_colour = 2\n', "stage 1.*knot_colour")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=match) as err:
            read_curriculum(path, "blend2flux")
        assert "\n" not in str(err.value)
