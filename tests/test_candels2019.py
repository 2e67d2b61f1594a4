"""The candels2019 track reproduces the numbers of Boucaud et al. (2019) from their predictions."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from challenge.cli import app
from challenge.reports.candels2019 import (
    PAPER,
    candels_table,
    data_path,
    load_candels,
    score_candels,
)


@pytest.fixture(scope="module")
def scores():
    return score_candels(n_boot=0)


def central(scores, method, selection="paper"):
    return scores[(method, selection)].overall["central"]


def test_data_shipped_with_the_package():
    assert data_path().is_file()
    assert (data_path().parent / "README.md").is_file()
    truth, subs = load_candels()
    assert truth.n == 4776 and set(subs) == {"blend2flux", "blend2mask2flux", "sep"}
    # the truth fluxes are the catalogue magnitudes at zero point 25.96
    np.testing.assert_allclose(-2.5 * np.log10(truth.flux) + 25.96, truth.mag, atol=1e-9)


def test_paper_selection_sizes(scores):
    assert central(scores, "blend2flux")["n"] == 3844  # cases 0 or 2
    assert scores[("blend2flux", "paper")].overall["companion"]["n"] == 4344  # cases 1 or 2


def test_blend2flux_reproduces_paper(scores):
    c = central(scores, "blend2flux")
    assert round(c["mape"], 2) == PAPER["blend2flux"]["mape"] == 7.57
    assert round(c["scatter"], 3) == PAPER["blend2flux"]["scatter"] == 0.120


def test_blend2mask2flux_reproduces_paper(scores):
    c = central(scores, "blend2mask2flux")
    # The kit gives 6.7848%; the paper prints 6.79. No selection or convention we tried lands
    # on [6.785, 6.795) (see challenge/data/candels2019/README.md); the difference, 0.005
    # percentage point, is 1/100 of the 95% interval and matches rounding 6.785 half up.
    assert c["mape"] == pytest.approx(6.7848, abs=1e-4)
    assert abs(c["mape"] - PAPER["blend2mask2flux"]["mape"]) < 0.006


def test_sep_reproduces_paper(scores):
    c = central(scores, "sep")
    assert round(c["bias"], 2) == PAPER["sep"]["bias"] == 0.10
    assert round(c["scatter"], 2) == PAPER["sep"]["scatter"] == 0.54
    assert round(c["outlier_fraction"], 3) == PAPER["sep"]["outlier_fraction"] == 0.124


def test_all_galaxies_count_non_detections_as_failures(scores):
    c = central(scores, "sep", "all")
    assert c["n"] == 4776
    assert c["detected_fraction"] == pytest.approx(1 - 794 / 4776)  # case 1: central missed
    assert c["outlier_fraction"] > central(scores, "sep")["outlier_fraction"]
    assert central(scores, "blend2flux", "all")["detected_fraction"] == 1.0


def test_table_has_paper_columns(scores):
    df = candels_table(scores)
    assert len(df) == 3 * 2 * 3
    row = df[(df.method == "sep") & (df.selection == "paper") & (df.role == "central")].iloc[0]
    assert row["paper_scatter"] == 0.54


def test_cli_track(tmp_path):
    res = CliRunner().invoke(
        app, ["leaderboard", "--track", "candels2019", "--out", str(tmp_path), "--n-boot", "20"]
    )
    assert res.exit_code == 0, res.output
    md = (tmp_path / "candels2019.md").read_text()
    assert "7.57" in md and "(paper 7.57)" in md and "(paper 12.4)" in md
    assert "blend2mask2flux" in res.output


def test_cli_track_fits_80_columns(tmp_path, columns80):
    res = CliRunner().invoke(
        app, ["leaderboard", "--track", "candels2019", "--out", str(tmp_path), "--n-boot", "10"]
    )
    assert res.exit_code == 0, res.output
    columns80(res.output)
    assert "b2m2f = blend2mask2flux" in res.output  # abbreviations come with their legend
    assert "[" in res.output and "(mag)" in res.output
    # every row keeps its interval and its detected % whole
    rows = [ln for ln in res.output.splitlines() if ln.startswith(("b2f ", "b2m2f ", "sep "))]
    assert len(rows) >= 18
    assert all(re.search(r"\[\d+\.\d\d, \d+\.\d\d\]", ln) for ln in rows[:18]), rows
    assert "7.57 (7.57)" in res.output  # the paper's value next to the kit's
