"""Distribution-shift tracks: a base release's test galaxies and pairs under one changed condition.

A track (``v1-psf``, ``v1-noise``, ``v1-faint``...; specs in
``challenge.contract.release.TRACK_SHIFTS``) is a test-only release that shares its base
release's test set, so that a change in a method's score is caused by the shift alone:

- **the same galaxies**: each of the base's test galaxies is drawn from the same random stream, from
  the draw the base kept, and rendered and measured under the track's instrument (PSF, sky noise),
  magnitude range (the same quantile of the number counts, so a galaxy keeps its rank and its size
  follows the size–magnitude relation) or substructure. A galaxy that the truth procedure no longer
  detects under the track's conditions is redrawn (column ``redrawn`` of ``galaxies.ecsv``);
- **the same pairs**: the first ``n_blends["test"]`` pairs of the base's frozen test table, with the
  same blend ids, companions, sky-noise seeds and shift directions. Their shifts are kept, except
  where the track changes the galaxies' sizes (``v1-faint``) or the pair rule (``v1-close``): then
  each distance keeps its relative place between the rule's bounds for the track's galaxies,
  ``d' = lo' + (d − lo) / (hi − lo) × (hi' − lo')``, rounded to the pixel grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from astropy.table import Table

from challenge.contract.errors import ReleaseError
from challenge.contract.release import ReleaseSpec, committed_dir, preset
from challenge.pipeline.catalogue import (
    ParentCatalogue,
    _assemble,
    render_galaxies,
    slot_morphologies,
)
from challenge.pipeline.pairs import MAX_SHIFT_PX, PairDraw, pair_table, shift_bounds
from challenge.pipeline.split import TEST, split_galaxies

# What a track must share with its base for its galaxies and pairs to be the base's.
SHARED_FIELDS = ("source", "seed", "morphology_counts", "test_fraction", "stamp_size",
                 "pixel_scale", "zero_point", "max_delta_mag")


def base_spec(spec: ReleaseSpec) -> ReleaseSpec:
    """The release a track shares its test set with (checked to share its slots and grid)."""
    if not spec.is_track:
        raise ReleaseError(f"release {spec.name!r} is not a shift track (no base release)")
    base = preset(spec.base)
    if base.source != "synthetic":
        raise ReleaseError(f"release {spec.name!r}: base {base.name!r} must be a synthetic release")
    differ = [f for f in SHARED_FIELDS if getattr(spec, f) != getattr(base, f)]
    if differ:
        raise ReleaseError(
            f"release {spec.name!r}: {', '.join(differ)} differ from its base {base.name!r}; a "
            "track changes the PSF, sky, magnitudes, clumps or pair distances only"
        )
    return base


def base_test_pairs(spec: ReleaseSpec) -> Table:
    """The first ``n_blends["test"]`` rows of the base release's frozen test pair table."""
    base = base_spec(spec)
    folder = committed_dir(base.name)
    if folder is None:
        raise ReleaseError(f"release {spec.name!r}: base {base.name!r} ships no frozen tables")
    pairs = Table.read(folder / "pairs_test.ecsv", format="ascii.ecsv")
    n = spec.n_blends["test"]
    if n > len(pairs):
        raise ReleaseError(
            f"release {spec.name!r}: {n} test blends asked, base {base.name!r} has {len(pairs)}"
        )
    return pairs[:n]


def track_catalogue(
    spec: ReleaseSpec,
    workers: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> ParentCatalogue:
    """The base release's test galaxies, rendered and measured under the track's conditions.

    Returns the catalogue of every base test galaxy (all in split ``test``), with a boolean column
    ``redrawn``: True where the base's galaxy went undetected under the track's conditions and a
    later draw of the same slot replaced it. ``progress(stage, advance, total)`` is called with
    advance 0 when each of the two stages starts (``base galaxies``: which draw the base kept;
    ``galaxies``: the track's).
    """
    base = base_spec(spec)
    morphs = slot_morphologies(base)
    labels = split_galaxies(np.arange(len(morphs)), base.test_fraction, base.seed)
    ids = [int(i) for i in np.flatnonzero(labels == TEST)]
    test_morphs = [morphs[i] for i in ids]
    # Which draw of each slot the base release kept (it redraws galaxies its truth misses).
    stages = {}
    for stage in ("base galaxies", "galaxies"):
        if progress:
            progress(stage, 0, len(ids))
        stages[stage] = (lambda k, s=stage: progress(s, k, len(ids))) if progress else None
    kept = render_galaxies(base, ids, test_morphs, None, workers, stages["base galaxies"])
    first = [g.n_draws - 1 for g in kept]
    galaxies = render_galaxies(spec, ids, test_morphs, first, workers, stages["galaxies"])
    cat = _assemble(spec, galaxies)
    cat.table["split"] = TEST
    redrawn = [g.n_draws - 1 > a for g, a in zip(galaxies, first, strict=True)]
    cat.table["redrawn"] = np.array(redrawn, dtype=bool)
    cat.n_redrawn = int(np.sum(cat.table["redrawn"]))
    return cat


def close_bounds(r1: np.ndarray, r2: np.ndarray, max_r_e: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) centre distance, px, of the close-pair rule: 1 to ``max_r_e`` times the
    half-light radius of the larger galaxy, capped at the rule's 64 px (lower 0.8× upper where
    the two cross)."""
    r = np.maximum(np.asarray(r1, float), np.asarray(r2, float))
    hi = np.minimum(max_r_e * r, MAX_SHIFT_PX)
    lo = np.where(r > hi, 0.8 * hi, r)
    return lo, hi


def moved_shifts(
    dx: np.ndarray,
    dy: np.ndarray,
    bounds_from: tuple[np.ndarray, np.ndarray],
    bounds_to: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Integer shifts (n,) that keep each distance's relative place between new bounds.

    The direction of each shift is kept; ``bounds_*`` are (lower, upper) distances in px.
    """
    dx, dy = np.asarray(dx, float), np.asarray(dy, float)
    lo0, hi0 = bounds_from
    lo1, hi1 = bounds_to
    width = np.where(hi0 > lo0, hi0 - lo0, 1.0)
    u = np.clip((np.hypot(dx, dy) - lo0) / width, 0.0, 1.0)
    d = lo1 + u * (hi1 - lo1)
    angle = np.arctan2(dy, dx)
    new_dx = np.rint(d * np.cos(angle)).astype(np.int64)
    new_dy = np.rint(d * np.sin(angle)).astype(np.int64)
    # A shift never rounds to no shift at all: one pixel along the larger component instead.
    zero = (new_dx == 0) & (new_dy == 0)
    along_x = np.abs(dx) >= np.abs(dy)
    new_dx[zero & along_x] = np.where(dx[zero & along_x] < 0, -1, 1)
    new_dy[zero & ~along_x] = np.where(dy[zero & ~along_x] < 0, -1, 1)
    return new_dx, new_dy


def track_pairs(spec: ReleaseSpec, cat: ParentCatalogue) -> Table:
    """The track's test pair table: the base's pairs (ids, noise seeds, directions) on the
    track's galaxies, shifts moved only where the track changes sizes or the pair rule."""
    base = base_spec(spec)
    pairs = base_test_pairs(spec)
    row_of = {int(g): i for i, g in enumerate(cat.table["galaxy_id"])}
    rows_c = np.array([row_of[int(g)] for g in pairs["central_id"]], dtype=np.int64)
    rows_k = np.array([row_of[int(g)] for g in pairs["companion_id"]], dtype=np.int64)
    dx, dy = np.asarray(pairs["dx"], np.int64), np.asarray(pairs["dy"], np.int64)
    sizes_change = (spec.mag_min, spec.mag_max) != (base.mag_min, base.mag_max)
    if spec.max_distance_r_e > 0 or sizes_change:
        r_e = np.asarray(cat.table["r_e_px"], float)
        old = shift_bounds(pairs["r_e_central"], pairs["r_e_companion"])
        if spec.max_distance_r_e > 0:
            new = close_bounds(r_e[rows_c], r_e[rows_k], spec.max_distance_r_e)
        else:
            new = shift_bounds(r_e[rows_c], r_e[rows_k])
        dx, dy = moved_shifts(dx, dy, old, new)
    draws = [
        PairDraw(int(c), int(k), int(x), int(y), int(s))
        for c, k, x, y, s in zip(rows_c, rows_k, dx, dy, pairs["noise_seed"], strict=True)
    ]
    table = pair_table(cat.table, draws, int(pairs["blend_id"][0]))
    if not np.array_equal(table["blend_id"], pairs["blend_id"]):
        raise ReleaseError(f"release {spec.name!r}: base test blend ids are not consecutive")
    return table
