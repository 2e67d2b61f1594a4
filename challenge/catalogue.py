"""The parent catalogue: isolated galaxy stamps and their truth measured by sep.

Each catalogue slot ``i`` has a fixed morphology (the release's mix, shuffled by the seed) and its
own random stream ``SeedSequence(seed, spawn_key=(0, i, attempt))``, so the catalogue does not
depend on the number of workers. The truth is measured on the isolated stamp (noiseless model plus
one realisation of sky noise) with :data:`challenge.photometry.TRUTH`; a galaxy that the truth
procedure does not detect is replaced by a fresh draw of the same morphology, and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from challenge.blending import top_up_sigma
from challenge.photometry import TRUTH, flux_to_mag, half_light_radius, measure_central
from challenge.release import MORPHOLOGIES, ReleaseSpec
from challenge.sources.real import RealStamp
from challenge.sources.synthetic import draw_galaxy, render_model

MAX_ATTEMPTS = 50
Progress = Callable[[int], None]


@dataclass
class IsolatedGalaxy:
    """One parent galaxy: noiseless stamp (H, W) float32 counts, truth mask (H, W) uint8."""

    galaxy_id: int
    morphology: str
    stamp: np.ndarray
    mask: np.ndarray
    flux: float
    model_flux: float
    r_e_px: float
    n_draws: int
    noise_var: float = 0.0
    source_id: str = ""


@dataclass
class ParentCatalogue:
    """The parent sample.

    Attributes:
        table: one row per galaxy: galaxy_id, morphology, mag (AB, of the truth flux), flux (sep
            FLUX_AUTO truth, counts), model_flux (noiseless model flux in the stamp, counts),
            r_e_px (half-light semi-major axis, px). ``split`` is added by the split stage.
        stamps: (n_galaxies, H, W) float32 noiseless models in counts.
        masks: (n_galaxies, H, W) uint8 truth segmentation maps of each isolated galaxy.
        n_redrawn: galaxies replaced because the truth procedure did not detect them.
        noise_var: (n_galaxies,) noise variance (counts²/px) already in each stamp, for real
            galaxies; None for noiseless models.
        rejected: (source id, reason) of each real galaxy left out.
    """

    table: Table
    stamps: np.ndarray
    masks: np.ndarray
    n_redrawn: int
    noise_var: np.ndarray | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.table)
        if self.stamps.shape[0] != n or self.masks.shape != self.stamps.shape:
            raise ValueError("stamps (n, H, W) and masks must match the table's rows")


def slot_morphologies(spec: ReleaseSpec) -> list[str]:
    """Morphology of each catalogue slot: the exact mix, in a seeded random order."""
    labels = [m for m in MORPHOLOGIES for _ in range(spec.morphology_counts.get(m, 0))]
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0,)))
    return [labels[i] for i in rng.permutation(len(labels))]


def isolated_galaxy(spec: ReleaseSpec, galaxy_id: int, morphology: str) -> IsolatedGalaxy:
    """Draw, render and measure galaxy ``galaxy_id``, redrawing until the truth detects it."""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng(
            np.random.SeedSequence(spec.seed, spawn_key=(0, galaxy_id, attempt))
        )
        model = draw_galaxy(morphology, rng, spec)
        stamp = render_model(model, spec)
        noise = rng.standard_normal(stamp.shape, dtype=np.float32) * np.float32(spec.sky_sigma)
        truth = measure_central(stamp + noise, TRUTH)
        if truth.detected and truth.flux > 0:
            r_e = half_light_radius(stamp, truth.x, truth.y, truth.a, truth.b)
            return IsolatedGalaxy(
                galaxy_id,
                morphology,
                stamp,
                truth.mask,
                truth.flux,
                float(stamp.astype(np.float64).sum()),
                r_e,
                attempt + 1,
            )
    raise RuntimeError(f"galaxy {galaxy_id} ({morphology}) undetected after {MAX_ATTEMPTS} draws")


def _render_chunk(args: tuple[ReleaseSpec, list[int], list[str]]) -> list[IsolatedGalaxy]:
    spec, ids, morphs = args
    return [isolated_galaxy(spec, i, m) for i, m in zip(ids, morphs, strict=True)]


def build_catalogue(
    spec: ReleaseSpec, workers: int = 1, progress: Progress | None = None, chunk: int = 32
) -> ParentCatalogue:
    """Render and measure every parent galaxy of a release.

    Args:
        spec: the release.
        workers: processes rendering in parallel (the result does not depend on it).
        progress: called with the number of galaxies finished after each chunk.
        chunk: galaxies per task.
    """
    if spec.source != "synthetic":
        return _real_catalogue(spec, progress)
    morphs = slot_morphologies(spec)
    ids = list(range(len(morphs)))
    tasks = [(spec, ids[i : i + chunk], morphs[i : i + chunk]) for i in range(0, len(ids), chunk)]
    galaxies: list[IsolatedGalaxy] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_render_chunk, tasks):
                galaxies.extend(result)
                if progress:
                    progress(len(result))
    else:
        for task in tasks:
            result = _render_chunk(task)
            galaxies.extend(result)
            if progress:
                progress(len(result))
    return _assemble(spec, galaxies)


def real_isolated_galaxy(
    spec: ReleaseSpec, galaxy_id: int, real: RealStamp
) -> IsolatedGalaxy | str:
    """Measure the truth of a real galaxy stamp, or say why it is rejected.

    The stamp already holds noise of variance ``real.noise_var``; sky noise tops it up to the
    release's level (seeded by the galaxy id) before the truth procedure runs.
    """
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0, galaxy_id, 0)))
    sigma = float(top_up_sigma(spec.sky_sigma, real.noise_var))
    noise = rng.standard_normal(real.stamp.shape, dtype=np.float32) * np.float32(sigma)
    truth = measure_central(real.stamp + noise, TRUTH)
    if not (truth.detected and truth.flux > 0):
        return "not detected by the truth procedure at the release's sky noise"
    r_e = real.r_e_px
    if r_e is None:
        r_e = half_light_radius(real.stamp, truth.x, truth.y, truth.a, truth.b, truth.flux)
    return IsolatedGalaxy(
        galaxy_id,
        real.morphology,
        real.stamp.astype(np.float32),
        truth.mask,
        truth.flux,
        real.catalogue_flux,
        float(r_e),
        1,
        float(real.noise_var),
        str(real.source_id),
    )


def _real_catalogue(spec: ReleaseSpec, progress: Progress | None) -> ParentCatalogue:
    from challenge.sources import load_real_stamps

    stamps, rejected = load_real_stamps(spec)
    galaxies: list[IsolatedGalaxy] = []
    for real in stamps:
        result = real_isolated_galaxy(spec, len(galaxies), real)
        if isinstance(result, str):
            rejected.append((str(real.source_id), result))
        else:
            galaxies.append(result)
        if progress:
            progress(1)
    if len(galaxies) < 4:
        from challenge.errors import SourceError

        raise SourceError(
            f"source {spec.source!r}: only {len(galaxies)} usable galaxies "
            f"({len(rejected)} rejected); a release needs at least 4"
        )
    return _assemble(spec, galaxies, rejected)


def _assemble(
    spec: ReleaseSpec, galaxies: list[IsolatedGalaxy], rejected: list | None = None
) -> ParentCatalogue:
    """The catalogue table, stacked stamps and masks of measured galaxies."""
    real = spec.source != "synthetic"
    flux = np.array([g.flux for g in galaxies])
    table = Table(
        {
            "galaxy_id": np.array([g.galaxy_id for g in galaxies], dtype=np.int64),
            "morphology": [g.morphology for g in galaxies],
            "mag": flux_to_mag(flux, spec.zero_point),
            "flux": flux,
            "model_flux": np.array([g.model_flux for g in galaxies]),
            "r_e_px": np.array([g.r_e_px for g in galaxies]),
        }
    )
    table["mag"].unit, table["flux"].unit, table["model_flux"].unit = "mag(AB)", "ct", "ct"
    table["r_e_px"].unit = "pix"
    if real:
        table["source_id"] = [g.source_id for g in galaxies]
    return ParentCatalogue(
        table=table,
        stamps=np.stack([g.stamp for g in galaxies]),
        masks=np.stack([g.mask for g in galaxies]),
        n_redrawn=int(sum(g.n_draws - 1 for g in galaxies)),
        noise_var=np.array([g.noise_var for g in galaxies]) if real else None,
        rejected=list(rejected or []),
    )
