"""Scoring against a small hand-made release: exact values, bins, bootstrap, compare, CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.ids import id_positions
from challenge.contract.release import MORPHOLOGIES, ReleaseInfo, ReleaseSpec
from challenge.contract.submission import Submission, read_submission
from challenge.scoring import metrics as M
from challenge.scoring import scores as S


def hand_release(
    folder: Path, n: int = 24, seed: int = 0, name: str = "hand", masks: bool = True, size: int = 32
):
    """A release folder with release.toml, pairs_test.ecsv and (optionally) test_truth.h5.

    Returns (folder, blend_id (n,), truth flux (n, 2), truth masks (n, 2, size, size) or None).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spec = ReleaseSpec(
        name=name, version="test", stamp_size=size, n_blends={"train": 0, "val": 0, "test": n}
    )
    info = ReleaseInfo(spec=spec, counts={"test": n}, fingerprints={})
    (folder / "release.toml").write_text(info.to_toml())
    ids = 1000 + 3 * np.arange(n, dtype=np.int64)
    mag = rng.uniform(19, 23, (n, 2))
    flux = 10 ** (-0.4 * (mag - spec.zero_point))
    dx, dy = rng.integers(-8, 9, n), rng.integers(-8, 9, n)
    r_e = rng.uniform(2, 6, (n, 2))
    morph = np.array(MORPHOLOGIES)[np.arange(2 * n).reshape(n, 2) % 4]
    Table(
        {
            "blend_id": ids,
            "central_id": np.arange(n),
            "companion_id": np.arange(n) + n,
            "dx": dx,
            "dy": dy,
            "mag_central": mag[:, 0],
            "mag_companion": mag[:, 1],
            "flux_central": flux[:, 0],
            "flux_companion": flux[:, 1],
            "model_flux_central": 1.25 * flux[:, 0],
            "model_flux_companion": 1.25 * flux[:, 1],
            "r_e_central": r_e[:, 0],
            "r_e_companion": r_e[:, 1],
            "morph_central": morph[:, 0],
            "morph_companion": morph[:, 1],
            "distance_px": np.hypot(dx, dy),
            "noise_seed": np.arange(n),
        }
    ).write(folder / "pairs_test.ecsv", format="ascii.ecsv", overwrite=True)
    m = None
    if masks:
        yy, xx = np.mgrid[:size, :size]
        c = size // 2
        m = np.zeros((n, 2, size, size), np.uint8)
        for i in range(n):
            m[i, 0] = (yy - c) ** 2 + (xx - c) ** 2 < (1.5 * r_e[i, 0]) ** 2
            m[i, 1] = (yy - c - dy[i]) ** 2 + (xx - c - dx[i]) ** 2 < (1.5 * r_e[i, 1]) ** 2
        perm = rng.permutation(n)  # truth file in another order than the table
        with h5py.File(folder / "test_truth.h5", "w") as f:
            f["blend_id"] = ids[perm]
            f["flux"] = flux[perm]
            f["model_flux"] = 1.25 * flux[perm]
            f.create_dataset("masks", data=m[perm], chunks=(4, 2, size, size), compression="gzip")
            f.attrs["release"] = name
    return folder, ids, flux, m


def write_h5(
    path: Path, ids, flux, *, masks=None, flux_err=None, detection=None, release="hand", name=None
) -> Path:
    with h5py.File(path, "w") as f:
        f["blend_id"] = ids
        f["flux"] = flux
        if masks is not None:
            f.create_dataset("masks", data=masks, compression="gzip")
        if flux_err is not None:
            f["flux_err"] = flux_err
        if detection is not None:
            f["detection"] = detection
        if release is not None:
            f.attrs["release"] = release
        if name is not None:
            f.attrs["name"] = name
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand")


def _sub(ids, flux, **kw) -> Submission:
    return Submission(
        name=kw.pop("name", "test"),
        release=kw.pop("release", "hand"),
        blend_id=np.asarray(ids),
        flux=np.asarray(flux, float),
        **kw,
    )


def test_load_truth(release):
    folder, ids, flux, _ = release
    t = S.load_truth(folder)
    assert t.release == "hand" and t.kind == "sep" and t.n == len(ids)
    np.testing.assert_allclose(t.flux, flux)
    assert t.has_masks and t.stamp_size == 32
    np.testing.assert_allclose(S.load_truth(folder, "model").flux, 1.25 * flux)


def test_perfect_submission(release):
    folder, ids, flux, masks = release
    sc = S.score(_sub(ids, flux, masks=masks.astype(bool)), S.load_truth(folder), n_boot=50)
    for role in S.ROLES:
        ov = sc.overall[role]
        assert ov["mape"] == 0 and ov["bias"] == 0 and ov["scatter"] == 0
        assert ov["iou"] == 1 and ov["mask_area_bias"] == 0 and ov["detected_fraction"] == 1
    assert sc.overall["both"]["n"] == 2 * len(ids)


def test_known_perturbation_and_order(release):
    folder, ids, flux, _ = release
    truth = S.load_truth(folder)
    pred = flux * 1.1
    pred[0, 1] = 0.0  # one non-detection
    perm = np.random.default_rng(1).permutation(len(ids))
    sc = S.score(_sub(ids[perm], pred[perm]), truth, n_boot=0)
    both = sc.overall["both"]
    n = 2 * len(ids)
    assert both["mape"] == pytest.approx(100 * ((n - 1) * 0.1 + 1.0) / n)
    assert both["bias"] == pytest.approx(-2.5 * math.log10(1.1))
    assert both["scatter"] == pytest.approx(0, abs=1e-12)
    assert both["outlier_fraction"] == pytest.approx(1 / n)
    assert both["detected_fraction"] == pytest.approx((n - 1) / n)
    assert sc.overall["central"]["mape"] == pytest.approx(10.0)
    assert sc.ci95 == {}


def test_model_truth(release):
    folder, ids, flux, _ = release
    sc = S.score(_sub(ids, flux), S.load_truth(folder, "model"), n_boot=0)
    assert sc.truth == "model"
    assert sc.overall["both"]["mape"] == pytest.approx(20.0)  # |1 - 1.25| / 1.25


def test_selection(release):
    folder, ids, flux, _ = release
    pred = flux.copy()
    pred[:, 1] *= 2  # companions all wrong
    sel = np.zeros((len(ids), 2), bool)
    sel[:, 0] = True
    sel[:3, 1] = True
    sc = S.score(_sub(ids, pred), S.load_truth(folder), selection=sel, n_boot=20)
    assert sc.overall["central"]["mape"] == 0
    assert sc.overall["companion"]["n"] == 3
    assert sc.overall["companion"]["mape"] == pytest.approx(100.0)
    assert sc.overall["both"]["n"] == len(ids) + 3


def test_bins(release):
    folder, ids, flux, _ = release
    truth = S.load_truth(folder)
    sc = S.score(_sub(ids, flux * 1.1), truth, n_boot=0)
    dm_rows = [r for r in sc.bins["delta_mag"] if r["role"] == "central"]
    assert len(dm_rows) == 8 and dm_rows[0]["lo"] == -2.0 and dm_rows[-1]["hi"] == 2.0
    pair = truth.delta_mag_pair
    for r in dm_rows:
        inside = (pair >= r["lo"]) & ((pair < r["hi"]) | (r["hi"] == 2.0) & (pair <= 2.0))
        assert r["n"] == inside.sum()
        if r["n"] == 0:
            assert math.isnan(r["mape"]) and math.isnan(r["median_dmag"])
        else:
            assert r["mape"] == pytest.approx(10.0)
    dist = [r for r in sc.bins["distance"] if r["role"] == "both"]
    assert len(dist) == 9 and dist[-1]["label"] == "4+" and dist[-1]["hi"] is None
    assert sum(r["n"] for r in dist) == 2 * len(ids)
    morph = [r for r in sc.bins["morphology"] if r["role"] == "both"]
    assert [r["label"] for r in morph] == list(MORPHOLOGIES)
    assert sum(r["n"] for r in morph) == 2 * len(ids)


def test_empty_bin_is_nan_with_zero_count():
    idx = S._bin_index(np.array([-3.0, -2.0, 1.99, 2.0, 2.5]), S.DELTA_MAG_EDGES)
    assert list(idx) == [-1, 0, 7, 7, -1]
    idx = S._bin_index(np.array([0.0, 3.99, 4.0, 100.0]), S.DISTANCE_EDGES)
    assert list(idx) == [0, 7, 8, 8]


def _direct(values, valid, idx):
    """Per-resample medians the slow way."""
    out = []
    for row in idx:
        v, ok = values[row], valid[row]
        x = v[ok]
        out.append(np.median(x) if x.size else np.nan)
    return np.array(out)


def test_bootstrap_matches_direct_computation():
    rng = np.random.default_rng(3)
    n = 40
    truth = rng.uniform(10, 100, (n, 2))
    flux = truth * rng.lognormal(0, 0.2, (n, 2))
    flux[rng.random((n, 2)) < 0.1] = 0.0
    sel = rng.random((n, 2)) < 0.8
    gal = S.Galaxies(flux=flux, truth=truth, selected=sel)
    idx, W = S.resample_index(n, 60, seed=5)
    reps = S._Bootstrap(gal, W, idx).replicates()
    for role, cols in (("central", [0]), ("companion", [1]), ("both", [0, 1])):
        for b in range(60):
            rows = idx[b]
            f = flux[rows][:, cols].ravel()
            t = truth[rows][:, cols].ravel()
            s = sel[rows][:, cols].ravel()
            ref = M.summarize(f[s], t[s])
            for key in (
                "mape",
                "median_ape",
                "bias",
                "median_dmag",
                "scatter",
                "nmad",
                "outlier_fraction",
                "detected_fraction",
            ):
                got = reps[role][key][b]
                if math.isnan(ref[key]):
                    assert math.isnan(got)
                else:
                    assert got == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (role, key, b)


def test_weighted_median_window_fallback():
    # a tiny window forces the full-range path for most rows: results must not change
    rng = np.random.default_rng(0)
    values = rng.normal(size=(300, 2))
    valid = rng.random((300, 2)) < 0.9
    idx, W = S.resample_index(300, 40, seed=1)
    for half in (None, 2):
        got = S._weighted_median(values, valid, W, half_window=half)
        np.testing.assert_allclose(got, _direct(values, valid, idx))


def test_ci_reproducible_and_contains_estimate(release):
    folder, ids, flux, _ = release
    rng = np.random.default_rng(2)
    pred = flux * rng.lognormal(0, 0.2, flux.shape)
    truth = S.load_truth(folder)
    a = S.score(_sub(ids, pred), truth, n_boot=300, seed=11)
    b = S.score(_sub(ids, pred), truth, n_boot=300, seed=11)
    assert a.ci95 == b.ci95
    lo, hi = a.ci95["both"]["mape"]
    assert lo <= a.overall["both"]["mape"] <= hi and lo < hi


def test_masks_without_truth_file_warn(tmp_path):
    folder, ids, flux, _ = hand_release(tmp_path / "nomask", n=6, masks=False)
    sub = _sub(ids, flux, masks=np.ones((6, 2, 32, 32), bool))
    sc = S.score(sub, S.load_truth(folder), n_boot=10)
    assert "iou" not in sc.overall["both"]
    assert any("IoU skipped" in w for w in sc.warnings)


def test_score_json(release, tmp_path):
    folder, ids, flux, masks = release
    sub = _sub(ids, flux * 1.05, masks=masks.astype(bool), flux_err=0.05 * flux)
    sc = S.score(sub, S.load_truth(folder), n_boot=50)
    S.write_json(tmp_path / "s.json", sc.to_dict())
    doc = json.loads((tmp_path / "s.json").read_text())
    json.dumps(doc, allow_nan=False)
    assert doc["release"] == "hand" and doc["truth"] == "sep" and doc["submission"] == "test"
    for role in ("both", "central", "companion"):
        assert {
            "n",
            "mape",
            "median_ape",
            "bias",
            "median_dmag",
            "scatter",
            "nmad",
            "outlier_fraction",
            "detected_fraction",
            "iou",
            "coverage_68",
            "crps",
        } <= set(doc["overall"][role])
        assert len(doc["ci95"][role]["mape"]) == 2
    assert set(doc["bins"]) == {"delta_mag", "distance", "morphology"}


def test_compare(release):
    folder, ids, flux, _ = release
    truth = S.load_truth(folder)
    rng = np.random.default_rng(4)
    good = _sub(ids, flux * rng.lognormal(0, 0.02, flux.shape), name="good")
    bad = _sub(ids, flux * rng.lognormal(0, 0.5, flux.shape), name="bad")
    res = S.compare(good, bad, truth, n_boot=200)
    r = res["overall"]["both"]["mape"]
    assert r["diff"] < 0 and r["ci95"][1] < 0 and r["better"] == "A"
    assert res["overall"]["both"]["scatter"]["better"] == "A"
    same = S.compare(good, good, truth, n_boot=50)
    assert same["overall"]["both"]["mape"]["diff"] == 0
    assert same["overall"]["both"]["mape"]["better"] == "tie"
    assert {row["role"] for row in res["bins"]["distance"]} == set(S.ROLES)
    json.dumps(res, allow_nan=False)


def test_shipped_release_scores_fluxes_only(tmp_path):
    try:
        truth = S.load_truth("mini")
    except Exception:
        pytest.skip("mini tables not shipped yet")
    sc = S.score(_sub(truth.blend_id, truth.flux, release="mini"), truth, n_boot=10)
    assert sc.overall["both"]["mape"] == 0


# ---------------------------------------------------------------------------------------------
# CLI

runner = CliRunner()


def test_cli_score_writes_json_and_plots(release, tmp_path):
    folder, ids, flux, masks = release
    pred = write_h5(tmp_path / "predictions.h5", ids, flux * 1.05, masks=masks, name="m")
    out = tmp_path / "s.json"
    res = runner.invoke(
        app,
        [
            "score",
            str(pred),
            "--data",
            str(folder),
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--n-boot",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "MAPE" in res.output
    assert json.loads(out.read_text())["overall"]["both"]["mape"] == pytest.approx(5.0)
    assert (tmp_path / "plots" / "iou_hist.png").is_file()
    assert (tmp_path / "plots" / "bias_vs_delta_mag.png").is_file()


def test_cli_score_bad_file_exit_2_nothing_written(release, tmp_path):
    folder, ids, flux, _ = release
    pred = write_h5(tmp_path / "predictions.h5", ids[1:], flux[1:])
    out = tmp_path / "s.json"
    res = runner.invoke(app, ["score", str(pred), "--data", str(folder), "--json", str(out)])
    assert res.exit_code == 2
    assert "predictions.h5" in res.output and "blend_id" in res.output
    assert str(ids[0]) in res.output
    assert not out.exists()


def test_cli_score_wrong_release_and_unknown_data(release, tmp_path):
    folder, ids, flux, _ = release
    pred = write_h5(tmp_path / "p.h5", ids, flux, release="v1")
    res = runner.invoke(app, ["score", str(pred), "--data", str(folder)])
    assert res.exit_code == 2 and "release" in res.output
    res = runner.invoke(app, ["score", str(pred), "--data", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "release.toml" in res.output
    res = runner.invoke(app, ["score", str(pred), "--data", str(folder), "--truth", "x"])
    assert res.exit_code == 2 and "--truth" in res.output


def test_cli_compare(release, tmp_path):
    folder, ids, flux, _ = release
    a = write_h5(tmp_path / "a.h5", ids, flux * 1.01, name="a")
    b = write_h5(tmp_path / "b.h5", ids, flux * 1.3, name="b")
    res = runner.invoke(
        app,
        [
            "compare",
            str(a),
            str(b),
            "--data",
            str(folder),
            "--n-boot",
            "50",
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "better" in res.output
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["overall"]["both"]["mape"]["better"] == "A"


def test_cli_format():
    res = runner.invoke(app, ["format"])
    assert res.exit_code == 0 and "flux_central" in res.output and "masks" in res.output


def test_read_back_from_folder(release, tmp_path):
    folder, ids, flux, _ = release
    sub_dir = tmp_path / "submissions" / "mine"
    sub_dir.mkdir(parents=True)
    write_h5(sub_dir / "predictions.h5", ids, flux, release=None)
    (sub_dir / "submission.toml").write_text('name = "mine"\nrelease = "hand"\n')
    sub = read_submission(sub_dir)
    assert sub.name == "mine" and sub.release == "hand"
    assert S.score(sub, S.load_truth(folder), n_boot=0).overall["both"]["mape"] == 0


_VERDICT_ROW = re.compile(r"\[([+-]?[\d.]+), ([+-]?[\d.]+)\]\s+(A|B|tie|n/a)\s*$")


def test_compare_verdict_reads_the_interval_it_is_shown_with(release, tmp_path, columns80):
    """A bias of +0.05 mag against one of -0.05 mag: the signed A - B excludes 0, but neither is
    closer to 0, so the verdict is a tie, shown with the |bias| interval that contains 0."""
    folder, ids, flux, _ = release
    rng = np.random.default_rng(5)
    noise = rng.lognormal(0, 0.1, (2, *flux.shape))
    a = write_h5(tmp_path / "a.h5", ids, flux * noise[0] * 10 ** (-0.4 * 0.05), name="plus")
    b = write_h5(tmp_path / "b.h5", ids, flux * noise[1] * 10 ** (0.4 * 0.05), name="minus")
    res = S.compare(read_submission(a), read_submission(b), S.load_truth(folder), n_boot=50)
    row = res["overall"]["both"]["bias"]
    assert row["ci95"][0] > 0 and row["better"] == "tie" and row["loss"] == "|bias|"
    assert row["loss_ci95"][0] <= 0 <= row["loss_ci95"][1]
    out = runner.invoke(app, ["compare", str(a), str(b), "--data", str(folder), "--n-boot", "50"])
    assert out.exit_code == 0, out.output
    columns80(out.output)
    assert "|bias| (mag)" in out.output and "outliers %" in out.output
    assert "outlier_fraction" not in out.output and "median_dmag" not in out.output
    assert not re.search(r"–\s+–", out.output)  # no empty bin as a row of dashes
    rows = [m.groups() for m in map(_VERDICT_ROW.search, out.output.splitlines()) if m]
    assert len(rows) > 10
    for lo, hi, verdict in rows:
        lo, hi = float(lo), float(hi)
        assert {"A": hi <= 0, "B": lo >= 0, "tie": lo <= 0 <= hi, "n/a": True}[verdict], rows


def test_cli_score_fits_80_columns(release, tmp_path, columns80):
    folder, ids, flux, _ = release
    rng = np.random.default_rng(3)
    pred = write_h5(tmp_path / "p.h5", ids, flux * rng.lognormal(0, 0.5, flux.shape), name="p")
    res = runner.invoke(app, ["score", str(pred), "--data", str(folder), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    columns80(res.output)
    assert "bias (mag)" in res.output and "σ (mag)" in res.output
    sc = S.score(read_submission(pred), S.load_truth(folder), n_boot=20)
    out_pct = f"{100 * sc.overall['both']['outlier_fraction']:.1f}"
    assert re.search(rf"outliers %\s+{re.escape(out_pct)}\s", res.output), res.output
    # every interval whole on one line
    assert len(re.findall(r"\[[+-]?[\d.]+, [+-]?[\d.]+\]", res.output)) >= 3 * 8


def test_id_positions_find_each_id_and_say_which_are_missing():
    ids = np.array([40, 10, 30, 10, 20])
    pos, found = id_positions(ids, np.array([[10, 20], [99, 40]]))
    assert found.tolist() == [[True, True], [False, True]]
    assert pos[found].tolist() == [1, 4, 0]  # a repeated id: its first position
    assert not id_positions(ids, np.array([5, 41]))[1].any()  # below and above every id
    pos, found = id_positions(np.array([], int), np.array([1, 2]))
    assert pos.shape == (2,) and not found.any()


def test_truth_masks_of_a_foreign_blend_are_one_clear_error(tmp_path):
    folder, ids, flux, masks = hand_release(tmp_path / "h", n=6)
    with h5py.File(folder / "test_truth.h5", "r+") as f:
        blend_id = f["blend_id"][:]
        blend_id[0] = blend_id.max() + 1000  # past every id of the table: not an IndexError
        f["blend_id"][...] = blend_id
    with pytest.raises(ReleaseError, match=r"test_truth\.h5: blend ids differ from pairs_test"):
        S.score(_sub(ids, flux, masks=masks.astype(bool)), S.load_truth(folder), n_boot=5)
