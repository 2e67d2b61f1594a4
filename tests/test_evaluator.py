"""The Python entry point for scoring: Evaluator, the per-galaxy table, score --per-galaxy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge import Evaluator, SubmissionError
from challenge.cli import app
from challenge.contract.release import resolve_release
from challenge.scoring import metrics as M
from challenge.scoring import scores as S

runner = CliRunner()


def score_cli(pred, folder, *options: str):
    """``blendbench score PRED --data FOLDER OPTIONS...``."""
    return runner.invoke(app, ["score", str(pred), "--data", str(folder), *options])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand", n=40, seed=3)


@pytest.fixture(scope="module")
def predictions(release):
    """Fluxes off by a few percent (one companion missed), masks shifted by a pixel, errors."""
    _, ids, flux, masks = release
    rng = np.random.default_rng(1)
    pred = flux * rng.uniform(0.9, 1.12, flux.shape)
    pred[5, 1] = 0.0
    return ids, pred, np.roll(masks, 1, axis=-1), 0.08 * flux


def test_eval_gives_the_numbers_of_blendbench_score(release, predictions, tmp_path):
    folder, *_ = release
    ids, flux, masks, err = predictions
    pred = write_h5(tmp_path / "predictions.h5", ids, flux, masks=masks, flux_err=err, name="m")
    res = score_cli(pred, folder, "--json", str(tmp_path / "s.json"), "--n-boot", "200")
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "s.json").read_text())
    order = np.random.default_rng(0).permutation(len(ids))  # any order of the blends
    mine = Evaluator(folder, n_boot=200).eval(
        ids[order], flux[order], masks[order], err[order], name="m"
    )
    assert json.loads(json.dumps(mine)) == cli
    assert {"overall", "bins", "ci95"} <= set(mine) and "iou" in mine["overall"]["both"]


def test_expected_format_states_shapes_for_this_release(release):
    folder, ids, *_ = release
    ev = Evaluator(folder)
    fmt = ev.expected_format
    assert fmt["flux"]["shape"] == (40, 2) and fmt["flux"]["required"]
    assert fmt["masks"]["shape"] == (40, 2, 32, 32) and not fmt["masks"]["required"]
    assert np.array_equal(ev.blend_id, ids) and ev.release == "hand"


def test_eval_rejects_bad_arrays_naming_the_field(release):
    folder, ids, flux, _ = release
    ev = Evaluator(folder, n_boot=0)
    with pytest.raises(SubmissionError, match=r"blend_id.*missing: blend_id 1117"):
        ev.eval(ids[:-1], flux[:-1])
    bad = flux.copy()
    bad[2, 0] = np.nan
    with pytest.raises(SubmissionError, match=r"field 'flux': NaN or inf for blend_id 1006"):
        ev.eval(ids, bad)
    with pytest.raises(SubmissionError, match=r"field 'masks'.*outside \[0, 1\]"):
        ev.eval(ids, flux, masks=np.full((40, 2, 32, 32), 2.0))


def test_eval_on_a_shipped_release_name_needs_only_its_tables():
    folder, _ = resolve_release("v1")
    pairs = Table.read(folder / "pairs_test.ecsv")
    flux = np.stack([pairs["flux_central"], pairs["flux_companion"]], axis=1)
    doc = Evaluator("v1", n_boot=0).eval(np.asarray(pairs["blend_id"]), 1.1 * flux)
    assert doc["release"] == "v1" and doc["overall"]["both"]["n"] == 10_000
    assert doc["overall"]["both"]["mape"] == pytest.approx(10.0)


def test_per_galaxy_table_rows_agree_with_the_scores(release, predictions):
    folder, ids, flux, truth_masks = release
    _, pred, masks, err = predictions
    ev = Evaluator(folder, n_boot=0)
    table = ev.per_galaxy(ids, pred, masks, err)
    doc = ev.eval(ids, pred, masks, err)
    assert len(table) == 80
    assert list(table["blend_id"][:4]) == [ids[0], ids[0], ids[1], ids[1]]
    assert list(table["role"][:2]) == ["central", "companion"]
    assert list(table["galaxy_id"][:2]) == [0, 40]  # central_id, companion_id of the table
    np.testing.assert_allclose(table["flux_true"].reshape(40, 2), flux)
    np.testing.assert_allclose(table["flux_pred"].reshape(40, 2), pred)
    for role in ("central", "companion"):
        rows = table[table["role"] == role]
        assert np.mean(rows["ape"]) == pytest.approx(doc["overall"][role]["mape"])
    assert np.mean(table["ape"]) == pytest.approx(doc["overall"]["both"]["mape"])
    assert table["delta_mag"][11] == np.inf and table["outlier"][11]  # the missed companion
    np.testing.assert_allclose(table["iou"].reshape(40, 2), M.iou(masks, truth_masks))
    np.testing.assert_allclose(table["flux_err"].reshape(40, 2), err)
    dm_pair = table["delta_mag_pair"][0]
    lo = S.DELTA_MAG_EDGES[np.searchsorted(S.DELTA_MAG_EDGES, dm_pair, side="right") - 1]
    assert table["bin_delta_mag"][0].startswith(f"[{lo:g}, ")
    morph_bins = {r["label"]: r["n"] for r in doc["bins"]["morphology"] if r["role"] == "both"}
    assert {m: int(np.sum(table["morphology"] == m)) for m in morph_bins} == morph_bins
    assert str(table["ape"].unit) == "%" and table.meta["release"] == "hand"


@pytest.mark.parametrize("name", ["galaxies.ecsv", "galaxies.csv", "galaxies.fits"])
def test_cli_score_per_galaxy_writes_the_table(release, predictions, tmp_path, name):
    folder, *_ = release
    ids, flux, masks, _ = predictions
    pred = write_h5(tmp_path / "predictions.h5", ids, flux, masks=masks)
    res = score_cli(pred, folder, "--n-boot", "0", "--per-galaxy", str(tmp_path / "out" / name))
    assert res.exit_code == 0, res.output
    assert "80 galaxies written" in res.output
    back = Table.read(tmp_path / "out" / name)
    expected = Evaluator(folder, n_boot=0).per_galaxy(ids, flux, masks)
    assert back.colnames == expected.colnames and len(back) == 80
    np.testing.assert_allclose(back["ape"], expected["ape"])
    assert list(back["bin_distance"]) == list(expected["bin_distance"])


def test_cli_score_per_galaxy_unknown_ending_exit_2_before_scoring(release, predictions, tmp_path):
    folder, *_ = release
    ids, flux, *_ = predictions
    pred = write_h5(tmp_path / "predictions.h5", ids, flux)
    res = score_cli(
        pred, folder, "--json", str(tmp_path / "s.json"), "--per-galaxy", str(tmp_path / "g.txt")
    )
    assert res.exit_code == 2
    assert "g.txt: unknown table format '.txt'; name the file .ecsv, .csv, .fits" in res.output
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "g.txt").exists()
