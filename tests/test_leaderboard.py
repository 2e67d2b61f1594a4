"""The leaderboard: folders in, ranked Markdown / CSV / HTML out; atomic under concurrent runs."""

from __future__ import annotations

import multiprocessing as mp
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.reports.leaderboard import build_leaderboard

runner = CliRunner()


def make_submissions(root: Path, ids, flux, masks) -> Path:
    rng = np.random.default_rng(7)
    subs = root / "submissions"
    n = len(ids)

    def folder(name, toml):
        d = subs / name
        d.mkdir(parents=True)
        (d / "submission.toml").write_text(toml)
        return d

    # sep reference: noisy, with non-detections and a detection case per blend
    det = np.array([2, 0, 1, 3, -1] * (n // 5) + [2] * (n % 5), np.int8)
    sep_flux = flux * rng.lognormal(0, 0.3, flux.shape)
    sep_flux[det == 0, 1] = 0
    sep_flux[det == 1, 0] = 0
    sep_flux[det == -1] = 0
    write_h5(
        folder("sep", 'name = "sep"\nrelease = "hand"\nhardware = "1 CPU"\n') / "predictions.h5",
        ids,
        sep_flux,
        masks=masks,
        detection=det,
        name="sep",
    )
    write_h5(
        folder(
            "good",
            'name = "good"\nrelease = "hand"\nparams = 1600000\n'
            'training_time = "1 h"\nauthors = ["A. B."]\n',
        )
        / "predictions.h5",
        ids,
        flux * rng.lognormal(0, 0.05, flux.shape),
        name="good",
    )
    d = folder("table", 'name = "table"\nrelease = "hand"\n')
    Table(
        {"blend_id": ids, "flux_central": flux[:, 0] * 1.1, "flux_companion": flux[:, 1] * 0.9}
    ).write(d / "predictions.csv", format="ascii.csv")
    write_h5(
        folder("old", 'name = "old"\nrelease = "v0"\n') / "predictions.h5", ids, flux, release="v0"
    )
    write_h5(
        folder("broken", 'name = "broken"\nrelease = "hand"\n') / "predictions.h5",
        ids[1:],
        flux[1:],
    )
    return subs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    folder, ids, flux, masks = hand_release(root / "rel", n=40)
    return folder, make_submissions(root, ids, flux, masks), root


def test_build_leaderboard(setup, tmp_path):
    folder, subs, _ = setup
    df = build_leaderboard(folder, subs, tmp_path / "lb", n_boot=100)
    names = list(df["name"])
    assert set(names) == {"sep", "sep (detections only)", "good", "table"}
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert df["mape"].is_monotonic_increasing
    assert names[0] == "good"
    assert (df["mape_lo"] <= df["mape"]).all() and (df["mape"] <= df["mape_hi"]).all()
    sep = df.set_index("name").loc["sep"]
    only = df.set_index("name").loc["sep (detections only)"]
    assert only["n"] < sep["n"] and only["detected_fraction"] == 1.0
    assert sep["iou"] == pytest.approx(1.0)
    assert {"mape_sep_two", "mape_sep_other", "mape_model"} <= set(df.columns)
    assert df["mape_sep_two"].notna().all()
    good = df.set_index("name").loc["good"]
    assert good["params"] == "1.6 M" and good["training_time"] == "1 h"
    skipped = {s["name"]: s["reason"] for s in df.attrs["skipped"]}
    assert "v0" in skipped["old"] and "missing" in skipped["broken"]

    out = tmp_path / "lb"
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | good |" in md and "Skipped" in md and "old" in md
    csv = pd.read_csv(out / "leaderboard.csv")
    assert list(csv["name"]) == names
    page = (out / "leaderboard.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "sort" in page
    assert (out / "figures" / "leaderboard_mape.png").is_file()
    assert not list(out.glob(".*.tmp"))


def _run(args):
    folder, subs, out = args
    build_leaderboard(folder, subs, out, n_boot=50)


def test_concurrent_runs_lose_nothing(setup, tmp_path):
    folder, subs, _ = setup
    out = tmp_path / "lb"
    ctx = mp.get_context("spawn" if mp.get_start_method(allow_none=True) == "spawn" else "fork")
    procs = [ctx.Process(target=_run, args=((folder, subs, out),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    csv = pd.read_csv(out / "leaderboard.csv")
    assert len(csv) == 4
    assert (out / "leaderboard.html").read_text().rstrip().endswith("</html>")
    assert not list(out.rglob(".*.tmp"))


def test_cli_leaderboard(setup, tmp_path):
    folder, subs, _ = setup
    res = runner.invoke(
        app,
        [
            "leaderboard",
            "--data",
            str(folder),
            "--submissions",
            str(subs),
            "--out",
            str(tmp_path / "lb"),
            "--n-boot",
            "20",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "good" in res.output and "skipped" in res.output
    assert (tmp_path / "lb" / "leaderboard.md").is_file()


def test_cli_leaderboard_errors(tmp_path):
    res = runner.invoke(app, ["leaderboard", "--out", str(tmp_path / "lb")])
    assert res.exit_code == 2 and "--data" in res.output
    res = runner.invoke(
        app, ["leaderboard", "--data", "mini", "--submissions", str(tmp_path / "none")]
    )
    assert res.exit_code == 2 and "submissions" in res.output
    res = runner.invoke(app, ["leaderboard", "--track", "nope"])
    assert res.exit_code == 2 and "candels2019" in res.output


def test_cli_leaderboard_fits_80_columns(setup, tmp_path, columns80):
    folder, subs, _ = setup
    long = subs / "blend2mask2flux-compact-end-to-end"
    long.mkdir()
    (long / "submission.toml").write_text(f'name = "{long.name}"\nrelease = "hand"\n')
    (long / "predictions.h5").write_bytes((subs / "good" / "predictions.h5").read_bytes())
    with h5py.File(long / "predictions.h5", "a") as f:
        f.attrs["name"] = long.name
    res = runner.invoke(app, ["leaderboard", "--data", str(folder), "--submissions", str(subs),
                              "--out", str(tmp_path / "lb"), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    columns80(res.output)
    assert "bias" in res.output and "(mag)" in res.output and "outliers" in res.output
    lines = res.output.splitlines()
    # a long name folds over lines; numbers and intervals stay whole on one line
    assert any("blend2mask" in ln and re.search(r"\[\d+\.\d\d, \d+\.\d\d\]", ln)
               for ln in lines)
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    good = df[df["name"] == "good"].iloc[0]
    # outliers as %, the Markdown's convention
    assert f"{100 * good['outlier_fraction']:.1f}" in next(
        ln for ln in lines if re.match(r"\s*\d+\s+good\b", ln))
