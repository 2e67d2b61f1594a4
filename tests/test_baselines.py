"""The sep baseline and the noise-floor oracle."""

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from baselines.oracle import run_oracle
from baselines.sep_baseline import (
    BOTH,
    CENTRAL_ONLY,
    COMPANION_ONLY,
    deblend_blend,
    run_sep_baseline,
)
from challenge.cli import app


def gaussian(flux, sigma, x0, y0, size=128):
    yy, xx = np.mgrid[:size, :size]
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return flux * g / (2 * np.pi * sigma**2)


def noise(seed):
    return np.random.default_rng(seed).normal(0, 0.012, (128, 128))


def test_two_well_separated_gaussians_recover_their_fluxes():
    image = gaussian(300, 2.5, 64, 64) + gaussian(120, 2.0, 90, 50) + noise(0)
    result = deblend_blend(image, r_e_central=3.0)
    assert result.detection == BOTH and result.mode == "cold"
    assert result.flux == pytest.approx([300, 120], rel=0.03)
    assert result.masks[0, 64, 64] == 1 and result.masks[1, 50, 90] == 1
    assert not np.any(result.masks[0] & result.masks[1])


def test_a_single_detection_near_the_centre_is_the_central():
    image = gaussian(200, 2.5, 65, 64) + noise(1)
    result = deblend_blend(image, r_e_central=4.0)  # 1 px off, within 0.5 R_e = 2 px
    assert result.detection == CENTRAL_ONLY
    assert result.flux[1] == 0 and result.flux[0] == pytest.approx(200, rel=0.03)


def test_a_single_detection_off_the_centre_is_the_companion():
    image = gaussian(200, 2.5, 70, 64) + noise(2)
    result = deblend_blend(image, r_e_central=4.0)  # 6 px off, beyond 0.5 R_e = 2 px
    assert result.detection == COMPANION_ONLY
    assert result.flux[0] == 0 and result.flux[1] == pytest.approx(200, rel=0.03)
    assert result.masks[0].sum() == 0 and result.masks[1, 64, 70] == 1


def test_the_oracle_beats_sep_on_the_mini_release(mini_release, tmp_path):
    sep_result, _ = run_sep_baseline(mini_release, tmp_path / "sep", workers=2)
    oracle_result, _ = run_oracle(mini_release, tmp_path / "oracle", workers=2)
    with h5py.File(mini_release / "test_truth.h5") as f:
        truth = f["flux"][:]
    mape = {
        name: 100 * np.mean(np.abs(r["flux"] - truth) / truth)
        for name, r in (("sep", sep_result), ("oracle", oracle_result))
    }
    assert mape["oracle"] < 10 < 20 < mape["sep"], mape
    with h5py.File(tmp_path / "sep" / "predictions.h5") as f:
        assert f.attrs["release"] == "mini" and f["flux"].shape == (200, 2)
        assert set(np.unique(f["detection"][:])) <= {-1, 0, 1, 2, 3}
        assert f["masks"].dtype == np.uint8


def test_baseline_cli_writes_a_submission_folder(tiny_release, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sep"
    result = runner.invoke(
        app, ["baseline", "sep", "--data", str(tiny_release), "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "detection cases" in result.output
    assert (out / "predictions.h5").is_file() and (out / "submission.toml").is_file()
    result = runner.invoke(app, ["baseline", "oracle", "--data", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no release.toml" in result.output
