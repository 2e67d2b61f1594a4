"""PNG montages of a release: blends ordered by Δmag and distance (as the paper's Fig. 2), and
isolated galaxies per morphology. Images use an asinh stretch (astropy.visualization)."""

from __future__ import annotations

from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval  # noqa: E402

from challenge.contract.release import (  # noqa: E402
    MORPHOLOGIES,
    ReleaseInfo,
    blends_file,
    read_table,
)
from challenge.pipeline.blending import top_up_sigma  # noqa: E402

DELTA_MAG_EDGES = (-2.0, -1.0, 0.0, 1.0, 2.0)
DISTANCE_EDGES_RE = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def _show(ax, image: np.ndarray) -> None:
    norm = ImageNormalize(image, interval=PercentileInterval(99.7), stretch=AsinhStretch(0.05))
    ax.imshow(image, origin="lower", cmap="magma", norm=norm, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def blend_montage(folder: Path | str, out: Path | str, split: str = "test") -> Path:
    """Blends in a grid: rows are Δmag = m_cen − m_comp bins, columns distance / R_e,central.

    Each cell shows the first blend of the split falling in it (blank when none), with the truth
    segmentation contours of central (cyan) and companion (white) when the masks are available.
    """
    folder, out = Path(folder), Path(out)
    pairs = read_table(folder, f"pairs_{split}.ecsv")
    dmag = np.asarray(pairs["mag_central"] - pairs["mag_companion"])
    dist = np.asarray(pairs["distance_px"] / pairs["r_e_central"])
    nr, nc = len(DELTA_MAG_EDGES) - 1, len(DISTANCE_EDGES_RE) - 1
    fig, axes = plt.subplots(nr, nc, figsize=(1.9 * nc, 1.9 * nr + 0.4), squeeze=False)
    truth_path = folder / ("test_truth.h5" if split == "test" else f"{split}.h5")
    with h5py.File(blends_file(folder, split), "r") as f, h5py.File(truth_path, "r") as t:
        for r in range(nr):
            for c in range(nc):
                ax = axes[nr - 1 - r, c]
                ax.set_axis_off()
                inside = np.flatnonzero(
                    (dmag >= DELTA_MAG_EDGES[r])
                    & (dmag < DELTA_MAG_EDGES[r + 1])
                    & (dist >= DISTANCE_EDGES_RE[c])
                    & (dist < DISTANCE_EDGES_RE[c + 1])
                )
                if len(inside) == 0:
                    continue
                i = int(inside[0])
                ax.set_axis_on()
                _show(ax, f["images"][i])
                masks = t["masks"][i]
                ax.contour(masks[0], levels=[0.5], colors="cyan", linewidths=0.6)
                ax.contour(masks[1], levels=[0.5], colors="white", linewidths=0.6)
                ax.set_title(f"Δm={dmag[i]:+.2f}  d/R={dist[i]:.1f}", fontsize=7)
    fig.suptitle(
        f"{folder.name}: {split} blends — rows Δmag (bottom −2 … top +2), "
        "columns distance / R_e,central (1 … 4)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out)


def galaxy_montage(folder: Path | str, out: Path | str, per_row: int = 8, seed: int = 0) -> Path:
    """Isolated galaxies, one row per morphology, ordered by magnitude (bright left).

    Shows each stamp with one realisation of the release's sky noise (``seed``) on top: the
    noiseless models of synthetic releases, or real stamps topped up to the sky level.
    """
    folder, out = Path(folder), Path(out)
    galaxies = read_table(folder, "galaxies.ecsv")
    sigma = ReleaseInfo.read(folder / "release.toml").spec.sky_sigma
    rng = np.random.default_rng(seed)
    present = [m for m in MORPHOLOGIES if np.any(np.asarray(galaxies["morphology"]) == m)]
    fig, axes = plt.subplots(
        len(present), per_row, figsize=(1.6 * per_row, 1.75 * len(present) + 0.3), squeeze=False
    )
    with h5py.File(folder / "galaxies.h5", "r") as f:
        stamps = f["stamps"]
        noise_var = f["noise_var"][:] if "noise_var" in f else np.zeros(len(stamps))
        top_up = top_up_sigma(sigma, noise_var)
        for r, morph in enumerate(present):
            rows = np.flatnonzero(np.asarray(galaxies["morphology"]) == morph)
            pick = rows[np.linspace(0, len(rows) - 1, min(per_row, len(rows))).astype(int)]
            pick = pick[np.argsort(np.asarray(galaxies["mag"])[pick])]
            for c in range(per_row):
                ax = axes[r, c]
                ax.set_axis_off()
                if c >= len(pick):
                    continue
                i = int(pick[c])
                image = stamps[i] + rng.normal(0, top_up[i], stamps.shape[1:]).astype(np.float32)
                ax.set_axis_on()
                _show(ax, image)
                ax.set_title(
                    f"m={galaxies['mag'][i]:.1f} R={galaxies['r_e_px'][i]:.1f}px", fontsize=7
                )
            axes[r, 0].set_ylabel(morph, fontsize=9)
    fig.suptitle(f"{folder.name}: isolated galaxies per morphology", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)
