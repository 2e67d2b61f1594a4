"""The README's main job, ``blendbench demo``, and the synthetic -> real gap table."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.reports.leaderboard import generalisation_gap
from challenge.reports.references import NAMES as REFERENCE_NAMES

runner = CliRunner()


def test_demo_generates_and_ranks_the_references(tmp_path):
    folder = tmp_path / "mini"
    result = runner.invoke(app, ["demo", "--folder", str(folder)])
    assert result.exit_code == 0, result.output
    for name in ("figures/blends_test.png", "figures/galaxies.png",
                 "leaderboard/leaderboard.md", "leaderboard/leaderboard.html"):
        assert (folder / name).is_file(), name
    assert "oracle" in result.output and "sep" in result.output
    board = pd.read_csv(folder / "leaderboard" / "leaderboard.csv")
    assert board.loc[board["rank"] == 1, "name"].item() == "oracle"
    assert board["reference"].all() and set(REFERENCE_NAMES) <= set(board["name"])
    again = runner.invoke(app, ["demo", "--folder", str(folder)])  # cached, verified, re-scored
    assert again.exit_code == 0 and "using cached" in again.output
    assert pd.read_csv(folder / "leaderboard" / "leaderboard.csv").equals(board)


def test_generalisation_gap_pairs_methods_across_releases(tmp_path):
    cols = ["name", "release", "mape", "mape_lo", "mape_hi", "outlier_fraction"]
    pd.DataFrame([["sep", "v1", 20.0, 19.0, 21.0, 0.1], ["cnn", "v1", 5.0, 4.5, 5.5, 0.0]],
                 columns=cols).to_csv(tmp_path / "syn.csv", index=False)
    pd.DataFrame([["sep", "real", 30.0, 28.0, 32.0, 0.2]],
                 columns=cols).to_csv(tmp_path / "real.csv", index=False)
    gap = generalisation_gap(tmp_path / "syn.csv", tmp_path / "real.csv", tmp_path / "gap.md")
    assert list(gap["name"]) == ["sep"] and gap["ratio"].item() == pytest.approx(1.5)
    assert "| sep | 20.00 [19.00, 21.00] | 30.00 [28.00, 32.00] | 1.50 |" in (
        tmp_path / "gap.md").read_text()
    with pytest.raises(ReleaseError, match="no leaderboard table"):
        generalisation_gap(tmp_path / "nope.csv", tmp_path / "real.csv")
