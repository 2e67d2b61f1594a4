"""``blendbench score | compare | leaderboard | robustness | format``: thin commands over the
scoring library."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from challenge.cli.base import app, console, err_console, user_errors
from challenge.contract.errors import ReleaseError
from challenge.contract.release import DEFAULT_SEED
from challenge.contract.submission import FORMAT_HELP, read_submission
from challenge.scoring.scores import N_BOOT, ROLES, load_truth, write_json

_SHOWN = (
    ("mape", "MAPE %", ".2f"),
    ("median_ape", "med. APE %", ".2f"),
    ("bias", "bias", "+.3f"),
    ("median_dmag", "med. Δmag", "+.3f"),
    ("scatter", "σ", ".3f"),
    ("nmad", "NMAD", ".3f"),
    ("outlier_fraction", "outliers", ".3f"),
    ("detected_fraction", "detected", ".3f"),
    ("iou", "IoU", ".3f"),
    ("mask_area_bias", "Δn", "+.3f"),
    ("coverage_68", "cov68", ".3f"),
    ("coverage_95", "cov95", ".3f"),
    ("mean_z", "mean z", "+.2f"),
    ("crps", "CRPS", ".3g"),
)


def _f(value, fmt: str) -> str:
    return "–" if value is None or value != value else format(value, fmt)


def _warn(messages: list[str]) -> None:
    for msg in messages:
        err_console.print(f"[yellow]warning:[/] {escape(msg)}", highlight=False, soft_wrap=True)


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
    from challenge.scoring.evaluator import per_galaxy_table, table_format, write_table
    from challenge.scoring.scores import score

    if per_galaxy is not None:
        table_format(per_galaxy)  # a wrong ending fails before any scoring
    t = load_truth(data, truth)
    sc = score(read_submission(pred), t, n_boot=n_boot, seed=seed)
    _warn(sc.warnings)
    shown = [m for m in _SHOWN if m[0] in sc.overall["both"]]
    table = Table(
        title=f"{sc.submission} on {sc.release} ({sc.truth} truth); "
        f"[95% interval, {n_boot} bootstrap resamples over blends]"
    )
    table.add_column("metric")
    for role in ROLES:
        table.add_column(f"{role} (N={sc.overall[role]['n']})", justify="right")
    for key, label, fmt in shown:
        cells = []
        for role in ROLES:
            text = _f(sc.overall[role][key], fmt)
            ci = sc.ci95.get(role, {}).get(key)
            if ci is not None:
                text += f" [{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]"
            cells.append(text)
        table.add_row(label, *cells)
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
    from challenge.scoring.scores import compare

    t = load_truth(data, truth)
    res = compare(read_submission(a), read_submission(b), t, n_boot=n_boot, seed=seed)
    table = Table(
        title=f"A = {res['a']}, B = {res['b']} on {res['release']} ({res['truth']} "
        "truth): A − B with 95% paired-bootstrap interval"
    )
    for col in ("galaxies", "metric", "A", "B", "A − B", "95% interval", "better"):
        table.add_column(col, justify="left" if col in ("galaxies", "metric") else "right")
    for role, rows in res["overall"].items():
        for metric, r in rows.items():
            lo, hi = r["ci95"]
            table.add_row(
                role,
                metric,
                _f(r["a"], ".4g"),
                _f(r["b"], ".4g"),
                _f(r["diff"], "+.4g"),
                f"[{_f(lo, '+.3g')}, {_f(hi, '+.3g')}]",
                r["better"],
            )
    console.print(table)
    wins = Table(title="MAPE per bin (both galaxies): which method wins where")
    for col in ("binning", "bin", "N", "MAPE A %", "MAPE B %", "95% interval", "better"):
        wins.add_column(col, justify="left" if col in ("binning", "bin") else "right")
    for scheme, rows in res["bins"].items():
        for r in rows:
            if r["role"] != "both":
                continue
            lo, hi = r["ci95"]
            wins.add_row(
                scheme,
                r["label"],
                str(r["n"]),
                _f(r["a"], ".2f"),
                _f(r["b"], ".2f"),
                f"[{_f(lo, '+.2f')}, {_f(hi, '+.2f')}]",
                r["better"],
            )
    console.print(wins)
    if json_out is not None:
        write_json(json_out, res)
        console.print(f"comparison written to {json_out}")


@app.command("leaderboard")
@user_errors
def leaderboard_cmd(
    data: str | None = typer.Option(None, "--data", help="release folder or shipped release"),
    submissions: Path = typer.Option(
        Path("submissions"), "--submissions", help="folder with one sub-folder per submission"
    ),
    out: Path = typer.Option(Path("leaderboard"), "--out", help="output folder"),
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
    if track == "candels2019":
        from challenge.reports.candels2019 import build_candels_track

        path, text = build_candels_track(out, n_boot=n_boot)
        console.print(Markdown(text))
        console.print(f"written to {path}")
        return
    if track != "release":
        raise ReleaseError(f"--track {track!r}: choose release or candels2019")
    if data is None:
        raise ReleaseError("--data is required: a release folder or a shipped release (v1)")
    from challenge.reports.leaderboard import build_leaderboard

    df = build_leaderboard(data, submissions, out, truth=truth, n_boot=n_boot, seed=seed)
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
    submissions: Path = typer.Option(
        Path("submissions"), "--submissions",
        help="<method>/ folders for the base, <track>/<method>/ for each track",
    ),
    out: Path = typer.Option(Path("leaderboard/robustness"), "--out", help="output folder"),
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
    from challenge.reports.robustness import build_robustness

    names = None
    if tracks is not None:
        names = [t.strip() for t in tracks.split(",") if t.strip()]
        if not names:
            raise ReleaseError(f"--tracks {tracks!r}: name at least one track, e.g. v1-psf")
    rep = build_robustness(base, submissions, out, tracks=names, releases_dir=releases,
                           n_boot=n_boot, seed=seed)
    print_robustness(rep)
    console.print(f"full tables in {out / 'robustness.md'}, {out / 'robustness.csv'}, "
                  f"{out / 'figures' / 'robustness.png'}", highlight=False)
    _warn(rep.notes)
    for s in rep.skipped:
        err_console.print(f"[yellow]skipped[/] {s['track']}/{s['name']}: {s['reason']}",
                          highlight=False, soft_wrap=True)


def print_robustness(rep) -> None:
    """Two narrow tables: per method its base MAPE and worst track; per track Kendall τ."""
    import math

    table = Table(title=f"robustness: MAPE % on {rep.base} and on the shift tracks")
    for col in ("method", f"{rep.base} MAPE %", "median ratio", "worst track", "ratio"):
        table.add_column(col, justify="left" if col in ("method", "worst track") else "right",
                         overflow="fold")
    cells = rep.cells[rep.cells["view"] == "all"]
    base = rep.base_scores.set_index("method")
    for m in rep.methods:
        mine = cells[cells["method"] == m]
        ratios = mine["ratio"].astype(float)
        worst = rep.worst.get(m)
        worst_ratio = (float(mine.loc[mine["track"] == worst, "ratio"].iloc[0]) if worst
                       else math.nan)
        table.add_row(
            escape(m),
            _f(base["mape"].get(m, math.nan), ".2f"),
            f"×{_f(float(ratios.median()), '.2f')}" if ratios.notna().any() else "–",
            escape(worst or "–"),
            f"×{_f(worst_ratio, '.2f')}" if worst else "–",
        )
    console.print(table)
    taus = Table(title=f"does the {rep.base} ranking survive? Kendall τ per track")
    for col in ("track", "methods", "τ", "p"):
        taus.add_column(col, justify="left" if col == "track" else "right", overflow="fold")
    for _, r in rep.tau.iterrows():
        taus.add_row(escape(str(r["track"])), str(r["n_methods"]), _f(r["tau"], "+.2f"),
                     _f(r["p_value"], ".2g"))
    console.print(taus)


def print_leaderboard(df, title: str) -> None:
    """The leaderboard frame as a rich table, then its warnings and skipped folders."""
    table = Table(title=title)
    for col in ("#", "method", "N", "MAPE %", "95% interval", "bias", "σ", "outliers"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for _, r in df.iterrows():
        table.add_row(
            str(r["rank"]),
            str(r["name"]),
            str(r["n"]),
            _f(r["mape"], ".2f"),
            f"[{_f(r['mape_lo'], '.2f')}, {_f(r['mape_hi'], '.2f')}]",
            _f(r["bias"], "+.3f"),
            _f(r["scatter"], ".3f"),
            _f(r["outlier_fraction"], ".3f"),
        )
    console.print(table)
    _warn(df.attrs.get("warnings", []))
    for s in df.attrs.get("skipped", []):
        err_console.print(
            f"[yellow]skipped[/] {s['name']}: {s['reason']}", highlight=False, soft_wrap=True
        )
