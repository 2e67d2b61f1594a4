"""Pair tables: which galaxy blends with which, and by how much the companion is shifted.

The rule is the authors' candels-blender rule: the central is drawn at random from the split's
galaxies, the companion from the same split with |m_cen - m_comp| < max_delta_mag and a different
id; the integer shift (dx, dy) has max(R1, R2) <= hypot(dx, dy) <= min(4 min(R1, R2), 64) px
(R = half-light semi-major axis); where those bounds cross, the lower bound is 0.8 x the upper.
A shift is redrawn up to 25 times, then a new pair is drawn; after 2,000 pairs in a row without
a shift the radii cannot fit the rule, and the draw stops with an error.

A galaxy with no partner in its split (no other galaxy within |Δm| < max_delta_mag) cannot be
blended: :func:`has_partner` finds them, the release leaves them out and records their ids, and
:func:`draw_pairs` never draws them as centrals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from challenge.contract.errors import ReleaseError

MAX_SHIFT_PX = 64.0
SHIFT_TRIES = 25
MAX_FAILED_PAIRS = 2_000  # pairs drawn in a row without a shift: the radii cannot fit the rule


def shift_bounds(r1: np.ndarray | float, r2: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) allowed centre distance in px for galaxies of half-light radii r1, r2."""
    r1, r2 = np.asarray(r1, dtype=float), np.asarray(r2, dtype=float)
    hi = np.minimum(4 * np.minimum(r1, r2), MAX_SHIFT_PX)
    lo = np.maximum(r1, r2)
    lo = np.where(lo > hi, 0.8 * hi, lo)
    return lo, hi


@dataclass(frozen=True)
class PairDraw:
    central: int
    companion: int
    dx: int
    dy: int
    noise_seed: int


def has_partner(mag: np.ndarray, max_delta_mag: float) -> np.ndarray:
    """Whether each galaxy has another one within |Δm| < ``max_delta_mag``; (n,) bool.

    ``mag`` (n,) AB magnitudes of the galaxies of one split. The closest magnitude to each
    galaxy is a neighbour in sorted order, compared with the expression :func:`draw_pairs` uses.
    """
    mag = np.asarray(mag, dtype=float)
    order = np.argsort(mag, kind="stable")
    close = np.abs(np.diff(mag[order])) < max_delta_mag
    sorted_ok = np.concatenate([[False], close]) | np.concatenate([close, [False]])
    ok = np.empty(len(mag), dtype=bool)
    ok[order] = sorted_ok
    return ok


def draw_pairs(
    galaxies: Table,
    pool_mask: np.ndarray,
    n_blends: int,
    seed: int,
    split_index: int,
    max_delta_mag: float = 2.0,
) -> list[PairDraw]:
    """Draw ``n_blends`` pairs among the rows of ``galaxies`` where ``pool_mask`` is True.

    Rows are indices into ``galaxies`` (columns mag, r_e_px). One random stream per split.
    Centrals are drawn among the rows that have a partner only (when every row has one, the
    draws are those of drawing among all rows).

    Raises:
        ReleaseError: the pool holds fewer than two galaxies or no pair within |Δm|.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, split_index)))
    rows = np.flatnonzero(pool_mask)
    mag = np.asarray(galaxies["mag"], dtype=float)
    r_e = np.asarray(galaxies["r_e_px"], dtype=float)
    if n_blends <= 0:
        return []
    if len(rows) < 2:
        raise ReleaseError(
            f"split {split_index}: {len(rows)} galaxies in its pool; blends need at least two"
        )
    partnered = has_partner(mag[rows], max_delta_mag)
    if not partnered.any():
        raise ReleaseError(
            f"split {split_index}: no two of its {len(rows)} galaxies lie within "
            f"|Δm| < {max_delta_mag}; add galaxies of similar magnitude or raise max_delta_mag"
        )
    rows = rows[partnered]
    pairs: list[PairDraw] = []
    failed = 0  # pair draws in a row that found no shift
    while len(pairs) < n_blends:
        if failed >= MAX_FAILED_PAIRS:
            ids = galaxies["galaxy_id"][rows] if "galaxy_id" in galaxies.colnames else rows
            shown = ", ".join(str(i) for i in list(ids)[:5]) + (", ..." if len(rows) > 5 else "")
            raise ReleaseError(
                f"split {split_index}: no integer shift fits the pair rule after "
                f"{MAX_FAILED_PAIRS} pairs drawn in a row (galaxies {shown}; r_e_px from "
                f"{r_e[rows].min():.3g} to {r_e[rows].max():.3g}); give the catalogue's r_e in "
                "pixels, at least about 0.5 px")
        c = int(rng.choice(rows))
        candidates = rows[(np.abs(mag[rows] - mag[c]) < max_delta_mag) & (rows != c)]
        if len(candidates) == 0:
            continue
        failed += 1
        k = int(rng.choice(candidates))
        lo, hi = shift_bounds(r_e[c], r_e[k])
        for _ in range(SHIFT_TRIES):
            d = rng.uniform(lo, hi)
            angle = rng.uniform(0, 2 * np.pi)
            dx, dy = int(np.rint(d * np.cos(angle))), int(np.rint(d * np.sin(angle)))
            if lo <= np.hypot(dx, dy) <= hi and (dx, dy) != (0, 0):
                seed_ = int(rng.integers(0, 2**62))
                pairs.append(PairDraw(c, k, dx, dy, seed_))
                failed = 0
                break
    return pairs


def pair_table(galaxies: Table, pairs: list[PairDraw], first_blend_id: int) -> Table:
    """The pair table of a release folder (docs/contract.md), plus both galaxies' model fluxes."""
    c = np.array([p.central for p in pairs], dtype=np.int64)
    k = np.array([p.companion for p in pairs], dtype=np.int64)
    dx = np.array([p.dx for p in pairs], dtype=np.int64)
    dy = np.array([p.dy for p in pairs], dtype=np.int64)
    col = {name: np.asarray(galaxies[name]) for name in galaxies.colnames}
    table = Table(
        {
            "blend_id": first_blend_id + np.arange(len(pairs), dtype=np.int64),
            "central_id": col["galaxy_id"][c].astype(np.int64),
            "companion_id": col["galaxy_id"][k].astype(np.int64),
            "dx": dx,
            "dy": dy,
            "mag_central": col["mag"][c],
            "mag_companion": col["mag"][k],
            "flux_central": col["flux"][c],
            "flux_companion": col["flux"][k],
            "model_flux_central": col["model_flux"][c],
            "model_flux_companion": col["model_flux"][k],
            "r_e_central": col["r_e_px"][c],
            "r_e_companion": col["r_e_px"][k],
            "morph_central": col["morphology"][c].astype(str),
            "morph_companion": col["morphology"][k].astype(str),
            "distance_px": np.hypot(dx, dy),
            "noise_seed": np.array([p.noise_seed for p in pairs], dtype=np.int64),
        }
    )
    for name in ("flux_central", "flux_companion", "model_flux_central", "model_flux_companion"):
        table[name].unit = "ct"
    for name in ("mag_central", "mag_companion"):
        table[name].unit = "mag(AB)"
    for name in ("dx", "dy", "r_e_central", "r_e_companion", "distance_px"):
        table[name].unit = "pix"
    return table
