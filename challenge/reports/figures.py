"""Score figures in the style of Boucaud et al. (2019), with matplotlib's Agg backend.

* ``mag_in_out.png`` (Figs. 5/6): predicted vs true magnitude for centrals and companions, with
  the Delta mag histogram as an inset.
* ``bias_vs_delta_mag.png`` / ``bias_vs_distance.png`` (Figs. 7/8): median Delta mag and its
  scatter per bin of Delta mag_pair and of distance / R_e.
* ``morphology.png`` (Fig. 9): the same per morphology.
* ``iou_hist.png`` (Fig. 11): histogram of the IoU of the submitted masks (masks only).

Leaderboard figures (all methods together): ``leaderboard_mape.png`` and ``methods_vs_*.png``;
the robustness report's ``robustness.png`` (ratio track / base per method and track).
Every file is written atomically.
"""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from challenge.scoring import metrics as M  # noqa: E402
from challenge.scoring.scores import Score, atomic_write_bytes, magnitudes  # noqa: E402

ROLE_COLORS = {"central": "#1f77b4", "companion": "#d62728", "both": "#444444"}
# One colour per method on every release and figure: fixed for the reference methods, picked
# from the name (not from the order of the methods) for the others.
METHOD_COLORS = {
    "oracle": "#444444", "sep": "#1f77b4", "photutils": "#ff7f0e", "scarlet2": "#2ca02c",
    "blend2flux": "#d62728", "blend2mask2flux": "#9467bd",
    "blend2mask2flux-end-to-end": "#8c564b", "blend2flux-robust": "#e377c2",
    "blend2mask2flux-robust": "#17becf", "cnn-ensemble-robust": "#bcbd22",
}
_OTHER_COLORS = ("#7f7f7f", "#393b79", "#637939", "#8c6d31",
                 "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
                 "#ad494a", "#8ca252", "#6b6ecf")


def method_colors(names: list[object]) -> dict[str, str]:
    """A colour per method name: fixed for the reference methods, picked from the name for the
    others (the next free one where two names pick the same); a ``(detections only)`` view shares
    its method's colour."""
    colors: dict[str, str] = {}
    bases = sorted({str(n).removesuffix(" (detections only)") for n in names})
    taken = {METHOD_COLORS[b] for b in bases if b in METHOD_COLORS}
    for base in bases:
        if base in METHOD_COLORS:
            colors[base] = METHOD_COLORS[base]
            continue
        start = zlib.crc32(base.encode("utf-8", "replace"))
        free = [c for k in range(len(_OTHER_COLORS))
                if (c := _OTHER_COLORS[(start + k) % len(_OTHER_COLORS)]) not in taken]
        colors[base] = free[0] if free else _OTHER_COLORS[start % len(_OTHER_COLORS)]
        taken.add(colors[base])
    return {str(n): colors[str(n).removesuffix(" (detections only)")] for n in names}


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def label(text: object) -> str:
    """User text (a method or release name) as a matplotlib label: shown as typed, never parsed
    as mathtext (``$``), control characters shown as escapes."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], str(text)).replace("$", r"\$")


def figure_bytes(fig, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure encoded as PNG (or ``fmt``); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _save(fig, path: Path) -> Path:
    atomic_write_bytes(Path(path), figure_bytes(fig))
    return Path(path)


def _band(score: Score) -> str:
    """The release's photometric band where the truth records one, else ``""``."""
    return str(getattr(score.truth_table, "band", "") or "")


def _dmag_range(dm: np.ndarray, cap: float = 5.0) -> float:
    """Half-width (mag) of the Delta mag inset: at least 1, wide enough for 99.5% of ``dm``
    (rounded up to 0.5 mag), at most ``cap``."""
    if dm.size == 0:
        return 1.0
    half = np.ceil(2 * np.percentile(np.abs(dm), 99.5)) / 2
    return float(min(max(half, 1.0), cap))


def mag_in_out(score: Score):
    """Figs. 5/6: measured vs true magnitude per role (hexbins of galaxy counts, one colour bar
    shared by both panels) with the Delta mag = measured - true histogram as an inset.

    The insets span the data of both roles (at least +-1 mag, at most +-5 mag); galaxies beyond
    them are counted on the inset, never piled up at its edges. Undetected galaxies (no finite
    measured magnitude) are counted in the panel's corner.
    """
    gal = score.galaxies
    true_mag, pred_mag = magnitudes(gal, score.truth_table.zero_point)
    band = _band(score)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharex=True, sharey=True,
                             layout="constrained")
    lo, hi = np.nanmin(true_mag) - 0.5, np.nanmax(true_mag) + 0.5
    all_dm = gal.dmag[gal.selected]
    half = _dmag_range(all_dm[np.isfinite(all_dm)])  # one range for both insets
    hexbins = []
    for j, (ax, role) in enumerate(zip(axes, ("central", "companion"), strict=True)):
        sel = gal.selected[:, j]
        t, p = true_mag[sel, j], pred_mag[sel, j]
        ok = np.isfinite(p)
        hexbins.append(ax.hexbin(t[ok], p[ok], gridsize=60, bins="log", cmap="Blues", mincnt=1,
                                 extent=(lo, hi, lo, hi)))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"true {band} magnitude (mag)" if band else "true magnitude (mag)")
        ov = score.overall[role]
        ax.set_title(f"{role}: MAPE {ov['mape']:.2f}%, bias {ov['bias']:+.3f} mag, "
                     f"σ {ov['scatter']:.3f} mag", fontsize=9)
        if (~ok).any():
            ax.text(0.03, 0.97, f"{int((~ok).sum())} not detected (not shown)",
                    transform=ax.transAxes, va="top", fontsize=8)
        inset = ax.inset_axes([0.57, 0.07, 0.4, 0.3])
        dm = gal.dmag[sel, j]
        dm = dm[np.isfinite(dm)]
        inset.hist(dm, bins=60, range=(-half, half), color=ROLE_COLORS[role])
        inset.axvline(0, color="k", lw=0.6)
        inset.set_xlim(-half, half)
        inset.set_title("Δmag = measured − true (mag)", fontsize=7, pad=2)
        inset.tick_params(labelsize=6, pad=1.5)
        inset.set_yticks([])
        outside = int(np.sum(np.abs(dm) > half))
        if outside:
            inset.text(0.02, 0.95, f"{outside} beyond ±{half:g}\n(not shown)",
                       transform=inset.transAxes, va="top", fontsize=6)
    vmax = max((float(np.max(h.get_array())) for h in hexbins if h.get_array().size),
               default=1.0)
    for h in hexbins:
        h.set_clim(1, max(vmax, 1.0))
    ticks = [k * 10**e for e in range(7) for k in (1, 2, 5) if k * 10**e <= max(vmax, 1.0)]
    fig.colorbar(hexbins[0], ax=list(axes), pad=0.01, fraction=0.04, ticks=ticks, format="%g",
                 label="galaxies per hexagon (log scale)")
    axes[0].set_ylabel(f"measured {band} magnitude (mag)" if band
                       else "measured magnitude (mag)")
    fig.suptitle(f"{label(score.submission)} on {label(score.release)} ({score.truth} truth)",
                 fontsize=10)
    return fig


def _bin_positions(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    labels = [r["label"] for r in rows]
    if "lo" in rows[0]:
        x = np.array([r["lo"] + 0.25 if r.get("hi") is None else 0.5 * (r["lo"] + r["hi"])
                      for r in rows])
        return x, labels
    return np.arange(len(rows), dtype=float), labels


def binned_bias(score: Score, scheme: str, xlabel: str):
    """Figs. 7/8: median Delta mag (points) and scatter (bars) per bin, central and companion."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.2]})
    for k, role in enumerate(("central", "companion")):
        rows = [r for r in score.bins[scheme] if r["role"] == role]
        x, labels = _bin_positions(rows)
        step = np.diff(x).min() if len(x) > 1 else 1.0
        xs = x + (k - 0.5) * 0.15 * step
        med = np.array([r["median_dmag"] for r in rows], float)
        sig = np.array([r["scatter"] for r in rows], float)
        ax.errorbar(xs, med, yerr=sig, fmt="o", color=ROLE_COLORS[role], capsize=3, label=role)
        ax2.bar(xs, [r["n"] for r in rows], width=0.15 * step, color=ROLE_COLORS[role])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("median Δmag ± σ (mag)")
    ax.legend(fontsize=8)
    ax2.set_ylabel("N")
    ax2.set_xlabel(xlabel)
    if scheme == "morphology":
        ax2.set_xticks(x, labels)
    ax.set_title(f"{label(score.submission)}: Δmag per bin of {xlabel}", fontsize=10)
    return fig


def iou_hist(score: Score):
    """Fig. 11: histogram of per-galaxy IoU, central and companion."""
    gal = score.galaxies
    values = M.iou_from_counts(*gal.counts)
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, role in enumerate(("central", "companion")):
        v = values[gal.selected[:, j], j]
        v = v[np.isfinite(v)]
        ax.hist(v, bins=40, range=(0, 1), histtype="step", lw=1.5, color=ROLE_COLORS[role],
                label=f"{role} (mean {v.mean():.3f})" if v.size else role)
    ax.set_xlabel("IoU")
    ax.set_ylabel("galaxies")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{label(score.submission)}: IoU of predicted masks", fontsize=10)
    return fig


def write_score_figures(score: Score, out_dir: str | Path) -> list[Path]:
    """Write the paper-style figures of one score into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_save(mag_in_out(score), out / "mag_in_out.png")]
    if score.bins:
        paths.append(_save(binned_bias(score, "delta_mag", "Δmag_pair = m_cen − m_comp"),
                           out / "bias_vs_delta_mag.png"))
        paths.append(_save(binned_bias(score, "distance", "distance / R_e"),
                           out / "bias_vs_distance.png"))
        paths.append(_save(binned_bias(score, "morphology", "morphology"),
                           out / "morphology.png"))
    if score.galaxies.counts is not None:
        paths.append(_save(iou_hist(score), out / "iou_hist.png"))
    return paths


def leaderboard_mape(names: list[str], mape: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Horizontal bars of total MAPE with 95% intervals, best at the top, one colour per
    method (:func:`method_colors`)."""
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2), layout="constrained")
    y = np.arange(len(names))[::-1]
    mape = np.asarray(mape, float)
    err = np.vstack([mape - np.asarray(lo, float), np.asarray(hi, float) - mape])
    colors = method_colors(names)
    ax.barh(y, mape, xerr=np.clip(np.nan_to_num(err), 0, None),
            color=[colors[str(n)] for n in names], capsize=3)
    ax.set_yticks(y, [label(n) for n in names], fontsize=8)
    ax.set_xlabel("MAPE, central + companion (%); error bars: 95% bootstrap interval")
    ax.set_xscale("log" if np.nanmax(mape) / max(np.nanmin(mape), 1e-9) > 20 else "linear")
    return fig


def methods_binned(scores: dict[str, Score], scheme: str, xlabel: str, role: str = "both"):
    """Median Delta mag and its scatter per bin for several methods (leaderboard Figs. 7/8).

    Points per bin (joined only where the bins are ordered, never across categories), one colour
    per method (:func:`method_colors`), the legend below the panels, clear of the data.
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    n = max(len(scores), 1)
    x = labels = None
    categorical = False
    colors = method_colors(list(scores))
    for k, (name, sc) in enumerate(scores.items()):
        rows = [r for r in sc.bins[scheme] if r["role"] == role]
        if not rows:
            continue
        categorical = "lo" not in rows[0]
        x, labels = _bin_positions(rows)
        step = np.diff(x).min() if len(x) > 1 else 1.0
        xs = x + (k - (n - 1) / 2) * 0.6 * step / n
        style = dict(marker="o", ms=4, color=colors[str(name)], label=label(name),
                     ls="none" if categorical else "-", lw=1)
        ax.plot(xs, [r["median_dmag"] for r in rows], **style)
        ax2.plot(xs, [r["scatter"] for r in rows], **style)
    for a, ylabel in ((ax, "median Δmag (mag)"), (ax2, "σ(Δmag) (mag)")):
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
        if categorical and x is not None:
            a.set_xticks(x, labels)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title("median Δmag = measured − true magnitude", fontsize=9)
    ax2.set_title("scatter σ of Δmag", fontsize=9)
    ax2.set_ylim(bottom=0)
    if scores:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center",
                   ncol=min(4, n), fontsize=8, frameon=False)
    return fig


def robustness_heatmap(methods: list[str], tracks: list[str], ratio: np.ndarray,
                       base: str = "base"):
    """Heatmap of the MAPE ratio track / base: methods as rows, tracks as columns.

    Args:
        methods, tracks: row and column labels.
        ratio: (n_methods, n_tracks) MAPE on the track / MAPE on the base; NaN cells are grey.
        base: the base release's name, for the colour bar.

    The colour is log2(ratio) on a diverging map centred on a ratio of 1 (red: worse on the
    track, blue: better); every cell is annotated with its ratio.
    """
    from matplotlib.ticker import FuncFormatter

    r = np.asarray(ratio, float).reshape(len(methods), len(tracks))
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.where(r > 0, np.log2(r), np.nan)
    finite = np.isfinite(logr)
    lim = max(float(np.abs(logr[finite]).max()) if finite.any() else 0.0, np.log2(1.1))
    fig, ax = plt.subplots(figsize=(1.15 * len(tracks) + 3.2, 0.45 * len(methods) + 1.8))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#e6e6e6")
    im = ax.imshow(np.ma.masked_invalid(logr), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    for i, j in np.ndindex(r.shape):
        text = f"×{r[i, j]:.2f}" if finite[i, j] else "–"
        dark = finite[i, j] and abs(logr[i, j]) > 0.6 * lim
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    ax.set_xticks(np.arange(len(tracks)), [label(t) for t in tracks], rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks(np.arange(len(methods)), [label(m) for m in methods], fontsize=8)
    cbar = fig.colorbar(im, ax=ax, format=FuncFormatter(lambda x, _: f"{2 ** x:.2g}"))
    cbar.set_label(f"MAPE track / {label(base)} (log scale)")
    ax.set_title(f"Robustness: MAPE on each track relative to {label(base)}", fontsize=10)
    return fig
