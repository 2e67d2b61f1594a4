"""The robustness report: methods on shift tracks vs the base release, with hand-computed answers.

A 40-blend base release ``hand`` and three tracks made from it: ``hand-psf`` (its first 25
blends), ``hand-noise`` (blends 10-39), both keeping the base's blend ids, and ``hand-real`` (other
blend ids, galaxies 1.5 mag fainter). Every submission's fluxes are the truth times a known
factor, so each MAPE is a mean of known numbers.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.release import ReleaseInfo, ReleaseSpec
from challenge.contract.submission import read_submission
from challenge.reports.robustness import (
    TRACK_DESCRIPTIONS,
    build_robustness,
    find_tracks,
    spec_changes,
    track_description,
)
from challenge.scoring.scores import load_truth, score

runner = CliRunner()
N = 40
BASE_SCALE = {"a": 0.05, "b": 0.10, "c": 0.20}  # APE = scale x u, u in [0.5, 1.5]
TRACK_FACTOR = {"hand-psf": {"a": 1.10, "b": 1.30, "c": 1.40},  # same ranking as the base
                "hand-noise": {"a": 1.30, "b": 1.20, "c": 1.10}}  # reversed
REAL_SCALE = {"a": 0.06, "b": 0.12, "c": 0.20}  # APE = scale x (mag - 19) / 2
ROWS = {"hand-psf": np.arange(25), "hand-noise": np.arange(10, 40)}


def make_track(base: Path, dest: Path, name: str, rows: np.ndarray, *, id_shift: int = 0,
               mag_shift: float = 0.0) -> Table:
    """A track folder: the base's release.toml renamed, and some of its test blends."""
    dest.mkdir(parents=True)
    info = ReleaseInfo.read(base / "release.toml")
    spec = dataclasses.replace(info.spec, name=name,
                               n_blends={"train": 0, "val": 0, "test": len(rows)})
    (dest / "release.toml").write_text(dataclasses.replace(info, spec=spec).to_toml())
    pairs = Table.read(base / "pairs_test.ecsv", format="ascii.ecsv")[rows]
    pairs["blend_id"] += id_shift
    for role in ("central", "companion"):
        pairs[f"mag_{role}"] += mag_shift
        pairs[f"flux_{role}"] = 10 ** (-0.4 * (pairs[f"mag_{role}"] - spec.zero_point))
    pairs.write(dest / "pairs_test.ecsv", format="ascii.ecsv")
    return pairs


def submit(root: Path, method: str, release: str, ids, flux) -> None:
    d = root / method
    d.mkdir(parents=True)
    (d / "submission.toml").write_text(f'name = "{method}"\nrelease = "{release}"\n')
    write_h5(d / "predictions.h5", ids, flux, release=release, name=method)


def _flux(pairs: Table) -> np.ndarray:
    return np.stack([pairs["flux_central"], pairs["flux_companion"]], axis=1).astype(float)


def _mag(pairs: Table) -> np.ndarray:
    return np.stack([pairs["mag_central"], pairs["mag_companion"]], axis=1).astype(float)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Release folders in ``rel/`` (base ``hand`` + 3 tracks), submissions in ``submissions/``."""
    root = tmp_path_factory.mktemp("robust")
    rel = root / "rel"
    base, ids, flux, _ = hand_release(rel / "hand", n=N, masks=False)
    subs = root / "submissions"
    rng = np.random.default_rng(3)
    u = {m: rng.uniform(0.5, 1.5, (N, 2)) for m in BASE_SCALE}
    sign = np.where(rng.random((N, 2)) < 0.5, -1.0, 1.0)
    for m, s in BASE_SCALE.items():
        submit(subs / "hand", m, "hand", ids, flux * (1 + sign * s * u[m]))
    submit(subs / "hand", "d", "hand", ids, flux * 1.5)  # only an invalid track submission
    for name, rows in ROWS.items():
        pairs = make_track(base, rel / name, name, rows)
        for m, f in TRACK_FACTOR[name].items():
            submit(subs / name, m, name, pairs["blend_id"], _flux(pairs) * f)
    submit(subs / "hand-noise", "d", "hand-noise", ids[10:20], flux[10:20])  # 20 ids missing
    real = make_track(base, rel / "hand-real", "hand-real", np.arange(N), id_shift=1,
                      mag_shift=1.5)
    w = (_mag(real) - 19) / 2
    for m, s in REAL_SCALE.items():
        submit(subs / "hand-real", m, "hand-real", real["blend_id"], _flux(real) * (1 - s * w))
    (subs / "not-a-release" / "x").mkdir(parents=True)
    (subs / "not-a-release" / "x" / "submission.toml").write_text('name = "x"\n')
    return {"rel": rel, "subs": subs, "u": u, "sign": sign, "flux": flux,
            "real_mag": _mag(real), "root": root}


@pytest.fixture(scope="module")
def report(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    tracks = [world["rel"] / t for t in ("hand-psf", "hand-noise", "hand-real")]
    rep = build_robustness(world["rel"] / "hand", world["subs"], out, tracks=tracks, n_boot=200)
    return rep, out


def _cell(rep, method: str, track: str) -> pd.Series:
    return rep.cells.set_index(["method", "track"]).loc[(method, track)]


def test_ratio_is_the_mape_ratio_on_the_shared_blend_ids(world, report):
    rep, _ = report
    for track, rows in ROWS.items():
        for m, s in BASE_SCALE.items():
            r = _cell(rep, m, track)
            base = 100 * s * world["u"][m][rows].mean()
            mape = 100 * (TRACK_FACTOR[track][m] - 1)
            assert r["n"] == 2 * len(rows) and r["base_n"] == 2 * len(rows)
            assert r["mape"] == pytest.approx(mape)
            assert r["base_mape"] == pytest.approx(base)
            assert r["base_mape"] != pytest.approx(100 * s * world["u"][m].mean(), rel=1e-6)
            assert r["ratio"] == pytest.approx(mape / base)
            assert r["ratio_lo"] < r["ratio"] < r["ratio_hi"]
            assert r["base_blends"] == f"same {len(rows)} blend ids"
    assert rep.base == "hand" and rep.columns[:2] == ["hand-psf", "hand-noise"]
    # the base interval on the shared ids is the one of scoring the subset directly
    truth = load_truth(world["rel"] / "hand")
    sub = read_submission(world["subs"] / "hand" / "a")
    sc = score(sub.subset(np.arange(25)), truth.subset(np.arange(25)), n_boot=200)
    r = _cell(rep, "a", "hand-psf")
    assert [r["base_mape_lo"], r["base_mape_hi"]] == pytest.approx(sc.ci95["both"]["mape"])


def test_blend_total_and_share_error_split_the_mape(world, report):
    rep, out = report
    truth = world["flux"]
    for track, rows in ROWS.items():
        for m, s in BASE_SCALE.items():
            r = _cell(rep, m, track)
            # the track scales both galaxies alike: the blend's total is off, its split is not
            assert r["total_mape"] == pytest.approx(100 * (TRACK_FACTOR[track][m] - 1))
            assert r["share_error"] == pytest.approx(0.0, abs=1e-9)
            f = (truth * (1 + world["sign"] * s * world["u"][m]))[rows]
            t = truth[rows]
            total = 100 * np.mean(np.abs(f.sum(1) / t.sum(1) - 1))
            share = 100 * np.mean(np.abs(f[:, 0] / f.sum(1) - t[:, 0] / t.sum(1)))
            assert r["base_total_mape"] == pytest.approx(total)
            assert r["base_share_error"] == pytest.approx(share)
            assert share > 0
    # the magnitude slice counts the blends whose two galaxies are in range
    r = _cell(rep, "a", "hand-real (<= 23.5 mag)")
    w = (world["real_mag"] - 19) / 2
    keep = (world["real_mag"] <= 23.5).all(axis=1)
    real = Table.read(world["rel"] / "hand-real" / "pairs_test.ecsv", format="ascii.ecsv")
    t = _flux(real)[keep]
    f = t * (1 - REAL_SCALE["a"] * w[keep])
    assert r["total_mape"] == pytest.approx(100 * np.mean(np.abs(f.sum(1) / t.sum(1) - 1)))
    assert "## Photometry or deblending" in (out / "robustness.md").read_text()


def test_other_blends_use_the_full_base_and_a_magnitude_slice(world, report):
    rep, _ = report
    mag = world["real_mag"]
    w = (mag - 19) / 2
    keep = mag <= 23.5
    assert 0 < keep.sum() < keep.size
    for m, s in REAL_SCALE.items():
        full = 100 * BASE_SCALE[m] * world["u"][m].mean()
        r = _cell(rep, m, "hand-real")
        assert r["mape"] == pytest.approx(100 * s * w.mean())
        assert r["base_mape"] == pytest.approx(full) and r["base_n"] == 2 * N
        assert r["ratio"] == pytest.approx(r["mape"] / full)
        assert math.isnan(r["ratio_lo"]) and r["base_blends"] == f"all {N} hand blends"
        sl = _cell(rep, m, "hand-real (<= 23.5 mag)")
        assert sl["n"] == keep.sum()
        assert sl["mape"] == pytest.approx(100 * s * w[keep].mean())
        assert sl["ratio"] == pytest.approx(sl["mape"] / full)
    assert rep.columns == ["hand-psf", "hand-noise", "hand-real", "hand-real (<= 23.5 mag)"]


def test_kendall_tau_and_worst_track(report):
    rep, _ = report
    tau = rep.tau.set_index("track")
    assert tau.loc["hand-psf", "tau"] == pytest.approx(1.0)
    assert tau.loc["hand-noise", "tau"] == pytest.approx(-1.0)
    assert tau.loc["hand-real", "tau"] == pytest.approx(1.0)
    assert (tau["n_methods"] == 3).all()
    assert tau.loc["hand-psf", "p_value"] == pytest.approx(1 / 3)
    main = rep.cells[rep.cells["view"] == "all"].dropna(subset=["ratio"])
    for m in BASE_SCALE:
        rows = main[main["method"] == m]
        assert rep.worst[m] == rows.loc[rows["ratio"].idxmax(), "track"]
    assert rep.worst["b"] == "hand-psf" and rep.worst["c"] == "hand-psf"
    assert rep.worst["a"] == "hand-noise"
    assert "d" not in rep.worst
    worst = rep.cells[rep.cells["worst"]]
    assert sorted(zip(worst["method"], worst["track"], strict=True)) == sorted(rep.worst.items())


def test_missing_and_invalid_submissions_are_reported(report):
    rep, _ = report
    d = _cell(rep, "d", "hand-psf")
    assert math.isnan(d["mape"]) and d["base_mape"] == pytest.approx(50.0)
    assert "no submission in hand-psf/d/" in d["note"]
    assert any(n.startswith("d: no score on hand-psf") for n in rep.notes)
    skipped = {(s["track"], s["name"]): s["reason"] for s in rep.skipped}
    assert "invalid" in skipped[("hand-noise", "d")] and "blend_id" in skipped[("hand-noise", "d")]
    broken = _cell(rep, "d", "hand-noise")
    assert broken["note"].startswith("skipped: invalid") and math.isnan(broken["ratio"])
    assert rep.methods == ["a", "b", "c", "d"]


def test_files_written(report):
    rep, out = report
    md = (out / "robustness.md").read_text()
    assert "| a | 5." in md and "**×5." in md and "| hand-noise | 3 | -1.00 | 0.33 |" in md
    assert "hand-real (<= 23.5 mag)" in md and "other blends" in md and "hand-noise/d" in md
    csv = pd.read_csv(out / "robustness.csv")
    assert len(csv) == 4 * 4 and csv["ratio"].notna().sum() == 3 * 4
    assert csv.set_index(["method", "track"]).loc[("a", "hand-psf"), "ratio"] == pytest.approx(
        _cell(rep, "a", "hand-psf")["ratio"])
    png = out / "figures" / "robustness.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob(".*.tmp"))


def test_descriptions():
    base = ReleaseSpec(name="v1")
    noisy = dataclasses.replace(base, name="noisy", sky_sigma=0.024)
    assert spec_changes(base, noisy) == "sky_sigma 0.012 → 0.024"
    assert track_description(base, noisy) == "sky_sigma 0.012 → 0.024"
    named = dataclasses.replace(noisy, name="v1-noise")
    assert track_description(base, named) == TRACK_DESCRIPTIONS["v1-noise"]


def test_find_tracks(world):
    base = ReleaseSpec(name="hand")
    tracks, notes = find_tracks(base, world["subs"], releases_dir=world["rel"])
    assert [t.name for t in tracks] == ["hand-noise", "hand-psf", "hand-real"]
    assert tracks[0].submissions == world["subs"] / "hand-noise"
    assert len(notes) == 1 and "not-a-release" in notes[0]
    with pytest.raises(ReleaseError, match="base release"):
        find_tracks(base, world["subs"], names=[world["rel"] / "hand"])
    with pytest.raises(ReleaseError, match="--tracks nope: not a release"):
        find_tracks(base, world["subs"], names=["nope"])


def test_no_track_is_an_error(world, tmp_path):
    subs = tmp_path / "submissions"
    truth = load_truth(world["rel"] / "hand")
    submit(subs / "hand", "a", "hand", truth.blend_id, truth.flux)
    with pytest.raises(ReleaseError, match="no track to compare with hand"):
        build_robustness(world["rel"] / "hand", subs, tmp_path / "out", n_boot=0)


def test_cli(world, tmp_path):
    out = tmp_path / "rob"
    args = ["robustness", "--base", "hand", "--releases", str(world["rel"]), "--submissions",
            str(world["subs"]), "--out", str(out), "--n-boot", "20"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Kendall" in res.output and "hand-psf" in res.output and "skipped" in res.output
    assert (out / "robustness.md").is_file() and (out / "figures" / "robustness.png").is_file()
    res = runner.invoke(app, [*args, "--tracks", "hand-psf,nope"])
    assert res.exit_code == 2
    assert "error:" in res.output and "--tracks nope: not a release" in res.output


def test_cli_fits_80_columns(world, tmp_path, columns80):
    args = ["robustness", "--base", "hand", "--releases", str(world["rel"]), "--submissions",
            str(world["subs"]), "--out", str(tmp_path / "rob"), "--n-boot", "10"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    columns80(res.output)
