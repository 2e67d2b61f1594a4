"""The reference set and ``blendbench references``: the plan of a release, a resumable rebuild,
and submissions without their maps."""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.submission import read_submission
from challenge.reports.references import NAMES, REFERENCE_SET, plan, run_plan

runner = CliRunner()


def test_the_plan_makes_every_reference_then_the_leaderboard(tmp_path):
    steps = plan("v1-psf", "releases/v1-psf", submissions=tmp_path / "s", boards=tmp_path / "b",
                 maps=False)
    assert [s.name for s in steps] == [*NAMES, "leaderboard"]
    assert len(REFERENCE_SET) == 10
    by_name = {s.name: s for s in steps}
    assert by_name["blend2mask2flux"].argv[:2] == ("baseline", "blend2mask2flux")
    assert "--no-maps" in by_name["sep"].argv and "--no-maps" not in by_name["blend2flux"].argv
    weights = [a for a in by_name["cnn-ensemble-robust"].argv if a.endswith("model.keras")]
    assert [w.split("/")[-2] for w in weights] == ["blend2flux-robust", "blend2mask2flux-robust"]
    assert by_name["leaderboard"].output == tmp_path / "b" / "v1-psf" / "leaderboard.csv"
    real = plan("cosmos-example", "x", synthetic=False)
    assert "oracle" not in [s.name for s in real]


def test_a_rebuild_resumes_and_ranks_the_references(tiny_release, tmp_path):
    subs, boards = tmp_path / "submissions", tmp_path / "leaderboard"
    steps = [s for s in plan("tiny", tiny_release, submissions=subs, boards=boards, maps=False)
             if s.name in ("sep", "oracle", "leaderboard")]
    seen = []
    run_plan(steps, report=lambda step, what, _: seen.append((step.name, what)))
    assert seen == [("oracle", "done"), ("sep", "done"), ("leaderboard", "done")]
    with h5py.File(subs / "tiny" / "sep" / "predictions.h5") as f:
        assert "masks" not in f and "detection" in f  # --no-maps: fluxes and detections
    board = pd.read_csv(boards / "tiny" / "leaderboard.csv")
    assert set(board.loc[board["view"] == "all", "name"]) == {"sep", "oracle"}
    assert board["reference"].all()
    seen.clear()
    run_plan(steps, report=lambda step, what, _: seen.append((step.name, what)))
    assert seen == [("oracle", "skipped"), ("sep", "skipped"), ("leaderboard", "skipped")]


def test_no_maps_keeps_the_fluxes_and_the_dry_run_lists_the_steps(tiny_release, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, extra in ((a, []), (b, ["--no-maps"])):
        res = runner.invoke(app, ["baseline", "sep", "--data", str(tiny_release), "--out",
                                  str(out), "--workers", "1", *extra])
        assert res.exit_code == 0, res.output
    full, lean = read_submission(a), read_submission(b)
    assert full.masks is not None and lean.masks is None
    assert (full.flux == lean.flux).all() and (full.detection == lean.detection).all()
    res = runner.invoke(app, ["references", "--data", str(tiny_release), "--dry-run",
                              "--submissions", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "references of tiny: 11 steps" in res.output and "blendbench baseline sep" in res.output
    assert not (tmp_path / "s").exists()
    res = runner.invoke(app, ["references", "--data", "v1"])
    assert res.exit_code == 2 and "give a generated release folder" in res.output


def test_a_v1_rebuild_can_train_the_cnns_first(tmp_path):
    steps = plan("v1", "releases/v1", submissions=tmp_path / "s", boards=tmp_path / "b",
                 train=True, runs=tmp_path / "runs")
    names = [s.name for s in steps]
    trained = [n for n in names if n.startswith("train ")]
    assert trained == ["train blend2flux", "train blend2mask2flux",
                       "train blend2mask2flux-end-to-end", "train blend2flux-robust",
                       "train blend2mask2flux-robust"]
    assert names.index(trained[-1]) < names.index("blend2flux")  # weights before their use
    robust = next(s for s in steps if s.name == "train blend2flux-robust")
    assert robust.argv[:5] == ("train", "blend2flux", "--config", "robust", "--data")
    assert "90 epochs" in robust.note and not robust.done()
    ensemble = next(s for s in steps if s.name == "cnn-ensemble-robust")
    assert str(tmp_path / "runs" / "blend2flux-robust" / "model.keras") in ensemble.argv
    assert "--no-copy-weights" not in next(s for s in steps if s.name == "blend2flux").argv
    with pytest.raises(ReleaseError, match="trained on v1 only"):
        plan("v1-psf", "releases/v1-psf", train=True)
