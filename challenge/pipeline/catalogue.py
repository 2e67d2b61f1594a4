"""The parent catalogue: isolated galaxy stamps and their truth measured by sep.

Each catalogue slot ``i`` has a fixed morphology (the release's mix, shuffled by the seed) and its
own random stream ``SeedSequence(seed, spawn_key=(0, i, attempt))``, so the catalogue does not
depend on the number of workers. The truth is measured on the isolated stamp (noiseless model plus
one realisation of sky noise) with :data:`challenge.pipeline.photometry.TRUTH`; a galaxy that the
truth procedure does not detect is replaced by a fresh draw of the same morphology, and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

from challenge.contract.errors import ReleaseError
from challenge.contract.release import CUSTOM_SOURCES, MORPHOLOGIES, ReleaseSpec
from challenge.pipeline.blending import top_up_sigma
from challenge.pipeline.photometry import TRUTH, flux_to_mag, half_light_radius, measure_central
from challenge.pipeline.sources.real import RealStamp
from challenge.pipeline.sources.synthetic import draw_galaxy, render_model, with_clumps
from challenge.pipeline.workers import Parallel, dask_client, in_order, n_threads, task_slices

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
        adjustments: what building the catalogue changed in a custom source's input, for the
            release record (empty otherwise): ``sky_sigma`` (counts/px) when the release's sky
            noise was raised to that of the noisiest stamp (``sky_sigma_requested``,
            ``noisiest_stamp``), ``resampled_from_pixel_scale`` (″/px, with ``n_resampled``),
            ``zero_point_scale`` (stamps and fluxes multiplied by it) and ``zero_filled``
            ({source id: pixels of zero padding filled with noise}).
    """

    table: Table
    stamps: np.ndarray
    masks: np.ndarray
    n_redrawn: int
    noise_var: np.ndarray | None = None
    rejected: list[tuple[str, str]] = field(default_factory=list)
    adjustments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.table)
        if self.stamps.shape[0] != n or self.masks.shape != self.stamps.shape:
            raise ValueError("stamps (n, H, W) and masks must match the table's rows")


def slot_morphologies(spec: ReleaseSpec) -> list[str]:
    """Morphology of each catalogue slot: the exact mix, in a seeded random order."""
    labels = [m for m in MORPHOLOGIES for _ in range(spec.morphology_counts.get(m, 0))]
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(0,)))
    return [labels[i] for i in rng.permutation(len(labels))]


def isolated_galaxy(
    spec: ReleaseSpec, galaxy_id: int, morphology: str, first_attempt: int = 0
) -> IsolatedGalaxy:
    """Draw, render and measure galaxy ``galaxy_id``, redrawing until the truth detects it.

    ``first_attempt`` starts from a later draw of the slot's stream (a shift track starts from
    the draw its base release kept, so both hold the same galaxy). With ``spec.clumps`` the
    galaxy gets star-forming knots from a stream of their own (the rest of the draw unchanged).
    """
    for attempt in range(first_attempt, first_attempt + MAX_ATTEMPTS):
        rng = np.random.default_rng(
            np.random.SeedSequence(spec.seed, spawn_key=(0, galaxy_id, attempt))
        )
        model = draw_galaxy(morphology, rng, spec)
        if spec.clumps:
            clump_rng = np.random.default_rng(
                np.random.SeedSequence(spec.seed, spawn_key=(4, galaxy_id, attempt))
            )
            model = with_clumps(model, clump_rng)
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


def _render_chunk(
    args: tuple[ReleaseSpec, list[int], list[str], list[int]],
) -> list[IsolatedGalaxy]:
    spec, ids, morphs, first = args
    return [isolated_galaxy(spec, i, m, a) for i, m, a in zip(ids, morphs, first, strict=True)]


def render_galaxies(
    spec: ReleaseSpec,
    ids: list[int],
    morphologies: list[str],
    first_attempts: list[int] | None = None,
    workers: Parallel = 1,
    progress: Progress | None = None,
    chunk: int = 32,
) -> list[IsolatedGalaxy]:
    """Render and measure the synthetic galaxies ``ids`` (catalogue slots), in that order.

    Args:
        spec: the release.
        ids, morphologies: the slots and their morphologies.
        first_attempts: per slot, the draw of its stream to start from (default 0).
        workers: where the chunks run (:data:`challenge.pipeline.workers.Parallel`: 1 in this
            process, N or "local:N" worker processes, "tcp://HOST:PORT", a Dask client); the
            result does not depend on it.
        progress: called with the number of galaxies finished after each chunk.
        chunk: galaxies per task (the last ones smaller on several workers, see
            :func:`challenge.pipeline.workers.task_slices`).
    """
    first = list(first_attempts) if first_attempts is not None else [0] * len(ids)
    galaxies: list[IsolatedGalaxy] = []
    with dask_client(workers) as client:
        tasks = [
            (spec, ids[sl], morphologies[sl], first[sl])
            for sl in task_slices(len(ids), chunk, n_threads(client))
        ]
        if client is None:
            results = (_render_chunk(task) for task in tasks)
        else:
            results = (future.result() for _, future in in_order(client, _render_chunk,
                                                                 ((t,) for t in tasks)))
        for result in results:
            galaxies.extend(result)
            if progress:
                progress(len(result))
    return galaxies


def build_catalogue(
    spec: ReleaseSpec, workers: Parallel = 1, progress: Progress | None = None, chunk: int = 32
) -> ParentCatalogue:
    """Render and measure every parent galaxy of a release.

    Args:
        spec: the release.
        workers: where the rendering runs (see :func:`render_galaxies`; the result does not
            depend on it).
        progress: called with the number of galaxies finished after each chunk.
        chunk: galaxies per task.

    Raises:
        ReleaseError: a synthetic release with fewer than 4 galaxies in its morphology mix.
    """
    if spec.source != "synthetic":
        return _real_catalogue(spec, progress)
    if (spec.n_galaxies or 0) < 4:
        raise ReleaseError(
            f"release {spec.name!r}: {spec.n_galaxies or 0} galaxies in its morphology mix "
            f"({spec.morphology_counts or 'none'}); a release needs at least 4: give the "
            "number of galaxies (--galaxies N, the paper's mix of morphologies)"
        )
    morphs = slot_morphologies(spec)
    ids = list(range(len(morphs)))
    galaxies = render_galaxies(spec, ids, morphs, None, workers, progress, chunk)
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
    """Measure the truth of a real source's stamps.

    For a custom source (candels-npy, fits-stamps) the release's sky noise is raised to the
    noise of the noisiest stamp when one is noisier (recorded in ``adjustments``), so every
    galaxy of the blends carries the same sky noise.
    """
    from challenge.pipeline.sources import load_real_stamps
    from challenge.pipeline.sources.real import stamp_adjustments

    stamps, rejected = load_real_stamps(spec)
    adjustments: dict[str, Any] = {}
    if spec.source in CUSTOM_SOURCES:
        adjustments = stamp_adjustments(spec, stamps)
        noisiest = max(stamps, key=lambda s: s.noise_var, default=None)
        if noisiest is not None and noisiest.noise_var > spec.sky_sigma**2:
            sky = float(np.sqrt(noisiest.noise_var))
            adjustments.update(
                sky_sigma=sky,
                sky_sigma_requested=spec.sky_sigma,
                noisiest_stamp=noisiest.source_id,
            )
            spec = dataclasses.replace(spec, sky_sigma=sky)
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
        from challenge.contract.errors import SourceError

        raise SourceError(
            f"{spec.source_path or spec.source}: only {len(galaxies)} usable galaxies "
            f"({len(rejected)} rejected); a release needs at least 4: add galaxies to the input"
        )
    cat = _assemble(spec, galaxies, rejected)
    cat.adjustments = adjustments
    return cat


def select_galaxies(cat: ParentCatalogue, keep: np.ndarray) -> ParentCatalogue:
    """The catalogue restricted to the rows where ``keep`` (n_galaxies,) bool is True.

    Galaxy ids are kept (they seed each galaxy's noise); ``cat`` itself when all are kept.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.all():
        return cat
    return dataclasses.replace(
        cat,
        table=cat.table[keep],
        stamps=cat.stamps[keep],
        masks=cat.masks[keep],
        noise_var=None if cat.noise_var is None else cat.noise_var[keep],
    )


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
