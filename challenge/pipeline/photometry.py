"""SExtractor-like photometry with sep, shared by the truth catalogue and the sep baseline.

Coordinates follow sep: ``x`` is the column (fast axis), ``y`` the row, and ``(0, 0)`` is the
centre of the first pixel; stamps are centred on pixel ``(size // 2, size // 2)``. Fluxes are in
counts, radii in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

# SExtractor's PHOT_AUTOPARAMS (2.5, 3.5): Kron factor and the minimum aperture, which sep's
# documentation applies as a circle of 3.5 px diameter when the Kron ellipse would be smaller.
KRON_FACTOR = 2.5
MIN_DIAMETER_PX = 3.5
BACKGROUND_MESH_PX = 64


@dataclass(frozen=True)
class DetectionSettings:
    """sep.extract parameters; ``thresh`` is in units of the background rms."""

    thresh: float
    minarea: int
    deblend_cont: float
    deblend_nthresh: int = 32


# Truth on an isolated stamp: a low threshold so faint galaxies are found, and no deblending (the
# stamp holds one galaxy by construction, so splitting a clumpy irregular would lose flux).
TRUTH = DetectionSettings(thresh=1.5, minarea=5, deblend_cont=1.0, deblend_nthresh=32)
# The paper's SExtractor runs on blends (Boucaud et al. 2019, Sect. 3.3).
COLD = DetectionSettings(thresh=5.0, minarea=10, deblend_cont=0.01, deblend_nthresh=64)
HOT = DetectionSettings(thresh=4.0, minarea=6, deblend_cont=1e-4, deblend_nthresh=64)


@dataclass
class Sources:
    """The sources sep found in one image.

    Attributes:
        x, y: centroids (px), shape (n,).
        a, b, theta: second-moment ellipse (px, px, rad), shape (n,).
        flux_auto: Kron (FLUX_AUTO) flux in counts, shape (n,).
        kron_radius: Kron radius in units of a and b, shape (n,).
        segmap: (H, W) int32 segmentation map; pixel value i + 1 belongs to source i, 0 is sky.
        rms: global background rms (counts/px).
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    theta: np.ndarray
    flux_auto: np.ndarray
    kron_radius: np.ndarray
    segmap: np.ndarray
    rms: float

    def __len__(self) -> int:
        return len(self.x)

    def distance_to(self, x0: float, y0: float) -> np.ndarray:
        return np.hypot(self.x - x0, self.y - y0)

    def mask(self, i: int) -> np.ndarray:
        """Binary (H, W) uint8 segmentation mask of source ``i``."""
        return (self.segmap == i + 1).astype(np.uint8)


def subtract_background(image: np.ndarray) -> tuple[np.ndarray, float]:
    """sep background on 64-px meshes; returns (background-subtracted image, global rms)."""
    data = np.ascontiguousarray(image, dtype=np.float64)
    bkg = sep.Background(data, bw=BACKGROUND_MESH_PX, bh=BACKGROUND_MESH_PX, fw=3, fh=3)
    return data - bkg.back(), float(bkg.globalrms)


def kron_flux(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    theta: np.ndarray,
    segmap: np.ndarray | None = None,
    seg_id: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """FLUX_AUTO: the flux in ``KRON_FACTOR`` Kron radii, or in the minimum circle.

    Pixels of other segments are masked when ``segmap`` and ``seg_id`` (1-based) are given, as
    SExtractor does. Returns (flux in counts, Kron radius in units of a, b), each shape (n,).
    """
    data = np.ascontiguousarray(image, dtype=np.float64)
    x, y, a, b, theta = (
        np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, a, b, theta)
    )
    seg_kw = {}
    if segmap is not None:
        seg_kw = {
            "segmap": np.ascontiguousarray(segmap, dtype=np.int32),
            "seg_id": np.atleast_1d(np.asarray(seg_id, dtype=np.int32)),
        }
    kronrad, _ = sep.kron_radius(data, x, y, a, b, theta, 6.0, **seg_kw)
    kronrad = np.where(np.isfinite(kronrad) & (kronrad > 0), kronrad, 0.0)
    flux, _, _ = sep.sum_ellipse(
        data, x, y, a, b, theta, KRON_FACTOR * np.maximum(kronrad, 1e-3), subpix=1, **seg_kw
    )
    r_min = MIN_DIAMETER_PX / 2
    small = kronrad * np.sqrt(a * b) < r_min
    if np.any(small):
        small_kw = {}
        if seg_kw:
            small_kw = {"segmap": seg_kw["segmap"], "seg_id": seg_kw["seg_id"][small]}
        cflux, _, _ = sep.sum_circle(data, x[small], y[small], r_min, subpix=1, **small_kw)
        flux = np.array(flux, dtype=np.float64)
        flux[small] = cflux
    return np.asarray(flux, dtype=np.float64), kronrad


def detect(image: np.ndarray, settings: DetectionSettings) -> Sources:
    """Background-subtract, extract sources and measure their FLUX_AUTO.

    Args:
        image: (H, W) image in counts.
        settings: detection parameters (``TRUTH``, ``COLD`` or ``HOT``).
    """
    data, rms = subtract_background(image)
    objects, segmap = sep.extract(
        data,
        settings.thresh,
        err=rms,
        minarea=settings.minarea,
        deblend_cont=settings.deblend_cont,
        deblend_nthresh=settings.deblend_nthresh,
        segmentation_map=True,
    )
    segmap = np.asarray(segmap, dtype=np.int32)
    n = len(objects)
    if n == 0:
        empty = np.zeros(0)
        return Sources(empty, empty, empty, empty, empty, empty, empty, segmap, rms)
    x, y = objects["x"].astype(float), objects["y"].astype(float)
    a = np.maximum(objects["a"].astype(float), 0.5)
    b = np.maximum(objects["b"].astype(float), 0.5)
    theta = objects["theta"].astype(float)
    flux, kronrad = kron_flux(data, x, y, a, b, theta, segmap, np.arange(1, n + 1))
    return Sources(x, y, a, b, theta, flux, kronrad, segmap, rms)


@dataclass(frozen=True)
class CentralMeasurement:
    """Truth-procedure measurement of the galaxy at the stamp centre.

    ``flux`` in counts (NaN when not detected); ``mask`` (H, W) uint8; ``x``, ``y``, ``a``, ``b``
    in px.
    """

    detected: bool
    flux: float
    mask: np.ndarray
    x: float
    y: float
    a: float
    b: float


def measure_central(
    image: np.ndarray,
    settings: DetectionSettings = TRUTH,
    centre: tuple[float, float] | None = None,
    max_offset_px: float = 6.0,
) -> CentralMeasurement:
    """Detect sources and measure the one nearest ``centre`` (default: the stamp centre).

    The galaxy counts as undetected when no source lies within ``max_offset_px`` of the centre.
    """
    sources = detect(image, settings)
    h, w = image.shape
    x0, y0 = centre if centre is not None else (w // 2, h // 2)
    if len(sources) == 0:
        return CentralMeasurement(False, np.nan, np.zeros((h, w), np.uint8), x0, y0, 0.0, 0.0)
    d = sources.distance_to(x0, y0)
    i = int(np.argmin(d))
    if d[i] > max_offset_px:
        return CentralMeasurement(False, np.nan, np.zeros((h, w), np.uint8), x0, y0, 0.0, 0.0)
    return CentralMeasurement(
        True,
        float(sources.flux_auto[i]),
        sources.mask(i),
        float(sources.x[i]),
        float(sources.y[i]),
        float(sources.a[i]),
        float(sources.b[i]),
    )


def half_light_radius(
    image: np.ndarray, x: float, y: float, a: float, b: float, total: float | None = None
) -> float:
    """Half-light semi-major axis (px) of the galaxy centred at (x, y).

    sep's circular half-light radius, stretched to the semi-major axis by sqrt(a / b). ``total``
    is the galaxy's total flux (counts); default: the sum of a noiseless ``image``.
    """
    data = np.ascontiguousarray(image, dtype=np.float64)
    total = float(data.sum()) if total is None else float(total)
    rmax = float(min(data.shape)) / 2
    r, _ = sep.flux_radius(
        data,
        np.array([x]),
        np.array([y]),
        np.array([rmax]),
        0.5,
        normflux=np.array([total]),
        subpix=5,
    )
    return float(r[0] * np.sqrt(max(a, 1e-3) / max(b, 1e-3)))


def mag_to_flux(mag, zero_point: float):
    """AB magnitude -> counts."""
    return 10 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def flux_to_mag(flux, zero_point: float):
    """counts -> AB magnitude (NaN for flux <= 0)."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zero_point - 2.5 * np.log10(flux), np.nan)
