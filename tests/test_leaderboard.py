"""The leaderboard: folders in, ranked Markdown / CSV / HTML out; atomic under concurrent runs."""

from __future__ import annotations

import multiprocessing as mp
import os
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
from challenge.reports import leaderboard as L
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
            'training_time = "1 h"\ninference_time_s = 131.14\nauthors = ["A. B."]\n',
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
    assert good["training_time_s"] == 3600 and good["n_params"] == 1.6e6
    assert good["inference_time"] == "2.2 min" and good["inference_time_s"] == 131.14
    assert sep["inference_time"] == "" and np.isnan(sep["inference_time_s"])
    skipped = {s["name"]: s["reason"] for s in df.attrs["skipped"]}
    assert "v0" in skipped["old"] and "missing" in skipped["broken"]

    out = tmp_path / "lb"
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | good |" in md and "Skipped" in md and "old" in md
    main, full = md.split("## Full table")
    header = next(ln for ln in main.splitlines() if ln.startswith("| # |"))
    assert header.endswith("| training time | test-set inference time | hardware | what it is |")
    good_row = next(ln for ln in main.splitlines() if ln.startswith("| 1 | good |"))
    assert good_row.endswith("| 1 h | 2.2 min | – | – |")
    assert "(detections only)" not in main and "sep (detections only)" in full
    header = next(ln for ln in full.splitlines() if ln.startswith("| # |"))
    assert header.endswith("| training time | test-set inference time |")
    good_row = next(ln for ln in full.splitlines() if ln.startswith("| 1 | good |"))
    assert good_row.endswith("| 1 h | 2.2 min |")
    csv = pd.read_csv(out / "leaderboard.csv")
    assert list(csv["name"]) == names
    page = (out / "leaderboard.html").read_text()
    assert '<table id="leaderboard">' in page and "data:image/png;base64," in page
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
    # a long name folds at its hyphens, never inside a word; intervals stay whole on one line
    assert any(re.search(r"\bblend2mask2flux-\s", ln) for ln in lines), res.output
    assert any(re.search(r"\s\[\d+\.\d\d, \d+\.\d\d\]", ln) for ln in lines)
    df = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    good = df[df["name"] == "good"].iloc[0]
    # outliers as %, the Markdown's convention
    assert f"{100 * good['outlier_fraction']:.1f}" in next(
        ln for ln in lines if re.match(r"\s*\d+\s+good\b", ln))


def test_cli_leaderboard_v1_sized_table_at_80_columns(columns80, capsys):
    """Names of the v1 leaderboard at 80 columns with v1's widest numbers: every word whole."""
    from challenge.cli.scoring import print_leaderboard

    names = ["oracle", "blend2mask2flux-compact-end-to-end", "scarlet2 (detections only)",
             "photutils (detections only)", "sep"]
    df = pd.DataFrame({
        "rank": [1, 2, 3, 4, 10], "name": names, "n": [10000, 10000, 8587, 7962, 10000],
        "mape": [3.3, 4.55, 16.29, 22.75, 100.0], "mape_lo": [3.17, 4.44, 15.63, 21.94, 99.5],
        "mape_hi": [3.41, 4.68, 17.01, 23.6, 100.0], "bias": [0.018, 0.005, -0.123, -0.163, 1.0],
        "scatter": [0.101, 0.076, 0.223, 0.315, 1.2],
        "outlier_fraction": [0.004, 0.0, 0.03, 0.044, 1.0],
        "inference_time": ["13 s", "2.2 min", "6.0 min", "39 s", ""],
    })
    print_leaderboard(df, "v1")
    out = capsys.readouterr().out
    columns80(out)
    text = " ".join(out.split())
    for word in ("oracle", "blend2mask2flux-", "compact-", "scarlet2", "(detections", "only)",
                 "photutils", "[99.50, 100.00]", "2.2 min", "6.0 min", "10000"):
        assert word in text, out
    assert "compact-end-to-end" in out or "compact-end-to-" in out, out


@pytest.mark.parametrize(("meta", "shown", "number"), [
    ({"training_time_s": 2131.6}, "35.5 min", 2131.6),
    ({"training_time_s": 6247.3}, "1.7 h", 6247.3),
    ({"training_time": "3 h"}, "3 h", 10800.0),
    ({"training_time": "44.2 min, 2 CPU cores"}, "44.2 min, 2 CPU cores", 2652.0),
    ({"training_time": "3600"}, "3600", 3600.0),
    ({"training_time_s": 0.0}, "–", None),
    ({"training_time": "about a day"}, "about a day", None),
    ({"training_time": True}, "–", None),  # not a time: not shown
    ({}, "", None),
])
def test_cost_columns_keep_the_number_behind_the_text(meta, shown, number):
    out = L._metadata(meta)
    assert out["training_time"] == shown
    if number is None:
        assert np.isnan(out["training_time_s"])
    else:
        assert out["training_time_s"] == pytest.approx(number)


def test_parameters_and_inference_time_from_metadata():
    out = L._metadata({"parameters": 1235436, "inference_time_s": 362.92})
    assert (out["params"], out["n_params"]) == ("1.2 M", 1235436)
    assert (out["inference_time"], out["inference_time_s"]) == ("6.0 min", 362.92)
    out = L._metadata({"params": "1,600,000", "parameters": 0})
    assert out["n_params"] == 1.6e6
    assert L._metadata({"parameters": 0})["params"] == "–"


def test_html_page_is_static_sortable_and_captioned(setup, tmp_path):
    folder, subs, _ = setup
    df = build_leaderboard(folder, subs, tmp_path / "lb", n_boot=20)
    page = (tmp_path / "lb" / "leaderboard.html").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert re.search(r'<div class="table-scroll"[^>]*>\s*<table id="leaderboard">', page)
    # self-contained: nothing fetched from anywhere
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r'(src|href)="(?!data:)', page) and "http" not in text.lower()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 4 and not any(".png" in c for c in captions)
    assert "95% bootstrap intervals" in captions[0]
    # the rank column starts as the sorted one
    assert re.search(r'<th [^>]*aria-sort="ascending"><button type="button">#<span', page)
    rows = re.findall(r"<tr><td[^>]*>.*?</tr>", page)
    assert len(rows) == len(df)
    good = next(r for r in rows if '<td class="text name" data-sort="good">' in r)
    sep = next(r for r in rows if '<td class="text name" data-sort="sep">' in r)
    assert '<td data-sort="3600.0">1 h</td>' in good  # training time: seconds, not "1 h"
    assert '<td data-sort="131.14">2.2 min</td>' in good
    assert sep.endswith('<td data-sort="">–</td><td data-sort="">–</td></tr>')  # missing
    assert '<td class="text about" data-sort="">–</td>' in sep  # no one-line description


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(out: Path) -> list[Path]:
    """Temporary files or folders of a leaderboard run, next to ``out`` or inside it."""
    return [p for p in [*out.parent.iterdir(), *out.rglob("*")] if p.name.startswith(".")]


@pytest.mark.parametrize("where", ["writing", "swapping"])
def test_a_failure_midway_leaves_the_old_set(setup, tmp_path, monkeypatch, where):
    folder, subs, _ = setup
    out = tmp_path / "lb"
    build_leaderboard(folder, subs, out, n_boot=20)
    (out / "leaderboard.md").write_text("old set\n")  # recognisable
    before = _files(out)
    written = []

    def fail_on_third(path, data):
        if len(written) == 2:
            raise RuntimeError("disk gone")
        written.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def fail_swap(new, out):
        raise RuntimeError("killed")

    if where == "writing":
        monkeypatch.setattr(L, "_write_file", fail_on_third)
    else:
        monkeypatch.setattr(L, "_swap", fail_swap)
    with pytest.raises(RuntimeError):
        build_leaderboard(folder, subs, out, n_boot=20)
    assert _files(out) == before
    assert _leftovers(out) == []
    if where == "writing":
        assert len(written) == 2


def test_a_rebuild_keeps_other_files_and_removes_leftovers(setup, tmp_path, monkeypatch):
    folder, subs, _ = setup
    out = tmp_path / "lb"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "leaderboard-1400.png").write_bytes(b"screenshot")
    (out / "figures" / "methods_vs_delta_mag.png").write_bytes(b"stale figure")
    (out / "other" / "leaderboard.md").parent.mkdir()
    (out / "other" / "leaderboard.md").write_text("another release's leaderboard")
    (out / ".leaderboard.md.x1.tmp").write_text("left by a killed run")
    (out / ".other.new-999999999-0123abcd").mkdir()  # a killed run into a sub-folder
    dead = tmp_path / ".lb.new-999999999-0123abcd"  # a killed run's folder (no such process)
    dead.mkdir()
    (dead / "leaderboard.md").write_text("partial")
    alive = tmp_path / f".lb.new-{os.getpid()}-0123abcd"  # a running run's folder: kept
    alive.mkdir()
    monkeypatch.setattr(L, "_exchange", lambda a, b: False)  # the two-rename path
    build_leaderboard(folder, subs, out, n_boot=20)
    files = _files(out)
    assert files["figures/leaderboard-1400.png"] == b"screenshot"
    assert files["other/leaderboard.md"] == b"another release's leaderboard"
    assert files["figures/methods_vs_delta_mag.png"].startswith(b"\x89PNG")
    assert set(files) == {*L.OUTPUTS, "figures/leaderboard-1400.png", "other/leaderboard.md"}
    assert not dead.exists() and alive.is_dir()
    alive.rmdir()
    assert _leftovers(out) == []


@pytest.mark.skipif(L._renameat2() is None, reason="no renameat2 here (not Linux/glibc)")
def test_the_folders_are_exchanged_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not L._exchange(a, b):
        pytest.skip("this file system cannot exchange folders")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_cli_leaderboard_refuses_an_output_folder_it_cannot_replace(setup, tmp_path,
                                                                    monkeypatch):
    folder, subs, _ = setup
    args = ["leaderboard", "--data", str(folder), "--submissions", str(subs), "--n-boot", "0"]
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "file")])
    assert res.exit_code == 2 and "not a folder" in res.output
    assert len(res.output.strip().splitlines()) == 1
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*args, "--out", "."])
    assert res.exit_code == 2 and "folder of its own" in res.output
    assert not list(tmp_path.glob("leaderboard.*"))


def test_method_colours_do_not_depend_on_the_other_methods():
    from challenge.reports.figures import method_colors

    alone = method_colors(["mine"])["mine"]
    with_refs = method_colors(["oracle", "sep", "mine", "sep (detections only)"])
    assert with_refs["mine"] == alone
    assert with_refs["sep"] == with_refs["sep (detections only)"] == method_colors(["sep"])["sep"]
    many = method_colors([f"method-{i}" for i in range(12)] + ["oracle", "sep"])
    assert len(set(many.values())) == 14  # no two methods of one figure share a colour


def test_references_are_marked_take_their_names_first_and_keep_their_release(setup, tmp_path):
    folder, subs, _ = setup
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "good").symlink_to(subs / "good", target_is_directory=True)
    out = tmp_path / "lb"
    df = build_leaderboard(folder, subs, out, references_dir=refs, n_boot=20)
    good = df[df["name"] == "good"]
    assert len(good) == 1 and good["reference"].item()
    skipped = {s["name"]: s["reason"] for s in df.attrs["skipped"]}
    assert "already taken by a reference" in skipped["good"]
    md = (out / "leaderboard.md").read_text()
    assert "| good ★ |" in md and "★ a reference method" in md
    release = df["release"].iloc[0]
    with pytest.raises(L.ReleaseError, match=f"holds the leaderboard of release {release!r}"):
        L.check_replace(out, "another")


def test_a_run_killed_between_the_renames_loses_nothing_of_the_folder(setup, tmp_path,
                                                                       monkeypatch):
    """Without an atomic exchange (macOS, NFS) a replacement is two renames; a run killed
    between them leaves the folder missing and the previous set aside: the next run puts it
    back, the user's own files included, then replaces the leaderboard's files."""
    folder, subs, _ = setup
    out = tmp_path / "lb"
    build_leaderboard(folder, subs, out, n_boot=10)
    (out / "my-notes.txt").write_text("mine")
    aside = tmp_path / ".lb.new-999999999-0123abcd-old"  # the killed run's previous set
    os.rename(out, aside)
    (tmp_path / ".lb.new-999999999-0123abcd").mkdir()  # its new set, half written
    monkeypatch.setattr(L, "_exchange", lambda a, b: False)  # no renameat2 here
    build_leaderboard(folder, subs, out, n_boot=10)
    assert (out / "my-notes.txt").read_text() == "mine"
    assert (out / "leaderboard.md").is_file()
    assert not aside.exists() and not (tmp_path / ".lb.new-999999999-0123abcd").exists()
