"""The CNN configurations: the registered set, and experiments as TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from baselines.cnn.configs import CONFIGS, ConfigError, load_config, read_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "configs"


def test_the_registry_holds_the_reference_configs_only():
    assert set(CONFIGS) == {
        ("blend2flux", "paper"), ("blend2flux", "compact"), ("blend2flux", "tiny"),
        ("blend2mask2flux", "paper"), ("blend2mask2flux", "compact"),
        ("blend2mask2flux", "compact-end-to-end"), ("blend2mask2flux", "tiny"),
    }


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_experiment_reads_back_as_written(path):
    if "run it at the git tag" in path.read_text():  # options of an earlier version
        with pytest.raises(ConfigError, match="older version runs at its git tag"):
            read_config(path)
        return
    config = read_config(path)
    assert path.stem == f"{config.model}-{config.name}"
    assert read_config(path, config.model) == config
    text = path.read_text()
    assert f"--config docs/experiments/configs/{path.name}" in text  # how to run it


def test_a_config_file_round_trips_and_bad_ones_get_one_line(tmp_path):
    compact = CONFIGS[("blend2flux", "compact")]
    doc = {k: list(v) if isinstance(v, tuple) else v for k, v in compact.to_dict().items()}
    doc["arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in doc["arch"].items()}
    doc["train"] = {k: list(v) if isinstance(v, tuple) else v for k, v in doc["train"].items()}
    path = tmp_path / "mine.toml"
    path.write_text(tomli_w.dumps(doc))
    assert load_config("blend2flux", str(path)) == compact

    def refused(text: str, match: str, model: str = "blend2flux") -> None:
        path.write_text(text)
        with pytest.raises(ConfigError, match=match) as err:
            load_config(model, str(path))
        assert "\n" not in str(err.value) and str(path) in str(err.value)

    refused('name = "x"\nmodel = "blend2flux"\n[train]\nknot_colour = 1\n', "knot_colour")
    refused('name = "x"\nmodel = "blend2flux"\n[train]\npsf_sigma_px = 1.0\n', "psf_sigma_px")
    refused('name = "x"\nmodel = "blend2flux"\n[arch]\ncoords = "yes"\n', "coords")
    refused('name = "x"\nmodel = "blend2mask2flux"\n', "not blend2flux")
    refused('model = "blend2flux"\n', "'name'")
    refused("name = \n", "not a readable TOML")
    with pytest.raises(ConfigError, match="FILE.toml"):
        load_config("blend2flux", "compact-robust-knots6")
