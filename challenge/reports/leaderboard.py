"""The leaderboard: score every ``submissions/*/`` folder and write Markdown, CSV and HTML tables.

A submission folder holds a prediction file (``predictions.h5``, or a flux-only table) and a
``submission.toml`` (name, authors, method, link, hardware, training_time, params, release). Only
folders whose release matches the release scored are ranked; the others, and folders whose files
fail validation, are listed as skipped with the reason.

Rows: one per submission, plus ``NAME (detections only)`` for a submission that declares a per-blend
``detection`` case (scored with the paper's selection: central when the case is 0 or 2, companion
when it is 1 or 2). Rank: total MAPE (central + companion), with its 95% bootstrap interval. When
``submissions/sep/`` has a ``detection`` dataset, every row also gets the MAPE on the blends where
that sep run found exactly two sources and on the others (under- or over-deblended), as Fig. 6 of
the paper. When the release has model fluxes, every row also gets the model-truth MAPE.

All files are written atomically (temporary file + ``os.replace``), so concurrent runs never leave a
partial file.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from challenge.contract.errors import ReleaseError, SubmissionError
from challenge.contract.release import DEFAULT_SEED
from challenge.contract.submission import (
    METADATA_FILE,
    PREDICTION_NAMES,
    Submission,
    match_to_release,
    read_metadata,
    read_submission,
)
from challenge.scoring.scores import (
    N_BOOT,
    Score,
    Truth,
    atomic_write_bytes,
    atomic_write_text,
    load_truth,
    paper_selection,
    score,
)

SEP_REFERENCE = "sep"
DETECTIONS_ONLY = " (detections only)"
_META_KEYS = {
    "authors": ("authors", "author"),
    "method": ("method", "summary", "description"),
    "link": ("link", "code", "paper", "url"),
    "hardware": ("hardware",),
    "training_time": ("training_time", "train_time", "training_time_s"),
    "inference_time": ("inference_time", "inference_time_s"),
    "params": ("params", "parameters", "parameter_count", "n_params"),
}
COLUMNS = {  # column -> (header, format) for Markdown / HTML
    "rank": ("#", "d"), "name": ("method", "s"), "n": ("N gal.", "d"),
    "mape": ("MAPE %", ".2f"), "mape_ci": ("95% CI", "s"),
    "mape_central": ("MAPE cen. %", ".2f"), "mape_companion": ("MAPE comp. %", ".2f"),
    "bias": ("bias mag", "+.3f"), "scatter": ("σ mag", ".3f"), "nmad": ("NMAD", ".3f"),
    "outlier_fraction": ("outliers %", "%"), "detected_fraction": ("detected %", "%"),
    "iou": ("IoU", ".3f"), "mape_model": ("MAPE model-truth %", ".2f"),
    "mape_sep_two": ("MAPE, sep 2 sources %", ".2f"),
    "mape_sep_other": ("MAPE, sep under/over %", ".2f"),
    "params": ("params", "s"), "hardware": ("hardware", "s"),
    "training_time": ("training time", "s"), "inference_time": ("test-set time", "s"),
}


@dataclass
class Entry:
    """One scored submission folder."""

    folder: Path
    submission: Submission
    score: Score
    order: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def _duration(seconds) -> str:
    if not isinstance(seconds, int | float):
        return str(seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _metadata(meta: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, aliases in _META_KEYS.items():
        value = next((meta[a] for a in aliases if a in meta), "")
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if key in ("training_time", "inference_time", "params") and not isinstance(value, bool) \
                and isinstance(value, int | float) and value <= 0:
            value = "–"  # no training, no learned parameters, or not recorded: not "0 s" / "0"
        if key in ("training_time", "inference_time") and f"{key}_s" in meta and key not in meta:
            value = _duration(value)
        if key == "params" and isinstance(value, int | float) and value:
            value = f"{value / 1e6:.1f} M" if value >= 1e5 else f"{value:,.0f}"
        out[key] = str(value)
    return out


def is_submission_folder(folder: Path) -> bool:
    """A visible folder holding a ``submission.toml`` or a prediction file."""
    return folder.is_dir() and not folder.name.startswith((".", "_")) and (
        (folder / METADATA_FILE).is_file()
        or any((folder / n).is_file() for n in PREDICTION_NAMES))


def _row(name: str, view: str, sc: Score, meta: dict[str, str]) -> dict[str, Any]:
    both, ci = sc.overall["both"], sc.ci95.get("both", {})
    lo, hi = ci.get("mape", [math.nan, math.nan])
    return {
        "name": name, "view": view, "release": sc.release, "truth": sc.truth, "n": both["n"],
        "mape": both["mape"], "mape_lo": lo, "mape_hi": hi,
        "mape_central": sc.overall["central"]["mape"],
        "mape_companion": sc.overall["companion"]["mape"],
        "bias": both["bias"], "scatter": both["scatter"], "nmad": both["nmad"],
        "outlier_fraction": both["outlier_fraction"],
        "detected_fraction": both["detected_fraction"], "iou": both.get("iou", math.nan),
        **meta,
    }


def score_folders(truth: Truth, submissions_dir: str | Path, *, n_boot: int = N_BOOT,
                  seed: int = DEFAULT_SEED) -> tuple[list[Entry], list[dict[str, str]]]:
    """Score every submission folder for ``truth.release``.

    Returns:
        ``(entries, skipped)``; ``skipped`` lists ``{"name", "reason"}`` for folders of another
        release or whose files do not pass validation.
    """
    entries, skipped = [], []
    root = Path(submissions_dir)
    if not root.is_dir():
        raise ReleaseError(f"{root}: no submissions folder; put one folder per method in it "
                           "(see `blendbench format`)")
    for folder in sorted(p for p in root.iterdir() if is_submission_folder(p)):
        try:
            meta = read_metadata(folder / METADATA_FILE)
            declared = meta.get("release")
            if declared is not None and declared != truth.release:
                skipped.append({"name": folder.name,
                                "reason": f"release {declared!r}, not {truth.release!r}"})
                continue
            sub = read_submission(folder, expect=(truth.n, truth.stamp_size))
            if sub.release is not None and sub.release != truth.release:
                skipped.append({"name": folder.name,
                                "reason": f"release {sub.release!r}, not {truth.release!r}"})
                continue
            order = match_to_release(sub, truth.blend_id, truth.release, truth.stamp_size)
            sc = score(sub, truth, n_boot=n_boot, seed=seed)
        except SubmissionError as err:
            skipped.append({"name": folder.name, "reason": f"invalid: {err}"})
            continue
        entries.append(Entry(folder, dataclasses.replace(sub, masks=None), sc, order, meta))
    return entries, skipped


def _sep_cases(entries: list[Entry]) -> np.ndarray | None:
    """The sep reference run's detection case per blend, in truth order (or None)."""
    for e in entries:
        if e.folder.name == SEP_REFERENCE and e.submission.detection is not None:
            return e.submission.detection[e.order]
    return None


def leaderboard_table(entries: list[Entry], truth: Truth, *, model_truth: Truth | None = None,
                      n_boot: int = N_BOOT, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The ranked table of the scored entries (see the module docstring for the rows)."""
    cases = _sep_cases(entries)
    rows = []
    for e in entries:
        meta = _metadata(e.metadata)
        views: list[tuple[str, str, Score, np.ndarray | None]] = [
            (e.submission.name, "all", e.score, None)]
        if e.submission.detection is not None:
            sel = paper_selection(e.submission.detection[e.order])
            sc = score(e.submission, truth, selection=sel, selection_name="detections",
                       n_boot=n_boot, seed=seed, with_bins=False)
            views.append((e.submission.name + DETECTIONS_ONLY, "detections only", sc, sel))
        for name, view, sc, sel in views:
            row = _row(name, view, sc, meta)
            base = np.ones((truth.n, 2), bool) if sel is None else sel
            if model_truth is not None:
                msc = score(e.submission, model_truth, selection=sel, n_boot=0, with_bins=False)
                row["mape_model"] = msc.overall["both"]["mape"]
            if cases is not None:
                two = np.repeat((cases == 2)[:, None], 2, axis=1)
                row["mape_sep_two"] = sc.galaxies.summary(base & two)["mape"]
                row["mape_sep_other"] = sc.galaxies.summary(base & ~two)["mape"]
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["rank", *COLUMNS])
    df = df.sort_values(["mape", "name"], na_position="last", kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


# ---------------------------------------------------------------------------------------------
# output


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if fmt == "%":
        return f"{100 * value:.1f}"
    if fmt == "s":
        return str(value)
    return format(value, fmt)


def _display_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in COLUMNS if c in df.columns or c == "mape_ci"]
    optional = ("iou", "mape_model", "mape_sep_two", "mape_sep_other")
    return [c for c in cols if c not in optional or (c in df.columns and df[c].notna().any())]


def _cells(row: pd.Series, cols: list[str]) -> list[str]:
    out = []
    for c in cols:
        if c == "mape_ci":
            out.append(f"[{_cell(row['mape_lo'], '.2f')}, {_cell(row['mape_hi'], '.2f')}]")
        else:
            out.append(_cell(row.get(c), COLUMNS[c][1]))
    return out


def leaderboard_markdown(df: pd.DataFrame, release: str, truth: str,
                         skipped: list[dict[str, str]]) -> str:
    """The table as Markdown, with the skipped submissions below it."""
    cols = _display_columns(df)
    lines = [f"# blendbench leaderboard: release {release}, {truth} truth", "",
             "Ranked by MAPE over central and companion galaxies (95% bootstrap interval over "
             "blends). σ = scatter of Δmag; outliers |Δmag| > 0.75 mag.", "",
             "| " + " | ".join(COLUMNS[c][0] for c in cols) + " |",
             "|" + "|".join("---:" if COLUMNS[c][1] not in ("s",) or c == "mape_ci" else "---"
                            for c in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in _cells(row, cols)) + " |")
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['name']}: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"


_SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = r => { const c = r.cells[i]; const v = c.dataset.v;
    return v === undefined ? c.textContent : (v === '' ? Infinity : parseFloat(v)); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}));
"""


def leaderboard_html(df: pd.DataFrame, release: str, truth: str, skipped: list[dict[str, str]],
                     figures: dict[str, bytes]) -> str:
    """A static, self-contained page: sortable table (click a header) and embedded figures."""
    cols = _display_columns(df)
    head = "".join(f"<th>{html.escape(COLUMNS[c][0])}</th>" for c in cols)
    body = []
    for _, row in df.iterrows():
        cells = []
        for c, text in zip(cols, _cells(row, cols), strict=True):
            raw = row.get("mape" if c == "mape_ci" else c)
            num = isinstance(raw, int | float | np.integer | np.floating)
            attr = ""
            if num:
                attr = f' data-v="{raw}"' if math.isfinite(float(raw)) else ' data-v=""'
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    imgs = "".join(
        f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,'
        f'{base64.b64encode(v).decode()}"><figcaption>{html.escape(k)}</figcaption></figure>'
        for k, v in figures.items())
    skip = "".join(f"<li>{html.escape(s['name'])}: {html.escape(s['reason'])}</li>"
                   for s in skipped)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>blendbench leaderboard: {html.escape(release)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th {{ cursor: pointer; background: #eef; }} td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 48em; }}
</style></head><body>
<h1>blendbench leaderboard: release {html.escape(release)}, {html.escape(truth)} truth</h1>
<p>Ranked by MAPE over central and companion galaxies, with 95% bootstrap intervals over blends.
Click a column header to sort.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
{f"<h2>Skipped</h2><ul>{skip}</ul>" if skipped else ""}
<h2>Figures</h2>
{imgs}
<script>{_SORT_JS}</script>
</body></html>
"""


def _figures(df: pd.DataFrame, entries: list[Entry]) -> dict[str, bytes]:
    from challenge.reports import figures as F
    if df.empty:
        return {}
    out = {"leaderboard_mape.png": F.figure_bytes(F.leaderboard_mape(
        list(df["name"]), df["mape"].to_numpy(float), df["mape_lo"].to_numpy(float),
        df["mape_hi"].to_numpy(float)))}
    scores = {e.submission.name: e.score for e in entries}
    for scheme, label in (("delta_mag", "Δmag_pair"), ("distance", "distance / R_e"),
                          ("morphology", "morphology")):
        out[f"methods_vs_{scheme}.png"] = F.figure_bytes(F.methods_binned(scores, scheme, label))
    return out


def build_leaderboard(release_dir: str | Path, submissions_dir: str | Path,
                      out_dir: str | Path, *, truth: str = "sep", n_boot: int = N_BOOT,
                      seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Score all submissions for a release and write the leaderboard.

    Args:
        release_dir: a release folder or the name of a release shipped with the kit.
        submissions_dir: the folder holding one sub-folder per submission.
        out_dir: where ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.html`` and
            ``figures/*.png`` are written (atomically).
        truth: ``"sep"`` or ``"model"``.
        n_boot, seed: bootstrap settings.

    Returns:
        The ranked table (one row per submission view); ``df.attrs["skipped"]`` lists the skipped
        folders with their reason, ``df.attrs["warnings"]`` the scoring warnings (e.g. IoU skipped).
    """
    t = load_truth(release_dir, truth)
    model = None
    if truth == "sep":
        try:
            model = load_truth(release_dir, "model")
        except ReleaseError:
            model = None
    entries, skipped = score_folders(t, submissions_dir, n_boot=n_boot, seed=seed)
    df = leaderboard_table(entries, t, model_truth=model, n_boot=n_boot, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(df, entries)
    for name, data in figures.items():
        atomic_write_bytes(out / "figures" / name, data)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())
    atomic_write_text(out / "leaderboard.md", leaderboard_markdown(df, t.release, t.kind, skipped))
    atomic_write_text(out / "leaderboard.html",
                      leaderboard_html(df, t.release, t.kind, skipped, figures))
    df.attrs["skipped"] = skipped
    df.attrs["warnings"] = [w for e in entries for w in e.score.warnings]
    return df



def generalisation_gap(synthetic_csv: str | Path, real_csv: str | Path,
                       out_md: str | Path | None = None) -> pd.DataFrame:
    """Each method's MAPE on a synthetic release next to a real-galaxy release.

    Args:
        synthetic_csv, real_csv: ``leaderboard.csv`` files written by :func:`build_leaderboard`.
        out_md: optional markdown file to write (atomically).

    Returns:
        One row per method view present in both: MAPE (and interval) on each release, their
        ratio real / synthetic, and the outlier fractions.
    """
    frames = []
    for path in (synthetic_csv, real_csv):
        try:
            frames.append(pd.read_csv(path))
        except FileNotFoundError:
            raise ReleaseError(f"{path}: no leaderboard table; run `blendbench leaderboard` "
                               "for that release first") from None
    syn, real = frames
    keep = ["name", "release", "mape", "mape_lo", "mape_hi", "outlier_fraction"]
    merged = syn[keep].merge(real[keep], on="name", suffixes=("_synthetic", "_real"))
    merged["ratio"] = merged["mape_real"] / merged["mape_synthetic"]
    if out_md is not None:
        rs, rr = str(syn["release"].iloc[0]), str(real["release"].iloc[0])
        lines = [f"# Synthetic → real: {rs} vs {rr}", "",
                 f"MAPE (%) of each method trained or tuned on synthetic galaxies, on {rs} and "
                 f"on the real-galaxy release {rr} (95% bootstrap intervals).", "",
                 f"| method | MAPE {rs} | MAPE {rr} | real / synthetic | outliers {rs} % "
                 f"| outliers {rr} % |", "|---|---:|---:|---:|---:|---:|"]
        for _, r in merged.iterrows():
            lines.append(
                f"| {r['name']} | {r['mape_synthetic']:.2f} [{r['mape_lo_synthetic']:.2f}, "
                f"{r['mape_hi_synthetic']:.2f}] | {r['mape_real']:.2f} [{r['mape_lo_real']:.2f}, "
                f"{r['mape_hi_real']:.2f}] | {r['ratio']:.2f} | "
                f"{100 * r['outlier_fraction_synthetic']:.1f} | "
                f"{100 * r['outlier_fraction_real']:.1f} |"
            )
        atomic_write_text(Path(out_md), "\n".join(lines) + "\n")
    return merged
