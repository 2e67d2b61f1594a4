"""The ``cosmos`` source: real HST/ACS F814W COSMOS galaxies re-rendered to the release grid.

Each galaxy is a GalSim ``RealGalaxy`` (deconvolved from its HST PSF, padded with its own
correlated noise out to the stamp), scaled from the COSMOS zero point (F814W, 25.94) to the
release's, convolved with the release PSF, drawn on 128×128 px of 0.06″ and noise-whitened with
``whitenNoise``; the release then tops its sky noise up to the release level. The band is not
changed: F814W light seen through an F160W-like PSF.

Stamps are rejected (and logged) when they hold non-finite pixels, when the noise variance in
their outer frame is more than a factor 2 off the whitened variance, or when the galaxy's light
reaches the stamp edge (border flux above 5σ).

Morphology (documented rule). With GalSim's parametric fits (the full download's
``*_fits.fits`` with ``use_bulgefit``/``flux``/``sersicfit``): bulge-to-total B/T from the
bulge+disc fit's fluxes where ``use_bulgefit`` is set, else the single Sérsic index n (B/T ≈ 1 for
n ≥ 2.5, 0.5 for 1.5 ≤ n < 2.5, 0 below); B/T ≥ 0.7 → bulge, 0.25 ≤ B/T < 0.7 → bulge+disc,
else disc. Without fits (the 100-galaxy example), the concentration C = 5 log10(r80 / r20) of
the re-rendered stamp (radii enclosing 20% and 80% of its Kron flux) decides: C ≥ 3.3 bulge,
2.8 ≤ C < 3.3 bulge+disc, else disc. Calibration on release-PSF-convolved models at 5–200 counts:
exponential discs 2.5–2.6, de Vaucouleurs 3.0–3.6, 40% bulge + disc 3.2–3.3, so faint bulges can
land in bulge+disc. Either way a
galaxy whose noise-corrected rotational asymmetry A = Σ|I − I₁₈₀| / (2 Σ|I|) (inside its
segment) exceeds 0.2 is irregular.
"""

from __future__ import annotations

import glob
from pathlib import Path

import galsim
import numpy as np
import sep
from astropy.io import fits

from challenge.contract.errors import SourceError
from challenge.contract.release import ReleaseSpec
from challenge.pipeline.photometry import TRUTH, detect
from challenge.pipeline.sources.real import RealStamp
from challenge.pipeline.sources.synthetic import spec_psf

COSMOS_ZERO_POINT = 25.94  # ACS/WFC F814W AB zero point of the COSMOS stamps (counts/s)
EXAMPLE_CATALOGUE = "real_galaxy_catalog_26_extension_example.fits"
ENV_VAR = "BLENDBENCH_COSMOS_DIR"


def example_dir() -> Path:
    """The 100-galaxy COSMOS example shipped with the kit."""
    from importlib import resources

    return Path(str(resources.files("challenge") / "data" / "cosmos_example"))


def find_catalogue(folder: Path) -> Path:
    """The RealGalaxyCatalog file in ``folder`` (not its ``_fits`` companion)."""
    if not folder.is_dir():
        raise SourceError(
            f"{folder}: COSMOS folder not found; download it with `galsim_download_cosmos "
            f"-s 23.5` and pass its folder with --input or ${ENV_VAR}"
        )
    candidates = sorted(
        p
        for p in glob.glob(str(folder / "real_galaxy_catalog*.fits"))
        if not p.endswith("_fits.fits")
    )
    if not candidates:
        raise SourceError(
            f"{folder}: no real_galaxy_catalog*.fits here; download the COSMOS sample with "
            f"`galsim_download_cosmos -s 23.5` and pass its folder"
        )
    return Path(candidates[0])


def bulge_fraction_from_fits(fits_path: Path) -> np.ndarray | None:
    """B/T per galaxy from GalSim's parametric fits, or None when the file lacks them.

    As ``galsim.COSMOSCatalog`` reads them: ``flux`` holds [Sérsic, bulge, disc] fluxes of the
    fits, ``use_bulgefit`` says whether the bulge+disc fit is the one to use, and
    ``sersicfit[:, 2]`` is the single-Sérsic index.
    """
    if not fits_path.is_file():
        return None
    with fits.open(fits_path) as hdul:
        data = hdul[1].data
        names = {n.lower() for n in data.columns.names}
        if not {"use_bulgefit", "flux", "sersicfit"} <= names:
            return None
        use_bulge = np.asarray(data["use_bulgefit"]).astype(bool)
        flux = np.asarray(data["flux"], dtype=float)
        n = np.asarray(data["sersicfit"], dtype=float)[:, 2]
    bulge, disc = flux[:, 1], flux[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        bt_fit = np.clip(np.where(bulge + disc > 0, bulge / (bulge + disc), 0.0), 0.0, 1.0)
    bt_sersic = np.where(n >= 2.5, 1.0, np.where(n >= 1.5, 0.5, 0.0))
    return np.where(use_bulge, bt_fit, bt_sersic)


def concentration(stamp: np.ndarray, x: float, y: float, total: float) -> float:
    """C = 5 log10(r80 / r20) of the galaxy at (x, y) with total flux ``total`` (counts)."""
    data = np.ascontiguousarray(stamp, dtype=np.float64)
    r, _ = sep.flux_radius(
        data,
        np.array([x]),
        np.array([y]),
        np.array([60.0]),
        [0.2, 0.8],
        normflux=np.array([total]),
        subpix=5,
    )
    r20, r80 = float(r[0, 0]), float(r[0, 1])
    return 5 * np.log10(r80 / r20) if r20 > 0 and r80 > 0 else np.nan


def asymmetry(stamp: np.ndarray, mask: np.ndarray, noise_var: float = 0.0) -> float:
    """Rotational asymmetry Σ|I − I₁₈₀| / (2 Σ|I|) inside ``mask`` (rotation about the centre).

    The noise's own contribution, E|N₁ − N₂| = 2 sqrt(noise_var / π) per pixel, is subtracted.
    """
    rotated = stamp[::-1, ::-1]
    # The 180° rotation of a 128-px array maps pixel 64 to 63: roll it back onto the centre.
    rotated = np.roll(rotated, (1, 1), axis=(0, 1))
    m = np.asarray(mask, bool) | np.roll(np.asarray(mask, bool)[::-1, ::-1], (1, 1), (0, 1))
    denom = 2 * np.abs(stamp[m]).sum()
    noise_term = m.sum() * 2 * np.sqrt(noise_var / np.pi)
    return float((np.abs(stamp - rotated)[m].sum() - noise_term) / denom) if denom > 0 else np.nan


def classify(stamp: np.ndarray, bulge_fraction: float | None, noise_var: float = 0.0) -> str:
    """Morphology of a re-rendered galaxy by the rule in this module's docstring."""
    sources = detect(stamp, TRUTH)
    if len(sources) == 0:
        return "disc"
    h, w = stamp.shape
    i = int(np.argmin(sources.distance_to(w // 2, h // 2)))
    if asymmetry(stamp, sources.mask(i), noise_var) > 0.2:
        return "irregular"
    if bulge_fraction is not None:
        bt = bulge_fraction
    else:
        c = concentration(stamp, sources.x[i], sources.y[i], sources.flux_auto[i])
        bt = 1.0 if c >= 3.3 else 0.5 if c >= 2.8 else 0.0
    return "bulge" if bt >= 0.7 else "bulge+disc" if bt >= 0.25 else "disc"


def render_cosmos_galaxy(
    catalog: galsim.RealGalaxyCatalog, index: int, spec: ReleaseSpec
) -> tuple[np.ndarray, float]:
    """Re-render galaxy ``index``: (stamp (size, size) float32 counts, whitened noise variance)."""
    size, scale = spec.stamp_size, spec.pixel_scale
    rng = galsim.BaseDeviate(
        int(np.random.SeedSequence(spec.seed, spawn_key=(3, index)).generate_state(1)[0])
    )
    galaxy = galsim.RealGalaxy(catalog, index=index, rng=rng, noise_pad_size=size * scale * 1.5)
    galaxy = galaxy * 10 ** (0.4 * (spec.zero_point - COSMOS_ZERO_POINT))
    final = galsim.Convolve(galaxy, spec_psf(spec))
    image = galsim.ImageF(size, size, scale=scale)
    final.drawImage(image, offset=(0.5, 0.5), method="auto")
    variance = image.whitenNoise(final.noise)
    return image.array.astype(np.float32), float(variance)


def stamp_problem(stamp: np.ndarray, noise_var: float) -> str | None:
    """Why a re-rendered stamp is unusable, or None."""
    if not np.all(np.isfinite(stamp)):
        return "non-finite pixels"
    frame = np.ones(stamp.shape, bool)
    frame[8:-8, 8:-8] = False
    ratio = float(np.var(stamp[frame])) / noise_var if noise_var > 0 else np.inf
    if not 0.5 <= ratio <= 2.0:
        return f"noise variance in the outer frame {ratio:.2f}x the whitened variance"
    edge = np.ones(stamp.shape, bool)
    edge[4:-4, 4:-4] = False
    if stamp[edge].sum() > 5 * np.sqrt(noise_var * edge.sum()):
        return "galaxy light reaches the stamp edge"
    return None


def load_cosmos(
    spec: ReleaseSpec, folder: Path | str | None = None, max_galaxies: int = 0
) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """Re-render the COSMOS galaxies in ``folder`` (default: the shipped 100-galaxy example).

    Returns (usable stamps, [(COSMOS IDENT, reason)] for rejected ones).
    """
    folder = Path(folder) if folder else example_dir()
    cat_path = find_catalogue(folder)
    try:
        catalog = galsim.RealGalaxyCatalog(cat_path.name, dir=str(folder))
    except (OSError, galsim.GalSimError, KeyError) as err:
        raise SourceError(f"{cat_path}: not a readable RealGalaxyCatalog ({err})") from None
    fits_path = cat_path.with_name(cat_path.stem + "_fits.fits")
    bt = bulge_fraction_from_fits(fits_path)
    with fits.open(cat_path) as hdul:
        table = hdul[1].data
        idents = np.asarray(table["IDENT"])
        mags = np.asarray(table["MAG"], dtype=float)
    n = catalog.nobjects if max_galaxies <= 0 else min(max_galaxies, catalog.nobjects)
    stamps: list[RealStamp] = []
    rejected: list[tuple[str, str]] = []
    for i in range(n):
        try:
            stamp, var = render_cosmos_galaxy(catalog, i, spec)
        except (galsim.GalSimError, OSError, ValueError) as err:
            rejected.append((str(idents[i]), f"rendering failed: {err}"))
            continue
        problem = stamp_problem(stamp, var)
        if problem:
            rejected.append((str(idents[i]), problem))
            continue
        stamps.append(
            RealStamp(
                source_id=str(idents[i]),
                stamp=stamp,
                noise_var=var,
                catalogue_flux=float(10 ** (-0.4 * (mags[i] - spec.zero_point))),
                morphology=classify(stamp, None if bt is None else float(bt[i]), var),
            )
        )
    return stamps, rejected
