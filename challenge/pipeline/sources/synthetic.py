"""The ``synthetic`` source: GalSim galaxies in the paper's morphological mix, seen by an
HST/WFC3 F160W-like instrument.

Models (all convolved with the release PSF and drawn on 0.06"/px, centred on pixel (64, 64)):

- ``bulge``: Sérsic profile, n drawn from {3, 3.5, 4, 4.5, 5} (a fixed grid so GalSim reuses its
  Sérsic tables), truncated at 8 R_e, axis ratio 0.5–1.
- ``disc``: GalSim ``InclinedExponential`` (scale height 0.1 of the scale radius) at an isotropic
  inclination.
- ``bulge+disc``: the two above sharing a position angle, bulge-to-total ratio 0.1–0.7, bulge
  half-light radius 0.3–0.6 of the disc's.
- ``irregular``: exponential (axis ratio 0.3–1) plus 0.2–0.5 of the flux in 15–60 clumpy
  star-forming knots (``RandomKnots``) placed within an offset, wider exponential.

Magnitudes follow number counts dN/dm ∝ 10^(0.25 m) between the release's limits; half-light
radii follow a size–magnitude relation calibrated on the CANDELS pairs released with the paper
(median ≈ 6.5 px at H = 21, ≈ 0.1 dex smaller per magnitude, 0.2 dex scatter), scaled per type
(bulges ×0.4, discs ×1.25, bulge+disc ×0.9, irregulars ×1.2).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import galsim
import numpy as np

from challenge.contract.release import MORPHOLOGIES, PRESETS, ReleaseSpec

SERSIC_N_GRID = (3.0, 3.5, 4.0, 4.5, 5.0)
SIZE_FACTOR = {"bulge": 0.4, "disc": 1.25, "bulge+disc": 0.9, "irregular": 1.2}
COUNTS_SLOPE = 0.25
WFC3_F160W_LAMBDA_NM = 1545.0
ACS_F814W_LAMBDA_NM = 814.0
HST_DIAMETER_M = 2.4
HST_OBSCURATION = 0.33
# Gaussian jitter (plus detector charge diffusion) convolved with the Airy pattern, arcsec.
JITTER_FWHM_ARCSEC = {"wfc3-f160w": 0.1, "acs-f814w": 0.05}
PSF_LAMBDA_NM = {"wfc3-f160w": WFC3_F160W_LAMBDA_NM, "acs-f814w": ACS_F814W_LAMBDA_NM}
# Clumpy track: every galaxy puts this fraction of its flux into this many knots.
CLUMP_FRACTION = (0.3, 0.6)
CLUMP_COUNT = (20, 60)


# The paper's parent sample (1,919 galaxies): the morphology mix of v1 and of custom releases.
PAPER_MIX = dict(PRESETS["v1"].morphology_counts)


def paper_mix(n_galaxies: int) -> dict[str, int]:
    """The paper's morphology mix scaled to ``n_galaxies`` (counts summing to it exactly).

    Largest-remainder rounding, ties in the order of ``MORPHOLOGIES``: 1,919 gives the paper's own
    352 bulge, 433 disc, 702 bulge+disc and 432 irregular galaxies.
    """
    total = sum(PAPER_MIX.values())
    exact = {m: n_galaxies * PAPER_MIX[m] / total for m in MORPHOLOGIES}
    counts = {m: int(exact[m]) for m in MORPHOLOGIES}
    by_remainder = sorted(MORPHOLOGIES, key=lambda m: (-(exact[m] - counts[m]),
                                                       MORPHOLOGIES.index(m)))
    for m in by_remainder[: n_galaxies - sum(counts.values())]:
        counts[m] += 1
    return counts


@dataclass(frozen=True)
class GalaxyModel:
    """Parameters of one synthetic galaxy.

    ``mag`` is the AB magnitude of the total model flux; radii are half-light radii in arcsec;
    angles in degrees; ``knot_seed`` seeds the irregulars' knot positions.
    """

    morphology: str
    mag: float
    hlr_arcsec: float
    q: float
    beta_deg: float
    sersic_n: float = 4.0
    bulge_fraction: float = 0.0
    bulge_hlr_ratio: float = 0.5
    inclination_deg: float = 0.0
    knot_fraction: float = 0.0
    n_knots: int = 0
    knot_seed: int = 0
    clump_fraction: float = 0.0
    n_clumps: int = 0
    clump_seed: int = 0


@functools.lru_cache(maxsize=8)
def release_psf(model: str = "wfc3-f160w", dilation: float = 1.0) -> galsim.GSObject:
    """The optical PSF of a synthetic release: an obscured Airy (2.4 m, HST) ⊗ Gaussian jitter.

    ``wfc3-f160w`` (v1): Airy at 1.545 µm ⊗ 0.1″ jitter, FWHM about 0.18″ on the 0.06″ grid
    (pixel response included when drawn). ``acs-f814w``: Airy at 814 nm ⊗ 0.05″, about 0.11″.
    ``dilation`` scales the profile's size (1.5 = a 50% broader PSF), keeping its flux.
    """
    airy = galsim.Airy(
        lam=PSF_LAMBDA_NM[model],
        diam=HST_DIAMETER_M,
        obscuration=HST_OBSCURATION,
        scale_unit=galsim.arcsec,
    )
    psf = galsim.Convolve(airy, galsim.Gaussian(fwhm=JITTER_FWHM_ARCSEC[model]))
    return psf if dilation == 1.0 else psf.dilate(dilation)


def spec_psf(spec: ReleaseSpec) -> galsim.GSObject:
    """The optical PSF of the release ``spec``."""
    return release_psf(spec.psf_model, float(spec.psf_dilation))


def median_hlr_px(mag: np.ndarray | float, morphology: str) -> np.ndarray:
    """Median half-light radius (px, 0.06") at AB magnitude ``mag`` for a morphology."""
    return 6.5 * 10 ** (-0.1 * (np.asarray(mag) - 21.0)) * SIZE_FACTOR[morphology]


def draw_magnitude(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A magnitude from dN/dm ∝ 10^(COUNTS_SLOPE m) truncated to [lo, hi] (inverse CDF)."""
    k = COUNTS_SLOPE * np.log(10)
    u = rng.uniform()
    return float(np.log(np.exp(k * lo) + u * (np.exp(k * hi) - np.exp(k * lo))) / k)


def draw_galaxy(morphology: str, rng: np.random.Generator, spec: ReleaseSpec) -> GalaxyModel:
    """Draw the parameters of one galaxy of the given morphology."""
    mag = draw_magnitude(rng, spec.mag_min, spec.mag_max)
    hlr_px = median_hlr_px(mag, morphology) * 10 ** rng.normal(0.0, 0.2)
    hlr_px = float(np.clip(hlr_px, 1.2, 30.0))
    hlr = hlr_px * spec.pixel_scale
    beta = float(rng.uniform(0, 180))
    if morphology == "bulge":
        n = float(rng.choice(SERSIC_N_GRID))
        return GalaxyModel(morphology, mag, hlr, float(rng.uniform(0.5, 1.0)), beta, sersic_n=n)
    if morphology == "disc":
        incl = float(np.degrees(np.arccos(rng.uniform(0.1, 1.0))))
        return GalaxyModel(morphology, mag, hlr, 1.0, beta, inclination_deg=incl)
    if morphology == "bulge+disc":
        incl = float(np.degrees(np.arccos(rng.uniform(0.1, 1.0))))
        return GalaxyModel(
            morphology,
            mag,
            hlr,
            float(rng.uniform(0.6, 1.0)),
            beta,
            sersic_n=4.0,
            bulge_fraction=float(rng.uniform(0.1, 0.7)),
            bulge_hlr_ratio=float(rng.uniform(0.3, 0.6)),
            inclination_deg=incl,
        )
    if morphology == "irregular":
        return GalaxyModel(
            morphology,
            mag,
            hlr,
            float(rng.uniform(0.3, 1.0)),
            beta,
            knot_fraction=float(rng.uniform(0.2, 0.5)),
            n_knots=int(rng.integers(15, 61)),
            knot_seed=int(rng.integers(1, 2**31 - 1)),
        )
    raise ValueError(f"unknown morphology {morphology!r}")


def with_clumps(model: GalaxyModel, rng: np.random.Generator) -> GalaxyModel:
    """The same galaxy with strong star-forming substructure (the ``v1-clumpy`` track).

    A fraction ``CLUMP_FRACTION`` of the total flux moves from the galaxy's profile into
    ``CLUMP_COUNT`` knots spread over its half-light radius, whatever the morphology; the total
    flux (and magnitude) is unchanged. ``rng`` is a stream of its own, so the galaxy's other
    parameters and its truth noise stay those of the base release.
    """
    return dataclasses.replace(
        model,
        clump_fraction=float(rng.uniform(*CLUMP_FRACTION)),
        n_clumps=int(rng.integers(CLUMP_COUNT[0], CLUMP_COUNT[1] + 1)),
        clump_seed=int(rng.integers(1, 2**31 - 1)),
    )


def _clumps(model: GalaxyModel, flux: float) -> galsim.GSObject:
    """Knots carrying ``flux`` counts, following the galaxy's size, axis ratio and angle.

    The knots are a round Gaussian cloud sheared to the galaxy's axis ratio ``q``. A shear keeps
    the area, so the round cloud's half-light radius is the galaxy's ``hlr * sqrt(q)`` wherever
    ``hlr`` is the face-on size of a disc seen inclined (major axis ``hlr``, minor ``q * hlr``);
    a Sérsic or irregular galaxy's ``hlr`` is already that of its sheared profile.
    """
    q, r = model.q, model.hlr_arcsec
    if model.morphology in ("disc", "bulge+disc"):
        # A thin inclined disc looks like an ellipse of axis ratio cos(i).
        q = max(float(np.cos(np.radians(model.inclination_deg))), 0.1)
        r = model.hlr_arcsec * np.sqrt(q)
    knots = galsim.RandomKnots(
        npoints=model.n_clumps,
        half_light_radius=r,
        flux=flux,
        rng=galsim.BaseDeviate(model.clump_seed),
    )
    return knots.shear(galsim.Shear(q=q, beta=model.beta_deg * galsim.degrees))


def _profile(model: GalaxyModel, flux: float) -> galsim.GSObject:
    """The unconvolved GalSim profile of a galaxy with total flux ``flux`` (counts)."""
    if model.n_clumps > 0:
        fc = model.clump_fraction
        smooth = dataclasses.replace(model, n_clumps=0)
        return galsim.Add(_profile(smooth, (1 - fc) * flux), _clumps(model, fc * flux))
    shear = galsim.Shear(q=model.q, beta=model.beta_deg * galsim.degrees)
    if model.morphology == "bulge":
        return galsim.Sersic(
            n=model.sersic_n,
            half_light_radius=model.hlr_arcsec,
            flux=flux,
            trunc=8 * model.hlr_arcsec,
            flux_untruncated=False,
        ).shear(shear)
    disc_kwargs = dict(
        inclination=model.inclination_deg * galsim.degrees,
        half_light_radius=model.hlr_arcsec,
        scale_h_over_r=0.1,
    )
    if model.morphology == "disc":
        return galsim.InclinedExponential(flux=flux, **disc_kwargs).rotate(
            model.beta_deg * galsim.degrees
        )
    if model.morphology == "bulge+disc":
        fb = model.bulge_fraction
        disc = galsim.InclinedExponential(flux=(1 - fb) * flux, **disc_kwargs).rotate(
            model.beta_deg * galsim.degrees
        )
        rb = model.bulge_hlr_ratio * model.hlr_arcsec
        bulge = galsim.Sersic(
            n=4.0, half_light_radius=rb, flux=fb * flux, trunc=8 * rb, flux_untruncated=False
        ).shear(shear)
        return galsim.Add(bulge, disc)
    if model.morphology == "irregular":
        fk = model.knot_fraction
        smooth = galsim.Exponential(half_light_radius=model.hlr_arcsec, flux=(1 - fk) * flux)
        knots = galsim.RandomKnots(
            npoints=model.n_knots,
            half_light_radius=1.3 * model.hlr_arcsec,
            flux=fk * flux,
            rng=galsim.BaseDeviate(model.knot_seed),
        )
        return galsim.Add(smooth, knots).shear(shear)
    raise ValueError(f"unknown morphology {model.morphology!r}")


def render_model(model: GalaxyModel, spec: ReleaseSpec) -> np.ndarray:
    """Noiseless PSF-convolved stamp (stamp_size, stamp_size) float32 in counts.

    The galaxy is centred on pixel (size // 2, size // 2) (0-based, x = column).
    """
    flux = float(10 ** (-0.4 * (model.mag - spec.zero_point)))
    obj = galsim.Convolve(_profile(model, flux), spec_psf(spec))
    image = galsim.ImageF(spec.stamp_size, spec.stamp_size, scale=spec.pixel_scale)
    # GalSim centres an even-sized image between pixels; +0.5 px puts the galaxy on (64, 64).
    obj.drawImage(image, offset=(0.5, 0.5), method="auto")
    return image.array.astype(np.float32)


def render_psf(spec: ReleaseSpec, size: int = 33) -> np.ndarray:
    """The release PSF drawn on the release grid, (size, size) float32, unit sum."""
    image = galsim.ImageF(size, size, scale=spec.pixel_scale)
    spec_psf(spec).drawImage(image, method="auto")
    arr = image.array.astype(np.float64)
    return (arr / arr.sum()).astype(np.float32)
