"""``blendbench score | compare | leaderboard | robustness | format``: thin commands over the
scoring library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from challenge.cli.base import app, console, err_console, styled, user_errors
from challenge.contract.errors import ReleaseError
from challenge.contract.release import DEFAULT_SEED
from challenge.contract.submission import FORMAT_HELP, read_submission
from challenge.scoring.scores import N_BOOT, ROLES, load_truth, write_json

# (key, name, unit, format, scale): one convention for every table the commands print, and the
# same as the Markdown leaderboards: fractions as %, magnitudes labelled "mag".
_SHOWN = (
    ("mape", "MAPE", "%", ".2f", 1),
    ("median_ape", "median APE", "%", ".2f", 1),
    ("bias", "bias", "mag", "+.3f", 1),
    ("median_dmag", "median Δmag", "mag", "+.3f", 1),
    ("scatter", "σ", "mag", ".3f", 1),
    ("nmad", "NMAD", "mag", ".3f", 1),
    ("outlier_fraction", "outliers", "%", ".1f", 100),
    ("detected_fraction", "detected", "%", ".1f", 100),
    ("iou", "IoU", "", ".3f", 1),
    ("mask_area_bias", "mask area bias", "", "+.3f", 1),
    ("coverage_68", "coverage 68", "%", ".1f", 100),
    ("coverage_95", "coverage 95", "%", ".1f", 100),
    ("mean_z", "mean z", "", "+.2f", 1),
    ("crps", "CRPS", "", ".3g", 1),
)
_BY_KEY = {key: rest for key, *rest in _SHOWN}
# Tables that fit 80 columns: no vertical rules, two spaces between columns.
_NARROW = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "padding": (0, 1, 0, 0)}
_SCHEMES = {"delta_mag": "Δmag of the pair (mag)", "distance": "distance (d / R_e)",
            "morphology": "morphology"}


def _label(name: str, unit: str) -> str:
    """``MAPE %``, ``bias (mag)``, ``IoU``."""
    return f"{name} %" if unit == "%" else f"{name} ({unit})" if unit else name


def _unit(key: str) -> tuple[str, str, str, float]:
    """(name, unit, format, scale) of a metric key; unknown keys as they are."""
    return tuple(_BY_KEY.get(key, (key.replace("_", " "), "", ".4g", 1)))


def _f(value, fmt: str, scale: float = 1) -> str:
    return "–" if value is None or value != value else format(scale * value, fmt)


def _signed(fmt: str) -> str:
    return fmt if fmt.startswith("+") else "+" + fmt


def _interval(ci, fmt: str, scale: float = 1) -> str:
    return f"[{_f(ci[0], fmt, scale)}, {_f(ci[1], fmt, scale)}]"


MAX_BOOT = 100_000  # bootstrap resamples: beyond, the intervals gain nothing but time


def check_bootstrap(n_boot: int, seed: int) -> None:
    """Refuse bootstrap settings no run can use, in one line (exit 2)."""
    if not 0 <= n_boot <= MAX_BOOT:
        raise ReleaseError(f"--n-boot {n_boot}: give a number of resamples from 0 (none) to "
                           f"{MAX_BOOT:,}")
    if not 0 <= seed < 2**32:
        raise ReleaseError(f"--seed {seed}: give a whole number from 0 to 4294967295")


def _warn(messages: list[str]) -> None:
    for msg in messages:
        err_console.print(styled("warning:", "yellow", msg), highlight=False, soft_wrap=True)


@app.command("format")
@user_errors
def format_cmd() -> None:
    """Print the expected submission format."""
    typer.echo(FORMAT_HELP)


@app.command("score")
@user_errors
def score_cmd(
    pred: Path = typer.Argument(..., help="predictions.h5, a flux table, or a submission folder"),
    data: str = typer.Option(..., "--data", help="release folder, or a shipped release (v1)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the scores as JSON"),
    plots: Path | None = typer.Option(None, "--plots", help="write the figures in this folder"),
    per_galaxy: Path | None = typer.Option(
        None, "--per-galaxy",
        help="write one row per galaxy (ids, role, fluxes, APE, Δmag, bins, IoU); "
        "ECSV, CSV or FITS by the file's ending",
    ),
    truth: str = typer.Option("sep", "--truth", help="sep (FLUX_AUTO) or model (noiseless)"),
    n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples (0: none)"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="bootstrap seed"),
) -> None:
    """Validate and score one submission: table, JSON and paper-style figures."""
    check_bootstrap(n_boot, seed)
    from challenge.scoring.evaluator import per_galaxy_table, table_format, write_table
    from challenge.scoring.scores import score

    if per_galaxy is not None:
        table_format(per_galaxy)  # a wrong ending fails before any scoring
    for flag, path, folder in (("--json", json_out, False), ("--per-galaxy", per_galaxy, False),
                               ("--plots", plots, True)):
        if path is not None and path.exists() and path.is_dir() != folder:
            kind = "a folder" if path.is_dir() else "a file"
            raise ReleaseError(f"{flag} {path}: {kind}; give " + (
                "a folder for the figures" if folder else "the path of a file to write"))
    t = load_truth(data, truth)
    sc = score(read_submission(pred, expect=(t.n, t.stamp_size)), t, n_boot=n_boot, seed=seed)
    _warn(sc.warnings)
    shown = [m for m in _SHOWN if m[0] in sc.overall["both"]]
    table = Table(
        title=f"{sc.submission} on {sc.release} ({sc.truth} truth): value, then its 95% "
        f"interval ({n_boot} bootstrap resamples over blends)",
        **_NARROW,
    )
    table.add_column("metric", overflow="fold")
    for role in ROLES:
        table.add_column(f"{role}\nN={sc.overall[role]['n']}", justify="right", no_wrap=True)
    for key, name, unit, fmt, scale in shown:
        cells = []
        for role in ROLES:
            text = _f(sc.overall[role][key], fmt, scale)
            ci = sc.ci95.get(role, {}).get(key)
            if ci is not None:  # the interval on its own line: never wrapped inside
                text += "\n" + _interval(ci, fmt, scale)
            cells.append(text)
        table.add_row(_label(name, unit), *cells)
    console.print(table)
    if json_out is not None:
        write_json(json_out, sc.to_dict())
        console.print(f"scores written to {json_out}")
    if plots is not None:
        from challenge.reports.figures import write_score_figures

        paths = write_score_figures(sc, plots)
        console.print(f"{len(paths)} figures written to {plots}")
    if per_galaxy is not None:
        path = write_table(per_galaxy_table(sc), per_galaxy)
        console.print(f"{2 * sc.truth_table.n} galaxies written to {path}")


@app.command("compare")
@user_errors
def compare_cmd(
    a: Path = typer.Argument(..., help="submission A (file or folder)"),
    b: Path = typer.Argument(..., help="submission B (file or folder)"),
    data: str = typer.Option(..., "--data", help="release folder, or a shipped release (v1)"),
    truth: str = typer.Option("sep", "--truth", help="sep or model"),
    json_out: Path | None = typer.Option(None, "--json", help="write the comparison as JSON"),
    n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="bootstrap seed"),
) -> None:
    """Paired-bootstrap comparison of two submissions (difference A − B, 95% interval)."""
    check_bootstrap(n_boot, seed)
    from challenge.scoring.scores import compare

    t = load_truth(data, truth)
    expect = (t.n, t.stamp_size)
    res = compare(read_submission(a, expect=expect), read_submission(b, expect=expect), t,
                  n_boot=n_boot, seed=seed)
    table = Table(
        title=f"A = {res['a']}, B = {res['b']} on {res['release']} ({res['truth']} truth): "
        "A − B, 95% paired-bootstrap interval; better: tie when it contains 0",
        **_NARROW,
    )
    for col in ("metric", "A", "B", "A − B", "95% interval", "better"):
        table.add_column(col, justify="left" if col == "metric" else "right", overflow="fold",
                         no_wrap=col != "metric")
    for role, rows in res["overall"].items():
        table.add_row(f"{role} galaxies", style="bold")
        for metric, r in rows.items():
            name, unit, fmt, scale = _unit(metric)
            a_, b_, diff, ci = r["a"], r["b"], r["diff"], r["ci95"]
            if "loss" in r:  # the verdict rests on the loss (|bias|, ...): show that interval
                name, a_, b_, diff, ci = r["loss"], r["loss_a"], r["loss_b"], r["loss_diff"], \
                    r["loss_ci95"]
                fmt = fmt.lstrip("+")
            table.add_row(
                "  " + _label(name, unit),
                _f(a_, fmt, scale),
                _f(b_, fmt, scale),
                _f(diff, _signed(fmt), scale),
                _interval(ci, _signed(fmt), scale),
                r["better"],
            )
    console.print(table)
    wins = Table(title="MAPE % per bin (both galaxies): which method wins where", **_NARROW)
    for col in ("bin", "N", "MAPE A %", "MAPE B %", "95% interval", "better"):
        wins.add_column(col, justify="left" if col == "bin" else "right", overflow="fold",
                        no_wrap=col != "bin")
    empty = []
    for scheme, rows in res["bins"].items():
        wins.add_row(_SCHEMES.get(scheme, scheme), style="bold")
        for r in rows:
            if r["role"] != "both":
                continue
            if not r["n"]:  # an empty bin has no MAPE: named below, not a row of dashes
                empty.append(f"{scheme} {r['label']}")
                continue
            wins.add_row(
                "  " + r["label"],
                str(r["n"]),
                _f(r["a"], ".2f"),
                _f(r["b"], ".2f"),
                _interval(r["ci95"], "+.2f"),
                r["better"],
            )
    console.print(wins)
    if empty:
        console.print(f"empty bins (no galaxies): {', '.join(empty)}", highlight=False)
    if json_out is not None:
        write_json(json_out, res)
        console.print(f"comparison written to {json_out}")


@app.command("leaderboard")
@user_errors
def leaderboard_cmd(
    data: str | None = typer.Option(None, "--data", help="release folder or shipped release"),
    submissions: Path | None = typer.Option(
        None, "--submissions", help="folder with one sub-folder per submission (default: "
        "<release folder>/submissions)"
    ),
    references: Path | None = typer.Option(
        None, "--references", help="reference submissions ranked beside them (default: the "
        "repository's submissions/<release>/)"
    ),
    no_references: bool = typer.Option(
        False, "--no-references", help="rank only --submissions, without the references"
    ),
    references_only: bool = typer.Option(
        False, "--references-only", help="rank only the references, without --submissions"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="output folder (default: <release folder>/leaderboard)"
    ),
    track: str = typer.Option(
        "release", "--track", help="release (score --data) or candels2019 (the paper's data)"
    ),
    truth: str = typer.Option("sep", "--truth", help="sep or model"),
    n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="bootstrap seed"),
    compare_to: Path = typer.Option(
        None,
        "--compare-to",
        help="a synthetic release's leaderboard.csv: also write the "
        "synthetic -> real gap table (generalisation.md) next to this leaderboard",
    ),
) -> None:
    """Score every submission folder and write leaderboard.md / .csv / .html."""
    check_bootstrap(n_boot, seed)
    if track == "candels2019":
        from challenge.reports.candels2019 import build_candels_track

        path, _, table = build_candels_track(out or Path("releases") / "candels2019", n_boot=n_boot)
        print_candels(table)
        console.print(f"written to {path} (with the selections explained)")
        return
    if track != "release":
        raise ReleaseError(f"--track {track!r}: choose release or candels2019")
    if data is None:
        raise ReleaseError("--data is required: a release folder or a shipped release (v1)")
    from challenge.contract.workspace import (
        leaderboard_dir,
        references_dir,
        release_name,
        submissions_dir,
    )
    from challenge.reports.leaderboard import build_leaderboard

    if references_only and (no_references or submissions is not None):
        raise ReleaseError("--references-only ranks the references alone; drop --submissions "
                           "and --no-references")
    if submissions is not None and not submissions.is_dir():
        raise ReleaseError(f"--submissions {submissions}: no submissions folder; put one folder "
                           "per method in it (see `blendbench format`)")
    if submissions is None and not references_only:
        submissions = submissions_dir(data)
    if no_references:
        references = None
    elif references is None:
        references = references_dir(release_name(data))
    out = out or leaderboard_dir(data)
    df = build_leaderboard(data, submissions, out, references_dir=references, truth=truth,
                           n_boot=n_boot, seed=seed)
    print_leaderboard(df, f"leaderboard ({truth} truth), written to {out}/")
    if compare_to is not None:
        from challenge.reports.leaderboard import generalisation_gap

        gap = generalisation_gap(compare_to, out / "leaderboard.csv", out / "generalisation.md")
        for _, r in gap.iterrows():
            console.print(
                f"{r['name']}: MAPE {r['mape_synthetic']:.2f}% on "
                f"{r['release_synthetic']} -> {r['mape_real']:.2f}% on "
                f"{r['release_real']} (x{r['ratio']:.2f})"
            )
        console.print(f"written to {out / 'generalisation.md'}")


@app.command("robustness")
@user_errors
def robustness_cmd(
    base: str = typer.Option("v1", "--base", help="base release: a name (v1) or a folder"),
    submissions: Path | None = typer.Option(
        None, "--submissions",
        help="<release>/<method>/ folders for the base and each track (default: the "
        "repository's reference submissions/)",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="output folder (default: releases/<base>/robustness)"
    ),
    tracks: str | None = typer.Option(
        None, "--tracks",
        help="comma-separated track names or release folders (default: every sub-folder of "
        "--submissions named after a release)",
    ),
    releases: Path | None = typer.Option(
        None, "--releases", help="folder of generated release folders, looked up by name first"
    ),
    n_boot: int = typer.Option(N_BOOT, "--n-boot", help="bootstrap resamples"),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="bootstrap seed"),
) -> None:
    """MAPE of every method on the distribution-shift tracks, relative to the base release."""
    check_bootstrap(n_boot, seed)
    from challenge.reports.robustness import build_robustness

    names = None
    if tracks is not None:
        names = [t.strip() for t in tracks.split(",") if t.strip()]
        if not names:
            raise ReleaseError(f"--tracks {tracks!r}: name at least one track, e.g. v1-psf")
    from challenge.contract.workspace import REFERENCES

    submissions = submissions or REFERENCES
    out = out or Path("releases") / Path(base).name / "robustness"
    rep = build_robustness(base, submissions, out, tracks=names, releases_dir=releases,
                           n_boot=n_boot, seed=seed)
    print_robustness(rep)
    console.print(f"full tables in {out / 'robustness.md'}, {out / 'robustness.csv'}, "
                  f"{out / 'figures' / 'robustness.png'}", highlight=False)
    _warn(rep.notes)
    for s in rep.skipped:
        err_console.print(styled("skipped", "yellow", f"{s['track']}/{s['name']}: {s['reason']}"),
                          highlight=False, soft_wrap=True)


_CANDELS_ABBREV = {"blend2flux": "b2f", "blend2mask2flux": "b2m2f", "sep": "sep"}
_ROLE_ABBREV = {"central": "cen.", "companion": "comp.", "both": "both"}


def print_candels(df) -> None:
    """The candels2019 track in 80 columns: abbreviated methods (with a legend), then the paper's
    values next to the kit's for the central galaxies of the paper's selection."""
    table = Table(
        title="candels2019: the paper's CANDELS test predictions (4,776 blends), 95% intervals",
        **_NARROW,
    )
    for col in ("method", "sel.", "gal.", "N", "MAPE\n%", "95%\ninterval", "bias\n(mag)",
                "σ\n(mag)", "outl.\n%", "det.\n%"):
        table.add_column(col, justify="left" if col in ("method", "sel.", "gal.") else "right",
                         overflow="fold", no_wrap=col != "method")
    previous = None
    for _, r in df.iterrows():
        if previous is not None and r["method"] != previous:
            table.add_section()
        previous = r["method"]
        table.add_row(
            _CANDELS_ABBREV.get(r["method"], r["method"]), r["selection"],
            _ROLE_ABBREV.get(r["role"], r["role"]),
            str(int(r["n"])), _f(r["mape"], ".2f"), _interval((r["mape_lo"], r["mape_hi"]), ".2f"),
            _f(r["bias"], "+.3f"), _f(r["scatter"], ".3f"), _f(r["outlier_fraction"], ".1f", 100),
            _f(r["detected_fraction"], ".1f", 100),
        )
    console.print(table)
    console.print(
        "b2f = blend2flux, b2m2f = blend2mask2flux, sep = SExtractor; sel. paper: galaxies "
        "SExtractor detected, all: every galaxy (a non-detection is a failure); gal. cen. = "
        "central, comp. = companion; outl. = outliers (|Δmag| > 0.75), det. = detected.",
        highlight=False,
    )
    paper_cols = [c for c in df.columns if c.startswith("paper_")]
    rows = df[(df["selection"] == "paper") & (df["role"] == "central")]
    versus = Table(title="central galaxies, paper selection: blendbench (the paper)",
                   **_NARROW)
    for col in ("method", "MAPE %", "bias (mag)", "σ (mag)", "outliers %"):
        versus.add_column(col, justify="left" if col == "method" else "right", overflow="fold",
                          no_wrap=col != "method")
    for _, r in rows.iterrows():
        cells = []
        for key, fmt, scale in (("mape", ".2f", 1), ("bias", "+.3f", 1), ("scatter", ".3f", 1),
                                ("outlier_fraction", ".1f", 100)):
            text = _f(r[key], fmt, scale)
            if f"paper_{key}" in paper_cols and r[f"paper_{key}"] == r[f"paper_{key}"]:
                text += f" ({_f(r[f'paper_{key}'], fmt, scale)})"
            cells.append(text)
        versus.add_row(_CANDELS_ABBREV.get(r["method"], r["method"]), *cells)
    console.print(versus)


def print_robustness(rep) -> None:
    """Two narrow tables: per method its base MAPE and worst track; per track Kendall τ."""
    import math
    import textwrap

    table = Table(title=f"robustness: MAPE % on {rep.base} and on the shift tracks", **_NARROW)
    for col in ("method", f"{rep.base} MAPE %", "median ratio", "worst track", "ratio"):
        table.add_column(col, justify="left" if col in ("method", "worst track") else "right",
                         overflow="fold")
    # method names fold at hyphens, never inside a word (24 characters fit beside the numbers)
    width = max([24, *(len(w) for m in rep.methods for w in m.split("-"))])
    cells = rep.cells[rep.cells["view"] == "all"]
    base = rep.base_scores.set_index("method")
    for m in rep.methods:
        mine = cells[cells["method"] == m]
        ratios = mine["ratio"].astype(float)
        worst = rep.worst.get(m)
        worst_ratio = (float(mine.loc[mine["track"] == worst, "ratio"].iloc[0]) if worst
                       else math.nan)
        table.add_row(
            "\n".join(textwrap.wrap(m, width, break_on_hyphens=True)) or m,
            _f(base["mape"].get(m, math.nan), ".2f"),
            f"×{_f(float(ratios.median()), '.2f')}" if ratios.notna().any() else "–",
            worst or "–",
            f"×{_f(worst_ratio, '.2f')}" if worst else "–",
        )
    console.print(table)
    taus = Table(title=f"does the {rep.base} ranking survive? Kendall τ per track", **_NARROW)
    for col in ("track", "methods", "τ", "p"):
        taus.add_column(col, justify="left" if col == "track" else "right", overflow="fold")
    for _, r in rep.tau.iterrows():
        taus.add_row(str(r["track"]), str(r["n_methods"]), _f(r["tau"], "+.2f"),
                     _f(r["p_value"], ".2g"))
    console.print(taus)


def print_leaderboard(df, title: str) -> None:
    """The leaderboard frame as a rich table, then its warnings and skipped folders.

    Method names fold at their spaces and hyphens, never inside a word: where the console is
    too narrow for that next to the one-line layout, each MAPE interval moves under its value.
    """
    import re
    import textwrap

    from rich.cells import cell_len

    from challenge.reports.leaderboard import REFERENCE_MARK, main_rows

    rows = []
    for _, r in main_rows(df).iterrows():
        name = str(r["name"]) + (REFERENCE_MARK if r.get("reference") is True else "")
        rows.append([str(r["rank"]), name, str(r["n"]), _f(r["mape"], ".2f"),
                     f"[{_f(r['mape_lo'], '.2f')}, {_f(r['mape_hi'], '.2f')}]",
                     _f(r["bias"], "+.3f"), _f(r["scatter"], ".3f"),
                     _f(r["outlier_fraction"], ".1f", 100), str(r.get("inference_time") or "–")])
    header = ["#", "method", "N", "MAPE %", "95% interval", "bias\n(mag)", "σ\n(mag)",
              "outliers\n%", "test-set\ntime"]

    def name_width(head: list[str], body: list[list[str]]) -> int:
        """The width left to the method column (columns are 2 characters apart)."""
        widths = [max(cell_len(line) for cell in (h, *(row[i] for row in body))
                      for line in cell.split("\n"))
                  for i, h in enumerate(head) if i != 1]
        return console.width - sum(widths) - 2 * (len(head) - 1)

    words = max((cell_len(w) for r in rows for w in re.split(r"\s+|(?<=-)", r[1]) if w),
                default=0)
    if name_width(header, rows) < words:  # the interval under the value: 16 more characters
        header[3:5] = ["MAPE %\n95% interval"]
        rows = [[*r[:3], f"{r[3]}\n{r[4]}", *r[5:]] for r in rows]
    width = max(name_width(header, rows), 6)
    table = Table(title=title, **_NARROW)
    for col in header:
        table.add_column(col, justify="left" if col == "method" else "right", overflow="fold",
                         no_wrap=col != "method")
    for r in rows:
        r[1] = "\n".join(textwrap.wrap(r[1], width, break_on_hyphens=True)) or r[1]
        table.add_row(*r)
    console.print(table)
    if "reference" in df.columns and df["reference"].any():
        console.print("★ reference method; the full table, with the (detections only) rows, is "
                      "in leaderboard.md", highlight=False)
    _warn(df.attrs.get("warnings", []))
    for s in df.attrs.get("skipped", []):
        err_console.print(
            styled("skipped", "yellow", f"{s['name']}: {s['reason']}"), highlight=False,
            soft_wrap=True,
        )
