"""The leaderboard: score every ``submissions/*/`` folder and write Markdown, CSV and HTML tables.

A submission folder holds a prediction file (``predictions.h5``, or a flux-only table) and a
``submission.toml`` (name, authors, method, link, hardware, training_time, params, release). Only
folders whose release matches the release scored are ranked; the others, and folders whose files
fail validation, are listed as skipped with the reason.

Rows: one per submission, plus ``NAME (detections only)`` for a submission that declares a per-blend
``detection`` case (scored with the paper's selection: central when the case is 0 or 2, companion
when it is 1 or 2). Rank: total MAPE (central + companion), with its 95% bootstrap interval.
When the submission named ``sep`` has a ``detection`` dataset, every row also gets the MAPE on
the blends where that sep run found exactly two sources and on the others (under- or
over-deblended), as Fig. 6 of the paper. When the release has model fluxes, every row also gets
the model-truth MAPE. The ranking shown first holds one row per submission; the full table below
it every view. Rows of reference submissions (``submissions/<release>/``) are marked ★.

The set of files (``leaderboard.md``, ``.csv``, ``.html``, ``figures/*.png``) is replaced as a
whole: it is written into a new sibling folder, together with hard links to everything else in the
output folder, and the two folders are swapped once. A reader sees the old set or the new one,
never a mix; a run that fails or is killed midway leaves the old set as it was.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import dataclasses
import errno
import functools
import html
import io
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable
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
from challenge.contract.workspace import check_replace
from challenge.reports.references import REFERENCE_SET
from challenge.scoring.scores import (
    N_BOOT,
    Score,
    Truth,
    atomic_write_text,
    load_truth,
    paper_selection,
    score,
)

SEP_REFERENCE = "sep"
MAX_NAME = 100  # characters of a submission's name
MAX_TEXT = 300  # characters of a submission.toml text shown on the leaderboard
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
    "mape_sep_other": ("MAPE, sep ≠ 2 sources %", ".2f"),
    "params": ("params", "s"), "hardware": ("hardware", "s"),
    "training_time": ("training time", "s"), "inference_time": ("test-set inference time", "s"),
    "method": ("what it is", "s"),
}
# The ranking shown first: one row per submission (its "all galaxies" view), the columns an
# outsider reads; the full table (every view and column) follows it in leaderboard.md.
MAIN_COLUMNS = ("rank", "name", "mape", "mape_ci", "bias", "scatter", "outlier_fraction", "iou",
                "params", "training_time", "inference_time", "hardware", "method")
REFERENCE_MARK = " ★"
REFERENCE_NOTE = "★ a reference method of the kit (`submissions/<release>/`)."
# The number behind a column shown as text: the HTML table sorts by it (missing values last).
SORT_KEYS = {"mape_ci": "mape_lo", "params": "n_params", "training_time": "training_time_s",
             "inference_time": "inference_time_s"}
TEXT_COLUMNS = ("name", "hardware", "method")  # sorted as text; every other column as a number
# Figure file -> what it shows (the HTML page's caption and alt text).
FIGURES = {
    "leaderboard_mape.png":
        "MAPE of every method over central and companion galaxies, best at the top; the error "
        "bars are 95% bootstrap intervals over blends.",
    "methods_vs_delta_mag.png":
        "Median Δmag (measured − true magnitude, left) and its scatter σ (right) of every "
        "method, central and companion galaxies together, per bin of the pair's magnitude "
        "difference Δmag_pair = m_central − m_companion.",
    "methods_vs_distance.png":
        "Median Δmag (measured − true magnitude, left) and its scatter σ (right) of every "
        "method, central and companion galaxies together, per bin of the distance between the "
        "two centres in half-light radii (d / R_e).",
    "methods_vs_morphology.png":
        "Median Δmag (measured − true magnitude, left) and its scatter σ (right) of every "
        "method, central and companion galaxies together, per morphology of the galaxy.",
}
# Everything the leaderboard writes into its output folder; the rest of the folder is kept.
OUTPUTS = ("leaderboard.md", "leaderboard.csv", "leaderboard.html",
           *(f"figures/{name}" for name in FIGURES))


@dataclass
class Entry:
    """One scored submission folder."""

    folder: Path
    submission: Submission
    score: Score
    order: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    reference: bool = False


def _duration(seconds: float) -> str:
    """``"44.2 min"``, ``"1.7 h"``, ``"5.9 s"``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


_UNIT_SECONDS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "min": 60,
                 "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600,
                 "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_PARAM_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def _amount(value: Any, units: dict[str, float]) -> float | None:
    """A number from TOML: itself, or text starting with a number and one of ``units``
    (``"3 h"``, ``"35.5 min"``, ``"1.6 M"``); ``None`` when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value) if math.isfinite(value) else None
        except OverflowError:  # an integer beyond any float
            return None
    if not isinstance(value, str):
        return None
    value = re.sub(r"(?<=\d)[,_](?=\d{3})", "", value)  # 1,600,000
    m = _AMOUNT.match(value)
    if m is None or m.group(2).lower() not in units:
        return None
    rest = value[m.end():]
    if rest and rest[0].isalnum():
        return None
    number = float(m.group(1)) * units[m.group(2).lower()]
    return number if math.isfinite(number) else None


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The submission.toml fields shown on the leaderboard: display text per column, and the
    numbers behind the cost columns (``training_time_s``, ``inference_time_s`` in seconds,
    ``n_params``; NaN when not recorded). Zero or negative costs are "not recorded" ("–")."""
    out: dict[str, Any] = {}
    for key, aliases in _META_KEYS.items():
        value = next((meta[a] for a in aliases if a in meta), "")
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if key in ("training_time", "inference_time", "params"):
            units = _PARAM_SCALE if key == "params" else _UNIT_SECONDS
            number = _amount(value, units)
            if number is not None and number <= 0:
                number, value = None, "–"  # no training, no learned parameters: not "0 s" / "0"
            elif number is None and not isinstance(value, str):
                value = "–"  # not a number a table can show (e.g. an integer beyond any float)
            elif number is not None and not isinstance(value, str):
                value = (_duration(number) if key != "params" else
                         f"{number / 1e6:.1f} M" if number >= 1e5 else f"{number:,.0f}")
            out["n_params" if key == "params" else f"{key}_s"] = (
                math.nan if number is None else number)
        text = " ".join(str(value).split())
        out[key] = text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"
    out["hardware"] = _short_hardware(out["hardware"])
    return out


def _short_hardware(text: str, limit: int = 32) -> str:
    """The hardware's first item (``"AMD EPYC x2 cores"`` of ``"AMD EPYC x2 cores, keras 3.15
    (tensorflow); ..."``), cut to ``limit`` characters."""
    first = re.split(r"[,;]", text.replace("(R)", "").replace("(TM)", ""),
                     maxsplit=1)[0].strip() or text.strip()
    return first if len(first) <= limit else first[:limit - 1].rstrip() + "…"


def is_submission_folder(folder: Path) -> bool:
    """A visible folder holding a ``submission.toml`` or a prediction file."""
    return folder.is_dir() and not folder.name.startswith((".", "_")) and (
        (folder / METADATA_FILE).is_file()
        or any((folder / n).is_file() for n in PREDICTION_NAMES))


def _row(name: str, view: str, sc: Score, meta: dict[str, Any]) -> dict[str, Any]:
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


def _folders(submissions_dir: str | Path | None,
             references_dir: str | Path | None) -> list[tuple[Path, bool]]:
    """``(folder, is_reference)`` for every submission folder, the references first."""
    roots = [(Path(d), ref) for d, ref in ((references_dir, True), (submissions_dir, False))
             if d is not None]
    present = [(root, ref) for root, ref in roots if root.is_dir()]
    if not present:
        where = " or ".join(str(root) for root, _ in roots) or "no folder given"
        raise ReleaseError(f"{where}: no submissions folder; put one folder per method in it "
                           "(see `blendbench format`)")
    return [(folder, ref) for root, ref in present
            for folder in sorted(p for p in root.iterdir() if is_submission_folder(p))]


def score_folders(truth: Truth, submissions_dir: str | Path | None, *,
                  references_dir: str | Path | None = None, n_boot: int = N_BOOT,
                  seed: int = DEFAULT_SEED) -> tuple[list[Entry], list[dict[str, str]]]:
    """Score every submission folder for ``truth.release``.

    Args:
        submissions_dir: one sub-folder per submission (the user's), or None.
        references_dir: one sub-folder per reference method (``submissions/<release>/``), or
            None. Its entries are marked as references and take their names first: a
            submission whose name is already taken is skipped.

    Returns:
        ``(entries, skipped)``; ``skipped`` lists ``{"name", "reason"}`` for folders of another
        release, whose files do not pass validation, or whose name is taken.
    """
    entries, skipped = [], []
    taken: dict[str, str] = {}
    for folder, reference in _folders(submissions_dir, references_dir):
        name = folder_name(folder)
        try:
            meta = read_metadata(folder / METADATA_FILE)
            declared = meta.get("release")
            if declared is not None and declared != truth.release:
                skipped.append(_skip(name, "another release",
                                     f"release {declared!r}, not {truth.release!r}"))
                continue
            sub = read_submission(folder, expect=(truth.n, truth.stamp_size))
            if sub.release is not None and sub.release != truth.release:
                skipped.append(_skip(name, "another release",
                                     f"release {sub.release!r}, not {truth.release!r}"))
                continue
            if len(sub.name) > MAX_NAME or not sub.name.isprintable():
                skipped.append(_skip(name, "invalid name", (
                    f"its name is not one printable line of at most {MAX_NAME} characters; "
                    "shorten it (predictions.h5's name attribute or name in submission.toml)")))
                continue
            order = match_to_release(sub, truth.blend_id, truth.release, truth.stamp_size)
            if sub.name in taken:
                skipped.append(_skip(name, "name taken", (
                    f"name {sub.name!r} is already taken by {taken[sub.name]}; give it another "
                    "name (predictions.h5's name attribute, or name in submission.toml)")))
                continue
            sc = score(sub, truth, n_boot=n_boot, seed=seed)
        except SubmissionError as err:
            skipped.append(_skip(name, "invalid submission", f"invalid: {err}"))
            continue
        except Exception as err:  # noqa: BLE001  (one hostile folder never stops the board)
            skipped.append(_skip(name, "unreadable", f"unreadable ({type(err).__name__}); check "
                                 "its files with `blendbench score FOLDER`"))
            continue
        taken[sub.name] = "a reference" if reference else f"the folder {name!r}"
        entries.append(Entry(folder, dataclasses.replace(sub, masks=None), sc, order, meta,
                             reference))
    return entries, skipped


def folder_name(folder: Path) -> str:
    """A folder's name as text, whatever bytes it holds (undecodable ones as ``\\xNN``)."""
    return os.fsencode(folder.name).decode("utf-8", "backslashreplace")


def _skip(name: str, kind: str, reason: str) -> dict[str, str]:
    """A skipped folder: its name, the kind of refusal (what the published files show) and the
    one-line reason (what the terminal shows)."""
    return {"name": name, "kind": kind, "reason": reason}


def _sep_cases(entries: list[Entry]) -> np.ndarray | None:
    """The sep reference run's detection case per blend, in truth order (or None)."""
    for e in entries:
        if e.submission.name == SEP_REFERENCE and e.submission.detection is not None:
            return e.submission.detection[e.order]
    return None


def leaderboard_table(entries: list[Entry], truth: Truth, *, model_truth: Truth | None = None,
                      n_boot: int = N_BOOT, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The ranked table of the scored entries (see the module docstring for the rows)."""
    cases = _sep_cases(entries)
    rows = []
    roles = {r.name: r.role for r in REFERENCE_SET}
    for e in entries:
        meta = _metadata(e.metadata)
        if e.reference and e.submission.name in roles:
            meta["method"] = roles[e.submission.name]
        views: list[tuple[str, str, Score, np.ndarray | None]] = [
            (e.submission.name, "all", e.score, None)]
        if e.submission.detection is not None:
            sel = paper_selection(e.submission.detection[e.order])
            sc = score(e.submission, truth, selection=sel, selection_name="detections",
                       n_boot=n_boot, seed=seed, with_bins=False)
            views.append((e.submission.name + DETECTIONS_ONLY, "detections only", sc, sel))
        for name, view, sc, sel in views:
            row = {**_row(name, view, sc, meta), "reference": e.reference}
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
        return str(value) if str(value).strip() else "–"
    return format(value, fmt)


def _display_columns(df: pd.DataFrame, main: bool = False) -> list[str]:
    """The columns shown: the ranking's (``main``) or the full table's, less the optional metric
    columns that no row fills."""
    cols = list(MAIN_COLUMNS) if main else [c for c in COLUMNS if c != "method"]
    cols = [c for c in cols if c in df.columns or c == "mape_ci"]
    optional = ("iou", "mape_model", "mape_sep_two", "mape_sep_other")
    return [c for c in cols if c not in optional or (c in df.columns and df[c].notna().any())]


def _cells(row: pd.Series, cols: list[str]) -> list[str]:
    out = []
    for c in cols:
        if c == "mape_ci":
            out.append(f"[{_cell(row['mape_lo'], '.2f')}, {_cell(row['mape_hi'], '.2f')}]")
        elif c == "name" and row.get("reference") is True:
            out.append(_cell(row.get(c), "s") + REFERENCE_MARK)
        else:
            out.append(_cell(row.get(c), COLUMNS[c][1]))
    return out


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The ranking's rows: each submission once (its "all galaxies" view), ranked among
    themselves."""
    if "view" not in df.columns:
        return df
    main = df[df["view"] == "all"].copy()
    main["rank"] = np.arange(1, len(main) + 1)
    return main


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|$])")


def markdown_text(text: object) -> str:
    """User text as inert Markdown: HTML's ``& < >`` as entities, every character Markdown
    gives a meaning to (emphasis, links, code, tables, maths) escaped, one line."""
    one_line = " ".join(str(text).split())
    entities = html.escape(one_line, quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", entities)


def _markdown_table(df: pd.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS[c][0] for c in cols) + " |",
             "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in cols) + "|"]
    for _, row in df.iterrows():
        cells = [markdown_text(x) if c in TEXT_COLUMNS else x
                 for c, x in zip(cols, _cells(row, cols), strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every text cell that a spreadsheet would read as a formula (starting with
    ``= + - @``, a tab or a carriage return) prefixed with ``'``."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(
                _FORMULA) else v)
    return out


def leaderboard_markdown(df: pd.DataFrame, release: str, truth: str,
                         skipped: list[dict[str, str]]) -> str:
    """The ranking (one row per submission), the full table, then the skipped submissions."""
    lines = [f"# blendbench leaderboard: release {release}, {truth} truth", "",
             "Ranked by MAPE over central and companion galaxies (95% bootstrap interval over "
             "blends). σ = scatter of Δmag; outliers |Δmag| > 0.75 mag. Cost: training time, "
             "time to predict the whole test set (test-set inference time) and the number of "
             "learned parameters, as each submission.toml records them (– where not recorded). "
             + (REFERENCE_NOTE if "reference" in df.columns and df["reference"].any() else ""),
             "", *_markdown_table(main_rows(df), _display_columns(df, main=True)), "",
             "## Full table", "",
             "Every column, and for methods that report which sources they detected, a "
             "`(detections only)` row scored on the galaxies they found (the paper's "
             "selection).", "", *_markdown_table(df, _display_columns(df))]
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- {markdown_text(s['name'])}: {s.get('kind', 'skipped')}" for s in skipped]
    return "\n".join(lines) + "\n"


def sort_value(row: pd.Series, col: str) -> float | str | None:
    """What the HTML table sorts a cell by: the number behind it (a time in seconds, not its
    "1.7 h" text), the text of a text column, or ``None`` when the value is missing ("–")."""
    if col in TEXT_COLUMNS:
        text = _cells(row, [col])[0]
        return None if text == "–" else text
    value = row.get(SORT_KEYS.get(col, col))
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return float(value) if math.isfinite(float(value)) else None


_CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; color: #1d1d1f; line-height: 1.4;
       margin: 0 auto; padding: 1rem; max-width: 100rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.table-scroll { overflow-x: auto; max-width: 100%; border: 1px solid #ccd; }
.table-scroll:focus { outline: 2px solid #36c; }
table { border-collapse: collapse; font-size: 0.8rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.4em; text-align: right; border-bottom: 1px solid #dde; }
td { white-space: nowrap; }
th { background: #eef; vertical-align: bottom; font-weight: 600; min-width: 3em; }
th button { font: inherit; color: inherit; background: none; border: 0; padding: 0;
            cursor: pointer; text-align: inherit; }
th button:hover, th button:focus-visible { text-decoration: underline; }
.sort-mark { display: inline-block; width: 1em; text-align: center; color: #36c; }
th.text, td.text { text-align: left; }
td.wrap { white-space: normal; min-width: 9em; }
td.about { white-space: normal; min-width: 16em; max-width: 24em; text-align: left; }
th.name, td.name { position: sticky; left: 0; z-index: 1; }
td.name { background: #fff; font-weight: 600; white-space: normal; min-width: 8em;
          max-width: 13em; }
figure { margin: 1.5rem 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #444; max-width: 50rem; margin-top: 0.4rem; }
"""

_SORT_JS = """
(() => {
  const table = document.getElementById('leaderboard');
  const heads = Array.from(table.tHead.rows[0].cells);
  const body = table.tBodies[0];
  const key = (row, i, numeric) => {
    const v = row.cells[i].dataset.sort;
    if (v === undefined || v === '') return null;  // missing: always last
    return numeric ? Number(v) : v.toLowerCase();
  };
  heads.forEach((th, i) => th.querySelector('button').addEventListener('click', () => {
    const asc = th.getAttribute('aria-sort') !== 'ascending';
    const numeric = th.dataset.type === 'number';
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a, i, numeric), y = key(b, i, numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    body.append(...rows);
    heads.forEach(h => { h.removeAttribute('aria-sort');
                         h.querySelector('.sort-mark').textContent = ''; });
    th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
    th.querySelector('.sort-mark').textContent = asc ? '\\u25b2' : '\\u25bc';
  }));
})();
"""


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in px from a PNG header, or None."""
    if data[:8] != b"\\x89PNG\\r\\n\\x1a\\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _figure_html(name: str, data: bytes) -> str:
    caption = html.escape(FIGURES.get(name, name))
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (f'<figure><img alt="{caption}"{dims} src="data:image/png;base64,'
            f'{base64.b64encode(data).decode()}"><figcaption>{caption}</figcaption></figure>')


def leaderboard_html(df: pd.DataFrame, release: str, truth: str, skipped: list[dict[str, str]],
                     figures: dict[str, bytes]) -> str:
    """A static, self-contained page (no network): the table in a sideways-scrolling box, sorted
    by clicking a header (numbers by value, missing values last, the sorted column marked with
    ``aria-sort`` and ▲/▼), and the figures embedded with captions."""
    full = _display_columns(df)
    cols = [*full[:2], "method", *full[2:]]  # what each method is, next to its name
    head = []
    for c in cols:
        kind = "text" if c in TEXT_COLUMNS else "number"
        cls = ' class="text name"' if c == "name" else ' class="text"' if kind == "text" else ""
        sort = ' aria-sort="ascending"' if c == "rank" else ""
        mark = "▲" if c == "rank" else ""
        head.append(f'<th scope="col"{cls} data-type="{kind}"{sort}><button type="button">'
                    f'{html.escape(COLUMNS[c][0])}<span class="sort-mark" aria-hidden="true">'
                    f"{mark}</span></button></th>")
    body = []
    for _, row in df.iterrows():
        cells = []
        for c, text in zip(cols, _cells(row, cols), strict=True):
            value = sort_value(row, c)
            key = "" if value is None else value if isinstance(value, str) else repr(value)
            cls = {"name": ' class="text name"', "hardware": ' class="text wrap"',
                   "method": ' class="text about"'}.get(c, "")
            cells.append(f'<td{cls} data-sort="{html.escape(key)}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    imgs = "\n".join(_figure_html(k, v) for k, v in figures.items())
    skip = "".join(f"<li>{html.escape(s['name'])}: {html.escape(s.get('kind', 'skipped'))}</li>"
                   for s in skipped)
    title = f"blendbench leaderboard: release {html.escape(release)}, {html.escape(truth)} truth"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style></head><body>
<main>
<h1>{title}</h1>
<p>Ranked by MAPE over central and companion galaxies, with 95% bootstrap intervals over blends.
σ is the scatter of Δmag (measured − true magnitude); outliers have |Δmag| &gt; 0.75 mag. Cost:
training time, time to predict the whole test set and learned parameters, as each submission
records them. Click a column header to sort (again to reverse); missing values (–) stay last.
{html.escape(REFERENCE_NOTE) if "reference" in df.columns and df["reference"].any() else ""}</p>
<div class="table-scroll" role="region" aria-label="leaderboard table (scrolls sideways)"
 tabindex="0">
<table id="leaderboard"><thead><tr>{"".join(head)}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
</div>
{f"<h2>Skipped</h2><ul>{skip}</ul>" if skipped else ""}
{"<h2>Figures</h2>" if figures else ""}
{imgs}
</main>
<script>{_SORT_JS}</script>
</body></html>
"""


def _figures(df: pd.DataFrame, entries: list[Entry]) -> dict[str, bytes]:
    """The figures, with the methods in rank order (one row per submission)."""
    from challenge.reports import figures as F
    ranked = main_rows(df)
    if ranked.empty:
        return {}
    out = {"leaderboard_mape.png": F.figure_bytes(F.leaderboard_mape(
        list(ranked["name"]), ranked["mape"].to_numpy(float), ranked["mape_lo"].to_numpy(float),
        ranked["mape_hi"].to_numpy(float)))}
    by_name = {e.submission.name: e.score for e in entries}
    scores = {name: by_name[name] for name in ranked["name"] if name in by_name}
    for scheme, label in (("delta_mag", "Δmag_pair"), ("distance", "distance / R_e"),
                          ("morphology", "morphology")):
        out[f"methods_vs_{scheme}.png"] = F.figure_bytes(F.methods_binned(scores, scheme, label))
    return out


# ---------------------------------------------------------------------------------------------
# replacing the set of files at once

_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15): swap two paths atomically
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    name = ctypes.util.find_library("c") if os.name == "posix" else None
    fn = getattr(ctypes.CDLL(name, use_errno=True), "renameat2", None) if name else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing folders in one step (Linux ``renameat2``); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not on this system / file system
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; the old ``out``, if any, ends up at ``new``'s path or at
    ``new``'s path + ``-old`` (the caller removes both). Concurrent swaps each land whole."""
    for _ in range(100):
        if not out.exists():
            try:
                os.rename(new, out)
                return
            except OSError:  # another run put its folder there first
                continue
        try:
            if _exchange(new, out):
                return
        except FileNotFoundError:  # another run moved it away meanwhile
            continue
        # no atomic exchange on this system: move the old set aside, then the new one in
        try:
            os.rename(out, new.with_name(new.name + "-old"))
        except FileNotFoundError:
            continue
        try:
            os.rename(new, out)
        except OSError:
            pass  # another run's set took the place first: it stays, ours is dropped
        return
    raise OSError(f"{out}: could not replace the folder (other runs kept replacing it)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale(out: Path) -> None:
    """Tidy up after runs into ``out`` that were killed (process gone).

    A run killed between the two renames of a replacement without an atomic exchange leaves
    ``out`` missing and the previous set aside (``.NAME.new-PID-…-old``): that set is put back
    at ``out`` first, whole, with whatever else the folder held. Then the killed runs' other
    temporary folders, which hold only what those runs wrote or hard links, are removed.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.{re.escape(out.name)}\.new-(\d+)-[0-9a-f]+(-old)?")
    stale = [(p, m) for p in out.parent.iterdir()
             if (m := pattern.fullmatch(p.name)) and p.is_dir() and not _alive(int(m.group(1)))]
    for path, m in stale:
        if m.group(2) and not out.exists():
            os.rename(path, out)  # the previous set, as it was
    for path, _ in stale:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


_TEMPORARY = re.compile(r"\..+(\.tmp|\.new-\d+-[0-9a-f]+(-old)?)")


def _carry(src: Path, dst: Path, skip: set[str], prefix: str = "") -> None:
    """Hard-link (or copy) everything under ``src`` into ``dst`` but the paths in ``skip`` and
    temporary files or folders (``.*.tmp``, another run's ``.NAME.new-…``)."""
    for entry in os.scandir(src):
        rel = prefix + entry.name
        if rel in skip or _TEMPORARY.fullmatch(entry.name):
            continue
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            target.mkdir()
            _carry(Path(entry.path), target, skip, rel + "/")
        else:
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"{out}: a file, not a folder; give the leaderboard a folder (--out)")
    here = Path.cwd().resolve()
    real = out.resolve()
    if real == here or real in here.parents or real == Path.home().resolve() \
            or (real / ".git").exists():
        raise ReleaseError(f"{out}: the leaderboard replaces its output folder as a whole; give "
                           "it a folder of its own, e.g. --out leaderboard")


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_outputs(out_dir: str | Path, files: dict[str, bytes],
                  replaced: Iterable[str] = OUTPUTS) -> Path:
    """Replace a set of files in ``out_dir`` at once.

    The new folder is written next to ``out_dir`` (``.NAME.new-PID-…``), with hard links to every
    file already in ``out_dir`` that is neither in ``files`` nor in ``replaced``, then swapped in.
    If anything fails, the temporary folder is removed and ``out_dir`` is left as it was.

    Args:
        out_dir: the output folder (created if missing).
        files: relative path (``"figures/x.png"``) -> content.
        replaced: relative paths of an earlier set that are dropped when not in ``files``.
    """
    out = Path(out_dir).absolute()
    if out.is_symlink():
        out = out.resolve()
    _check_out(out)
    new = out.parent / f".{out.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(out)
        new.mkdir()
        if out.is_dir():
            shutil.copymode(out, new)
            _carry(out, new, set(files) | set(replaced))
        for rel, data in files.items():
            _write_file(new / rel, data)
        _swap(new, out)
    except OSError as err:
        raise ReleaseError(f"{out}: cannot write the leaderboard ({err.strerror or err}); check "
                           "that the folder and its parent are writable") from None
    finally:
        shutil.rmtree(new, ignore_errors=True)  # after the swap: the old set
        shutil.rmtree(new.with_name(new.name + "-old"), ignore_errors=True)
    return out


def build_leaderboard(release_dir: str | Path, submissions_dir: str | Path | None,
                      out_dir: str | Path, *, references_dir: str | Path | None = None,
                      truth: str = "sep", n_boot: int = N_BOOT,
                      seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Score all submissions for a release and write the leaderboard.

    Args:
        release_dir: a release folder or the name of a release shipped with the kit.
        submissions_dir: the folder holding one sub-folder per submission (or None).
        references_dir: the reference submissions ranked beside them (``submissions/<release>``;
            marked, and their names taken first), or None.
        out_dir: where ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.html`` and
            ``figures/*.png`` are written, as one set (:func:`write_outputs`); other files in it
            are kept.
        truth: ``"sep"`` or ``"model"``.
        n_boot, seed: bootstrap settings.

    Returns:
        The ranked table (one row per submission view); ``df.attrs["skipped"]`` lists the skipped
        folders with their reason, ``df.attrs["warnings"]`` the scoring warnings (e.g. IoU skipped).
    """
    _check_out(Path(out_dir).absolute())
    t = load_truth(release_dir, truth)
    check_replace(Path(out_dir), t.release)
    model = None
    if truth == "sep":
        try:
            model = load_truth(release_dir, "model")
        except ReleaseError:
            model = None
    entries, skipped = score_folders(t, submissions_dir, references_dir=references_dir,
                                     n_boot=n_boot, seed=seed)
    df = leaderboard_table(entries, t, model_truth=model, n_boot=n_boot, seed=seed)
    figures = _figures(df, entries)
    buf = io.StringIO()
    csv_safe(df).to_csv(buf, index=False)
    files = {f"figures/{name}": data for name, data in figures.items()}
    files["leaderboard.csv"] = buf.getvalue().encode()
    files["leaderboard.md"] = leaderboard_markdown(df, t.release, t.kind, skipped).encode()
    files["leaderboard.html"] = leaderboard_html(df, t.release, t.kind, skipped,
                                                 figures).encode()
    write_outputs(out_dir, files)
    df.attrs["skipped"] = skipped
    df.attrs["warnings"] = list(dict.fromkeys(
        f"{e.submission.name}: {w}" for e in entries for w in e.score.warnings))
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
