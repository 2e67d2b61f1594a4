"""PNG montages of a release: blends ordered by Δmag and distance (as the paper's Fig. 2), and
isolated galaxies per morphology.

Every panel of a figure shares one normalisation (an asinh stretch, astropy.visualization), so
panels compare and the sky looks the same in all of them: the lower limit sits a few sky σ below
zero, the upper one at a high percentile of all the panels' pixels, and the asinh turns
logarithmic a few sky σ above zero. Each figure carries a colour bar (counts / px), an arcsec
scale bar in its first panel and a marker on the stamp centre (pixel ``stamp_size // 2`` on both
axes, pixel centres at integer coordinates, ``origin="lower"``).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

from challenge.contract.release import (  # noqa: E402
    MORPHOLOGIES,
    ReleaseInfo,
    blends_file,
    read_table,
)
from challenge.pipeline.blending import top_up_sigma  # noqa: E402

# Default grid of the blend montage (the paper's Fig. 2); it grows to cover the data shown.
DELTA_MAG_EDGES = (-2.0, -1.0, 0.0, 1.0, 2.0)
DISTANCE_EDGES_RE = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
CMAP = "magma"
CONTOUR_COLORS = {"central": "#00e5ff", "companion": "#7CFC00"}
CENTRE_COLOR = "white"
SKY_SIGMAS_BELOW = 2.0  # lower limit: this many sky σ below zero
SKY_SIGMAS_LINEAR = 8.0  # the asinh stretch is linear up to about this many sky σ above zero
UPPER_PERCENTILE = 99.9  # upper limit: this percentile of all the panels' pixels


def shared_norm(images: list[np.ndarray], sky_sigma: float) -> ImageNormalize:
    """One asinh normalisation for all ``images`` (counts / px): limits from the sky σ below and
    from the ``UPPER_PERCENTILE`` of all pixels above."""
    vmin = -SKY_SIGMAS_BELOW * sky_sigma
    pixels = np.concatenate([np.ravel(im) for im in images]) if images else np.zeros(1)
    vmax = float(np.nanpercentile(pixels, UPPER_PERCENTILE))
    vmax = max(vmax, vmin + 20 * sky_sigma)
    a = min(1.0, (SKY_SIGMAS_LINEAR + SKY_SIGMAS_BELOW) * sky_sigma / (vmax - vmin))
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a), clip=True)


def _show(ax, image: np.ndarray, norm: ImageNormalize):
    im = ax.imshow(image, origin="lower", cmap=CMAP, norm=norm, interpolation="nearest")
    _centre_marker(ax, image.shape[0] // 2)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _centre_marker(ax, c: int) -> None:
    """A cross on pixel (c, c) with a gap in the middle, so that it hides no galaxy core."""
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ax.plot(
            [c + 4 * dx, c + 9 * dx],
            [c + 4 * dy, c + 9 * dy],
            color=CENTRE_COLOR,
            lw=0.7,
            alpha=0.8,
            solid_capstyle="butt",
        )


def _empty(ax, text: str = "no blend") -> None:
    ax.set_facecolor("0.93")
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.45"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _nice_arcsec(width_arcsec: float) -> float:
    """A 1, 2 or 5 × 10^k arcsec length near a sixth of ``width_arcsec``."""
    target = width_arcsec / 6
    base = 10 ** math.floor(math.log10(target))
    return max((k * base for k in (1, 2, 5) if k * base <= target), default=base)


def _scale_bar(ax, stamp_size: int, pixel_scale: float) -> None:
    arcsec = _nice_arcsec(stamp_size * pixel_scale)
    text = f'{arcsec:g}"'
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            arcsec / pixel_scale,
            text,
            "lower left",
            pad=0.3,
            color="white",
            frameon=False,
            size_vertical=0.8,
            fontproperties={"size": 7},
        )
    )


def _colorbar_ticks(norm: ImageNormalize) -> list[float]:
    """0 and 1, 2, 5 × 10^k counts inside the limits, at least 6% of the bar apart."""
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    candidates = [0.0] + [k * 10.0**e for e in range(-4, 7) for k in (1, 2, 5)]
    ticks: list[float] = []
    for v in candidates:
        if vmin <= v <= vmax and all(abs(norm(v) - norm(t)) >= 0.06 for t in ticks):
            ticks.append(v)
    return ticks


def _colorbar(fig, im, axes) -> None:
    cb = fig.colorbar(
        im,
        ax=axes,
        shrink=0.8,
        pad=0.01,
        fraction=0.03,
        ticks=_colorbar_ticks(im.norm),
        format="%g",
    )
    cb.set_label("counts / px (asinh stretch, shared by all panels)", fontsize=8)
    cb.ax.tick_params(labelsize=7)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _edges(values: np.ndarray, default: tuple[float, ...], max_bins: int) -> np.ndarray:
    """Bin edges: ``default`` when it holds every finite value, otherwise the default's step
    (doubled until at most ``max_bins`` bins) from below the smallest to above the largest."""
    v = values[np.isfinite(values)]
    edges = np.asarray(default, float)
    if v.size == 0 or (v.min() >= edges[0] and v.max() <= edges[-1]):
        return edges
    step = float(edges[1] - edges[0])
    while True:
        lo = math.floor(v.min() / step) * step
        hi = max(math.ceil(v.max() / step) * step, lo + step)
        if round((hi - lo) / step) <= max_bins:
            return np.linspace(lo, hi, round((hi - lo) / step) + 1)
        step *= 2


def _signed(x: float) -> str:
    return "0" if x == 0 else f"{x:+g}"


def _in_bin(values: np.ndarray, edges: np.ndarray, k: int) -> np.ndarray:
    """Half-open bins [lo, hi), the last one closed."""
    last = k == len(edges) - 2
    return (values >= edges[k]) & ((values <= edges[k + 1]) if last else (values < edges[k + 1]))


def blend_montage(folder: Path | str, out: Path | str, split: str = "test") -> Path:
    """Blends in a grid: rows are Δmag = mag_central − mag_companion bins, columns distance /
    R_e,central (bins grow beyond the paper's −2…2 mag and 1…4 R_e to cover the split).

    Each cell shows the first blend of the split falling in it (grey when none), with the truth
    segmentation contours of the central and companion galaxies; all cells share one
    normalisation and colour bar.
    """
    folder, out = Path(folder), Path(out)
    spec = ReleaseInfo.read(folder / "release.toml").spec
    pairs = read_table(folder, f"pairs_{split}.ecsv")
    dmag = np.asarray(pairs["mag_central"] - pairs["mag_companion"], float)
    dist = np.asarray(pairs["distance_px"] / pairs["r_e_central"], float)
    row_edges = _edges(dmag, DELTA_MAG_EDGES, 6)
    col_edges = _edges(dist, DISTANCE_EDGES_RE, 8)
    nr, nc = len(row_edges) - 1, len(col_edges) - 1
    picks: dict[tuple[int, int], int] = {}
    for r in range(nr):
        for c in range(nc):
            inside = np.flatnonzero(_in_bin(dmag, row_edges, r) & _in_bin(dist, col_edges, c))
            if len(inside):
                picks[r, c] = int(inside[0])
    truth_path = folder / ("test_truth.h5" if split == "test" else f"{split}.h5")
    with h5py.File(blends_file(folder, split), "r") as f, h5py.File(truth_path, "r") as t:
        images = {rc: f["images"][i] for rc, i in picks.items()}
        masks = {rc: t["masks"][i] for rc, i in picks.items()}
    norm = shared_norm(list(images.values()), spec.sky_sigma)
    fig, axes = plt.subplots(
        nr, nc, figsize=(1.75 * nc + 1.0, 1.8 * nr + 1.0), squeeze=False, layout="constrained"
    )
    im = None
    for r in range(nr):
        for c in range(nc):
            ax = axes[nr - 1 - r, c]  # Δmag grows upwards
            if (r, c) not in picks:
                _empty(ax)
            else:
                i = picks[r, c]
                im = _show(ax, images[r, c], norm)
                for k, role in enumerate(("central", "companion")):
                    if masks[r, c][k].any():
                        ax.contour(
                            masks[r, c][k],
                            levels=[0.5],
                            colors=CONTOUR_COLORS[role],
                            linewidths=0.7,
                        )
                ax.set_title(f"Δmag {dmag[i]:+.2f}, d {dist[i]:.2f} R_e", fontsize=7)
            if c == 0:
                ax.set_ylabel(
                    f"Δmag {_signed(row_edges[r])}…{_signed(row_edges[r + 1])}", fontsize=8
                )
            if r == 0:
                ax.set_xlabel(f"d/R_e {col_edges[c]:g}…{col_edges[c + 1]:g}", fontsize=8)
    first = next(
        (axes[nr - 1 - r, c] for r in reversed(range(nr)) for c in range(nc) if (r, c) in picks),
        None,
    )
    if first is not None:
        _scale_bar(first, spec.stamp_size, spec.pixel_scale)
    if im is not None:
        _colorbar(fig, im, axes)
    handles = [
        Line2D(
            [], [], color=CONTOUR_COLORS["central"], lw=1.5, label="central galaxy (truth mask)"
        ),
        Line2D(
            [], [], color=CONTOUR_COLORS["companion"], lw=1.5, label="companion galaxy (truth mask)"
        ),
        Line2D(
            [],
            [],
            color=CENTRE_COLOR,
            marker="+",
            ls="none",
            ms=7,
            label=f"stamp centre, pixel ({spec.stamp_size // 2}, {spec.stamp_size // 2})",
        ),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=3,
        fontsize=8,
        facecolor="0.25",
        labelcolor="white",
        framealpha=1,
    )
    shown = np.array(list(picks.values()), int)
    span = (
        f"blends shown: d/R_e,central {dist[shown].min():.2f}…{dist[shown].max():.2f}, "
        f"Δmag {dmag[shown].min():+.2f}…{dmag[shown].max():+.2f}"
        if shown.size
        else "no blends"
    )
    fig.suptitle(
        f"{folder.name}: {split} blends, {len(dmag)} in the split with d/R_e,central "
        f"{np.nanmin(dist):.2f}…{np.nanmax(dist):.2f}\nrows Δmag = mag_central − mag_companion "
        f"(mag), columns distance / R_e,central; {span}",
        fontsize=9,
    )
    return _save(fig, out)


def galaxy_montage(folder: Path | str, out: Path | str, per_row: int = 8, seed: int = 0) -> Path:
    """Isolated galaxies, one row per morphology, ordered by magnitude (bright left).

    Shows each stamp with one realisation of the release's sky noise (``seed``) on top: the
    noiseless models of synthetic releases, or real stamps topped up to the sky level. All
    panels share one normalisation and colour bar.
    """
    folder, out = Path(folder), Path(out)
    galaxies = read_table(folder, "galaxies.ecsv")
    spec = ReleaseInfo.read(folder / "release.toml").spec
    rng = np.random.default_rng(seed)
    morphology = np.asarray(galaxies["morphology"])
    mags = np.asarray(galaxies["mag"], float)
    present = [m for m in MORPHOLOGIES if np.any(morphology == m)]
    picks: dict[tuple[int, int], int] = {}
    for r, morph in enumerate(present):
        rows = np.flatnonzero(morphology == morph)
        pick = rows[np.linspace(0, len(rows) - 1, min(per_row, len(rows))).astype(int)]
        pick = pick[np.argsort(mags[pick], kind="stable")]
        picks.update({(r, c): int(i) for c, i in enumerate(pick)})
    images: dict[tuple[int, int], np.ndarray] = {}
    with h5py.File(folder / "galaxies.h5", "r") as f:
        stamps = f["stamps"]
        noise_var = f["noise_var"][:] if "noise_var" in f else np.zeros(len(stamps))
        top_up = top_up_sigma(spec.sky_sigma, noise_var)
        for rc, i in picks.items():
            images[rc] = stamps[i] + rng.normal(0, top_up[i], stamps.shape[1:]).astype(np.float32)
    norm = shared_norm(list(images.values()), spec.sky_sigma)
    fig, axes = plt.subplots(
        len(present),
        per_row,
        squeeze=False,
        layout="constrained",
        figsize=(1.55 * per_row + 1.0, 1.75 * len(present) + 0.8),
    )
    im = None
    for r, morph in enumerate(present):
        for c in range(per_row):
            ax = axes[r, c]
            if (r, c) not in picks:
                ax.set_axis_off()
                continue
            i = picks[r, c]
            im = _show(ax, images[r, c], norm)
            ax.set_title(f"mag {mags[i]:.2f}, R_e {galaxies['r_e_px'][i]:.1f} px", fontsize=7)
        axes[r, 0].set_ylabel(morph, fontsize=9)
    if picks:
        _scale_bar(axes[0, 0], spec.stamp_size, spec.pixel_scale)
    if im is not None:
        _colorbar(fig, im, axes)
    fig.suptitle(
        f"{folder.name}: isolated galaxies per morphology, bright (left) to faint; "
        f"the cross marks the stamp centre, pixel ({spec.stamp_size // 2}, "
        f"{spec.stamp_size // 2})",
        fontsize=9,
    )
    return _save(fig, out)
