"""The robustness report: every method on the distribution-shift tracks, against the base release.

A track is a test release that changes one condition of the base release (``v1-psf``: a sharper
PSF, ``v1-noise``: twice the sky noise...). Its submissions live in
``submissions/<track>/<method>/`` and the base release's in ``submissions/<base>/<method>/``.
For every method and track the report gives:

- the MAPE (%, central + companion) on the track, with its 95% bootstrap interval over blends;
- the method's base MAPE **on the same blend ids** when the track's blends are a subset of the
  base's (the ``v1-*`` tracks keep v1's blend ids), else on all the base blends (``cosmos-example``:
  other galaxies), said in the column ``base_blends``;
- the ratio track / base, with a paired bootstrap interval (the same resampled blends in both)
  when the blend ids are shared;
- the worst track per method (the largest ratio), and per track Kendall's tau between the
  methods' ranking on the base (same blends) and on the track;
- where the error comes from: the MAPE of each blend's total flux (the photometry of the blend)
  and the mean error on the central galaxy's share of it (the deblending), on the track and on the
  base blends the ratio uses, over the blends whose two galaxies are scored.

A track of other blends whose galaxies go fainter than the base's magnitude range also gets the
slice ``<track> (<= 23.5 mag)``: only its galaxies within the base's ``mag_max``.

Only the main view of a submission (all galaxies) is scored. A missing track submission leaves an
empty cell and a note; a folder that fails validation is listed as skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from challenge.contract.errors import ReleaseError
from challenge.contract.ids import id_positions
from challenge.contract.release import DEFAULT_SEED, TRACK_SHIFTS, ReleaseSpec, resolve_release
from challenge.reports.leaderboard import Entry, is_submission_folder, score_folders
from challenge.scoring import metrics as M
from challenge.scoring.scores import (
    N_BOOT,
    Galaxies,
    Score,
    Truth,
    atomic_write_bytes,
    atomic_write_text,
    galaxies_for,
    interval95,
    load_truth,
    mape_replicates,
    resample_index,
    score,
)

# One line per track for the legend (the shift tracks' own from release.py); a track not listed
# is described by the fields of its spec that differ from the base's.
TRACK_DESCRIPTIONS: dict[str, str] = {
    **{name: text for name, (text, _) in TRACK_SHIFTS.items()},
    "cosmos-example": "real HST/ACS COSMOS galaxies, F814W re-rendered to v1's grid and PSF "
    "(other galaxies and blends, median 25 mag)",
}
# Spec fields that say how a release is made, not what it observes: left out of descriptions.
_BOOKKEEPING = {"name", "version", "seed", "morphology_counts", "n_blends", "test_fraction",
                "source_path", "max_galaxies", "base"}
CSV_COLUMNS = ("method", "track", "release", "view", "n", "n_blends", "mape", "mape_lo",
               "mape_hi", "base_release", "base_blends", "base_n", "base_mape", "base_mape_lo",
               "base_mape_hi", "ratio", "ratio_lo", "ratio_hi", "total_mape", "share_error",
               "base_total_mape", "base_share_error", "worst", "note")


@dataclass(frozen=True)
class Track:
    """A distribution-shift track to score.

    Attributes:
        name: the release name (``v1-psf``), also the sub-folder of its submissions.
        folder: the release folder (the committed tables of a shipped release, or a generated one).
        spec: the release spec read from its ``release.toml``.
        submissions: ``<submissions>/<name>``, one sub-folder per method.
        description: one line saying what the track changes.
    """

    name: str
    folder: Path
    spec: ReleaseSpec
    submissions: Path
    description: str


@dataclass
class Robustness:
    """The robustness report of the methods of one base release.

    Attributes:
        base: the base release name.
        tracks: the tracks scored, in column order.
        base_scores: one row per base method (``method``, ``n``, ``mape``, ``mape_lo``,
            ``mape_hi``: MAPE % on all the base blends), best first.
        cells: long format, one row per method x track column (:data:`CSV_COLUMNS`; MAPE in %,
            ``n`` in galaxies, NaN where a submission is missing).
        tau: one row per track column: ``track``, ``n_methods``, ``tau``, ``p_value``.
        worst: method -> the track (main views only) with the largest ratio track / base.
        legend: track column -> what it changes and which base blends it is compared with.
        skipped: ``{"track", "name", "reason"}`` for submission folders not scored.
        notes: missing pieces (no track submission, a sub-folder that is not a release...).
    """

    base: str
    tracks: list[Track]
    base_scores: pd.DataFrame
    cells: pd.DataFrame
    tau: pd.DataFrame
    worst: dict[str, str]
    legend: dict[str, str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """The track columns, in order (slices after their track)."""
        return list(self.legend)

    @property
    def methods(self) -> list[str]:
        """The methods, in row order (base ranking first, then track-only methods)."""
        return list(dict.fromkeys(self.cells["method"])) if len(self.cells) else []


# ---------------------------------------------------------------------------------------------
# tracks


def spec_changes(base: ReleaseSpec, spec: ReleaseSpec) -> str:
    """The conditions of ``spec`` that differ from ``base``, e.g. ``"sky_sigma 0.012 → 0.024"``."""
    changes = []
    for f in dataclasses.fields(ReleaseSpec):
        if f.name in _BOOKKEEPING:
            continue
        a, b = getattr(base, f.name), getattr(spec, f.name)
        if a != b:
            changes.append(f"{f.name} {a:g} → {b:g}" if isinstance(a, float)
                           and isinstance(b, float) else f"{f.name} {a} → {b}")
    return ", ".join(changes)


def track_description(base: ReleaseSpec, spec: ReleaseSpec) -> str:
    """One line saying what a track changes: :data:`TRACK_DESCRIPTIONS`, else its spec changes."""
    return TRACK_DESCRIPTIONS.get(spec.name) or spec_changes(base, spec) or "same conditions"


def _locate(name: str | Path, releases_dir: Path | None) -> str | Path:
    """``releases_dir/name`` when it is a release folder, else ``name`` itself."""
    if releases_dir is not None and (Path(releases_dir) / str(name) / "release.toml").is_file():
        return Path(releases_dir) / str(name)
    return name


def find_tracks(base: ReleaseSpec, submissions_dir: str | Path, *,
                names: Sequence[str | Path] | None = None,
                releases_dir: str | Path | None = None) -> tuple[list[Track], list[str]]:
    """The tracks to score, and notes on the sub-folders left out.

    Args:
        base: the base release's spec (a track named like it is refused).
        submissions_dir: one sub-folder per release (the base's and each track's), holding its
            submission folders.
        names: track release names or release folders; by default every sub-folder of
            ``submissions_dir`` that holds submission folders and whose name is a release
            (but a synthetic benchmark with training blends of its own, such as ``mini``).
        releases_dir: a folder of generated release folders, looked up by name before the
            releases shipped with the kit.

    Raises:
        ReleaseError: a name given is neither a release nor a release folder, or is the base.
    """
    root = Path(submissions_dir)
    rel_dir = None if releases_dir is None else Path(releases_dir)
    notes: list[str] = []
    if names is None:
        if not root.is_dir():
            raise ReleaseError(f"{root}: no submissions folder; put one folder per release in "
                               "it, each with one folder per method (submissions/<release>/"
                               "<method>/)")
        found = []
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not is_submission_folder(p)):
            if sub.name.startswith((".", "_")) or not any(map(is_submission_folder,
                                                               sub.iterdir())):
                continue
            try:
                spec = resolve_release(_locate(sub.name, rel_dir))[1].spec
            except ReleaseError:
                notes.append(f"{sub}: holds submissions but {sub.name!r} is not a release "
                             "(pass --releases DIR or --tracks FOLDER); left out")
                continue
            if spec.source == "synthetic" and not spec.is_track and (
                    spec.n_blends.get("train", 0) or spec.n_blends.get("val", 0)):
                continue  # a synthetic benchmark of its own (mini), not a shift of the base
            if sub.name != base.name:
                found.append(sub.name)
        rank = {name: k for k, name in enumerate(TRACK_DESCRIPTIONS)}
        names = sorted(found, key=lambda n: (rank.get(n, len(rank)), n))
    tracks = []
    for name in names:
        try:
            folder, info = resolve_release(_locate(name, rel_dir))
        except ReleaseError:
            raise ReleaseError(
                f"--tracks {name}: not a release shipped with the kit nor a release folder; "
                f"name a track (e.g. {', '.join(list(TRACK_DESCRIPTIONS)[:3])}) or a folder "
                "written by `blendbench generate`") from None
        spec = info.spec
        if spec.name == base.name:
            raise ReleaseError(f"--tracks {name}: this is the base release {base.name!r}; "
                               "name the tracks to compare with it")
        tracks.append(Track(spec.name, folder, spec, root / spec.name,
                            track_description(base, spec)))
    return tracks, notes


# ---------------------------------------------------------------------------------------------
# scores


def _mape_ci(sc: Score) -> list[float]:
    """The 95% interval of the MAPE (central + companion) of a score; NaN without bootstrap."""
    return sc.ci95.get("both", {}).get("mape", [math.nan, math.nan])


def blend_split(gal: Galaxies) -> tuple[float, float]:
    """(blend total MAPE %, mean share error in percentage points) of the blends whose two
    galaxies are selected (:func:`~challenge.scoring.metrics.blend_total_ape`,
    :func:`~challenge.scoring.metrics.share_error`; a blend with neither galaxy detected has no
    share); NaN where there is none."""
    both = gal.selected.all(axis=1)
    if not both.any():
        return math.nan, math.nan
    total = 100.0 * float(M.blend_total_ape(gal.flux[both], gal.truth[both]).mean())
    share = M.share_error(gal.flux[both], gal.truth[both])
    share = share[np.isfinite(share)]
    return total, 100.0 * float(share.mean()) if share.size else math.nan


def _empty_row(method: str, column: str, truth: Truth, view: str, base: Truth,
               base_blends: str) -> dict[str, Any]:
    nan = math.nan
    return {"method": method, "track": column, "release": truth.release, "view": view,
            "n": 0, "n_blends": truth.n, "mape": nan, "mape_lo": nan, "mape_hi": nan,
            "base_release": base.release, "base_blends": base_blends, "base_n": 0,
            "base_mape": nan, "base_mape_lo": nan, "base_mape_hi": nan, "ratio": nan,
            "ratio_lo": nan, "ratio_hi": nan, "total_mape": nan, "share_error": nan,
            "base_total_mape": nan, "base_share_error": nan, "worst": False, "note": ""}


def track_rows(track: Track, truth: Truth, entries: dict[str, Entry],
               skipped: dict[str, str], base_truth: Truth, base_entries: dict[str, Entry],
               methods: list[str], *, mag_max: float, n_boot: int = N_BOOT,
               seed: int = DEFAULT_SEED) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows of one track (its main view, plus a magnitude slice for other blends).

    Args:
        track, truth: the track and its truth.
        entries, skipped: the track's scored submissions and skipped folders, by method.
        base_truth, base_entries: the base release's truth and scored submissions, by method.
        methods: every method, in row order.
        mag_max: the base's faintest magnitude (AB), for the slice of a track of other blends.
        n_boot, seed: bootstrap settings.

    Returns:
        ``(rows, legend)``: one row per method and view (:data:`CSV_COLUMNS` but ``worst``), and
        column label -> legend line.
    """
    pos, found = id_positions(base_truth.blend_id, truth.blend_id)
    pos = pos if found.all() else None  # None: the track has blends of its own
    if pos is not None:
        base_blends = f"same {truth.n} blend ids"
        sub_truth = base_truth.subset(pos)
        W = resample_index(truth.n, n_boot, seed)[1] if n_boot > 0 else None
    else:
        base_blends = f"all {base_truth.n} {base_truth.release} blends"
        sub_truth, W = None, None
    compared = (f"compared with {base_truth.release} on the same {truth.n} blends"
                if pos is not None else
                f"other blends: compared with all {base_truth.n} {base_truth.release} blends")
    views: list[tuple[str, str, np.ndarray | None]] = [(track.name, "all", None)]
    legend = {track.name: f"{track.description}; {compared}"}
    faint = truth.mag > mag_max
    if pos is None and faint.any() and not faint.all():
        label = f"{track.name} (<= {mag_max:g} mag)"
        views.append((label, f"mag <= {mag_max:g}", ~faint))
        legend[label] = (f"the {int((~faint).sum())} galaxies of {track.name} within "
                         f"{base_truth.release}'s magnitude range (truth mag <= {mag_max:g})")
    rows = []
    for label, view, sel in views:
        for method in methods:
            row = _empty_row(method, label, truth, view, base_truth, base_blends)
            et, eb = entries.get(method), base_entries.get(method)
            notes = []
            reps = None
            if et is None:
                notes.append(f"skipped: {skipped[method]}" if method in skipped
                             else f"no submission in {track.submissions.name}/{method}/")
            else:
                sc = et.score if sel is None else score(
                    et.submission, truth, selection=sel, selection_name=view, n_boot=n_boot,
                    seed=seed, with_bins=False)
                both = sc.overall["both"]
                lo, hi = _mape_ci(sc)
                row.update(n=both["n"], mape=both["mape"], mape_lo=lo, mape_hi=hi)
                row["total_mape"], row["share_error"] = blend_split(sc.galaxies)
                if W is not None:
                    reps = mape_replicates(sc.galaxies, W)
            if eb is None:
                notes.append(f"no {base_truth.release} submission")
            elif sub_truth is None:
                both = eb.score.overall["both"]
                lo, hi = _mape_ci(eb.score)
                row.update(base_n=both["n"], base_mape=both["mape"], base_mape_lo=lo,
                           base_mape_hi=hi)
                row["base_total_mape"], row["base_share_error"] = blend_split(eb.score.galaxies)
            else:
                gal = galaxies_for(eb.submission.subset(eb.order[pos]), sub_truth)
                both = gal.summary(np.ones((truth.n, 2), bool))
                row.update(base_n=both["n"], base_mape=both["mape"])
                row["base_total_mape"], row["base_share_error"] = blend_split(gal)
                if W is not None:
                    base_reps = mape_replicates(gal, W)
                    row["base_mape_lo"], row["base_mape_hi"] = interval95(base_reps)
                    if reps is not None:
                        with np.errstate(invalid="ignore", divide="ignore"):
                            row["ratio_lo"], row["ratio_hi"] = interval95(reps / base_reps)
            if row["base_mape"] > 0:
                row["ratio"] = row["mape"] / row["base_mape"]
            row["note"] = "; ".join(notes)
            rows.append(row)
    return rows, legend


def worst_tracks(cells: pd.DataFrame) -> dict[str, str]:
    """Method -> the track (main views) with the largest finite ratio track / base."""
    main = cells[(cells["view"] == "all") & np.isfinite(cells["ratio"].astype(float))]
    if main.empty:
        return {}
    top = main.loc[main.groupby("method", sort=False)["ratio"].idxmax()]
    return dict(zip(top["method"], top["track"], strict=True))


def rank_agreement(cells: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau between the base and track rankings of the methods, per track column.

    Over the methods with a finite MAPE on both (the base on the same blends as the track);
    tau and its two-sided p-value are NaN with fewer than two methods.
    """
    from scipy.stats import kendalltau

    rows = []
    for column, g in cells.groupby("track", sort=False):
        ok = np.isfinite(g["mape"].astype(float)) & np.isfinite(g["base_mape"].astype(float))
        tau = p = math.nan
        if ok.sum() >= 2:
            res = kendalltau(g.loc[ok, "base_mape"], g.loc[ok, "mape"])
            tau, p = float(res.statistic), float(res.pvalue)
        rows.append({"track": column, "n_methods": int(ok.sum()), "tau": tau, "p_value": p})
    return pd.DataFrame(rows, columns=["track", "n_methods", "tau", "p_value"])


def robustness(base: str | Path, submissions_dir: str | Path, *,
               tracks: Sequence[str | Path] | None = None,
               releases_dir: str | Path | None = None, n_boot: int = N_BOOT,
               seed: int = DEFAULT_SEED) -> Robustness:
    """Score the base release's submissions and every track's, and compare them.

    Args:
        base: the base release: a name (``v1``) or a release folder.
        submissions_dir: ``<release>/<method>/`` folders, for the base and each track.
        tracks: track names or release folders (default: see :func:`find_tracks`).
        releases_dir: a folder of generated release folders, looked up by name first.
        n_boot, seed: bootstrap settings.
    """
    rel_dir = None if releases_dir is None else Path(releases_dir)
    base_info = resolve_release(_locate(base, rel_dir))[1]
    base_truth = load_truth(_locate(base, rel_dir))
    base_list, base_skipped = score_folders(base_truth, Path(submissions_dir) / base_truth.release,
                                            n_boot=n_boot, seed=seed)
    found, notes = find_tracks(base_info.spec, submissions_dir, names=tracks,
                               releases_dir=rel_dir)
    if not found:
        raise ReleaseError(f"{submissions_dir}: no track to compare with {base_truth.release}; "
                           "put each track's submissions in <submissions>/<track>/<method>/ "
                           "or name the tracks with --tracks")
    base_rows = []
    for e in base_list:
        lo, hi = _mape_ci(e.score)
        both = e.score.overall["both"]
        total, share = blend_split(e.score.galaxies)
        base_rows.append({"method": e.folder.name, "n": both["n"], "mape": both["mape"],
                          "mape_lo": lo, "mape_hi": hi, "total_mape": total,
                          "share_error": share})
    base_scores = pd.DataFrame(base_rows, columns=["method", "n", "mape", "mape_lo", "mape_hi",
                                                   "total_mape", "share_error"])
    base_scores = base_scores.sort_values(["mape", "method"], na_position="last", kind="stable")
    base_entries = {e.folder.name: e for e in base_list}
    skipped = [{"track": base_truth.release, **s} for s in base_skipped]
    scored = []
    for track in found:
        truth = load_truth(track.folder)
        entries: list[Entry] = []
        if track.submissions.is_dir():
            entries, track_skipped = score_folders(truth, track.submissions, n_boot=n_boot,
                                                   seed=seed)
            skipped += [{"track": track.name, **s} for s in track_skipped]
        else:
            notes.append(f"{track.submissions}: no submissions for track {track.name}")
        scored.append((track, truth, {e.folder.name: e for e in entries}))
    extra = sorted({m for _, _, e in scored for m in e} - set(base_entries))
    methods = [*base_scores["method"], *extra]
    rows, legend = [], {}
    for track, truth, entries in scored:
        why = {s["name"]: s["reason"] for s in skipped if s["track"] == track.name}
        r, lg = track_rows(track, truth, entries, why, base_truth, base_entries, methods,
                           mag_max=base_info.spec.mag_max, n_boot=n_boot, seed=seed)
        rows += r
        legend.update(lg)
    cells = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    worst = worst_tracks(cells)
    cells["worst"] = [worst.get(m) == t for m, t in zip(cells["method"], cells["track"],
                                                         strict=True)]
    for m in methods:
        missing = cells[(cells["method"] == m) & ~np.isfinite(cells["mape"].astype(float))]
        if len(missing) and m in base_entries:
            notes.append(f"{m}: no score on {', '.join(missing['track'])}")
    return Robustness(base_truth.release, found, base_scores.reset_index(drop=True), cells,
                      rank_agreement(cells), worst, legend, skipped, notes)


# ---------------------------------------------------------------------------------------------
# output


def _num(value: float, fmt: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def _ci(lo: float, hi: float, fmt: str = ".2f") -> str:
    return f"[{_num(lo, fmt)}, {_num(hi, fmt)}]" if math.isfinite(lo) else ""


def robustness_markdown(rep: Robustness) -> str:
    """The report as Markdown: MAPE, ratio and total / share tables, Kendall tau, worst tracks,
    legend."""
    cols, by = rep.columns, rep.cells.set_index(["method", "track"])
    base = rep.base_scores.set_index("method")
    head = "| method | " + " | ".join([f"{rep.base} (all blends)", *cols])
    lines = [f"# Robustness: {rep.base} methods on the distribution-shift tracks", "",
             "MAPE (%) over central and companion galaxies, 95% bootstrap interval over blends. "
             f"The ratio compares each track with the method's {rep.base} MAPE on the same blend "
             "ids when the track keeps them (paired bootstrap interval), else on all the "
             f"{rep.base} blends.", "", "## MAPE %", "", head + " |",
             "|---|" + "---:|" * (len(cols) + 1)]
    for m in rep.methods:
        cells = ([f"{_num(base.loc[m, 'mape'], '.2f')} "
                  f"{_ci(base.loc[m, 'mape_lo'], base.loc[m, 'mape_hi'])}"]
                 if m in base.index else ["–"])
        for c in cols:
            r = by.loc[(m, c)]
            cells.append(f"{_num(r['mape'], '.2f')} {_ci(r['mape_lo'], r['mape_hi'])}".strip())
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", f"## Ratio MAPE track / {rep.base}", "",
              "| method | " + " | ".join([*cols, "worst track"]) + " |",
              "|---|" + "---:|" * len(cols) + "---|"]
    for m in rep.methods:
        cells = []
        for c in cols:
            r = by.loc[(m, c)]
            text = (f"×{r['ratio']:.2f} {_ci(r['ratio_lo'], r['ratio_hi'])}".strip()
                    if math.isfinite(r["ratio"]) else "–")
            cells.append(f"**{text}**" if r["worst"] else text)
        lines.append(f"| {m} | " + " | ".join([*cells, rep.worst.get(m, "–")]) + " |")
    lines += ["", "## Photometry or deblending: blend total MAPE % / share error (points)", "",
              "Left: the MAPE of each blend's total flux (central + companion), the photometry "
              "of the blend. Right: the mean absolute error, in percentage points, of the "
              "central galaxy's share of that flux, the split between the two galaxies. A "
              "method whose MAPE rises on a track through the share, not the total, loses on the "
              "deblending. Over the blends whose two galaxies are scored; a non-detection "
              "counts as zero flux.", "", head + " |", "|---|" + "---:|" * (len(cols) + 1)]
    for m in rep.methods:
        cells = ([f"{_num(base.loc[m, 'total_mape'], '.2f')} / "
                  f"{_num(base.loc[m, 'share_error'], '.2f')}"] if m in base.index else ["–"])
        for c in cols:
            r = by.loc[(m, c)]
            cells.append(f"{_num(r['total_mape'], '.2f')} / {_num(r['share_error'], '.2f')}"
                         if math.isfinite(r["mape"]) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", f"## Ranking agreement with {rep.base} (Kendall τ)", "",
              "| track | methods | τ | p |", "|---|---:|---:|---:|"]
    for _, r in rep.tau.iterrows():
        lines.append(f"| {r['track']} | {r['n_methods']} | {_num(r['tau'], '+.2f')} | "
                     f"{_num(r['p_value'], '.2g')} |")
    lines += ["", "## Tracks", ""] + [f"- **{c}**: {text}" for c, text in rep.legend.items()]
    if rep.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in rep.notes]
    if rep.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['track']}/{s['name']}: {s['reason']}" for s in rep.skipped]
    return "\n".join(lines) + "\n"


def ratio_matrix(rep: Robustness) -> np.ndarray:
    """(n_methods, n_columns) ratio track / base in the order of ``methods`` and ``columns``."""
    table = rep.cells.pivot(index="method", columns="track", values="ratio")
    return table.reindex(index=rep.methods, columns=rep.columns).to_numpy(float)


def build_robustness(base: str | Path, submissions_dir: str | Path, out_dir: str | Path,
                     **kwargs: Any) -> Robustness:
    """:func:`robustness`, then write ``robustness.md``, ``robustness.csv`` and
    ``figures/robustness.png`` in ``out_dir`` (atomically)."""
    from challenge.reports import figures as F
    rep = robustness(base, submissions_dir, **kwargs)
    out = Path(out_dir)
    buf = io.StringIO()
    rep.cells.to_csv(buf, index=False)
    atomic_write_text(out / "robustness.csv", buf.getvalue())
    atomic_write_text(out / "robustness.md", robustness_markdown(rep))
    fig = F.robustness_heatmap(rep.methods, rep.columns, ratio_matrix(rep), base=rep.base)
    atomic_write_bytes(out / "figures" / "robustness.png", F.figure_bytes(fig))
    return rep
