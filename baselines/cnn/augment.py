"""Augmentation inside the compiled training step: the blend re-observed under other conditions.

:class:`ReObserve` is a Keras layer placed in front of the network of the training model only
(never in the saved model). While training it transforms every blend of the batch on the
accelerator, with ``keras.ops`` and ``keras.random`` only (JAX, TensorFlow and PyTorch alike):

0. **A deeper survey** (a share ``quiet_fraction``; needs the isolated noiseless galaxies, a
   fifth channel of the footprints input) — a blend is its two noiseless galaxies plus noise
   (``challenge.pipeline.blending``), so the blend less those galaxies is its noise, and scaling
   it by ``q`` (log-uniform in [``quiet_factor``, 1]) gives the same pair under a sky ``q``
   times as noisy: a deeper exposure of the same galaxies (``v1-noise-low``: 0.5). The truth
   stays (noise never changes a galaxy's flux). Runs first, on the blend as stored. It assumes
   noiseless stamps, as synthetic releases have; stamps of real galaxies carry their own noise,
   which the step would keep.
1. **Star-forming knots** (each galaxy with chance ``clump_fraction``; needs the truth
   segmentation maps as a second input) — a share ``f`` (uniform in ``clump_flux``) of the
   galaxy's light inside its own footprint (its segmentation map less the other galaxy's, or,
   with ``knot_light_share`` "isolated", its whole map with the light where the two overlap
   shared as the two isolated galaxies share it) is moved into ``n`` equal point sources
   (``n`` uniform in ``clump_count``), placed with probability proportional to that light
   raised to ``knot_light_power`` (1: the knots follow the light, so they share the galaxy's
   half-light radius; 0.5: spread wider), and blurred by a Gaussian PSF of
   ``knot_psf_sigma_px`` or by the release's own PSF (``knot_psf``): clumpy substructure as in
   the ``v1-clumpy`` track. The light moved is the light added, so each galaxy keeps its flux
   (up to the other galaxy's faint wings inside the footprint). Its truth, a Kron flux, is
   either kept or re-measured (``knot_truth``: times the ratio of the galaxy's Kron fluxes
   after and before, :func:`kron_flux`). The pixels scaled by ``1 - f`` get white noise back
   to their former level. Runs first, on the blend as stored, so that the maps need no
   transform.
2. **Symmetry** — one of the 8 dihedral transforms about pixel (64, 64) (the central galaxy stays
   on the central pixel; the sky has no preferred orientation).
3. **PSF and pointing** (a share ``resample_fraction`` of the blends) — convolution with a
   Gaussian of ``psf_sigma_px`` (a broader PSF: v1's has sigma 1.27 px, ``v1-psf-broad``'s 1.91 px,
   i.e. an extra 1.43 px) combined with a shift of up to ``shift_px`` in each direction (the
   galaxy's centre falls anywhere inside its pixel). Applied as two 128 x 128 matrix products
   per blend, ``K_y @ image @ K_x^T``.
4. **Distance / luminosity** (a share ``faint_fraction``) — every pixel times ``s = 10**(-0.4 dm)``
   with ``dm`` up to ``faint_mag``: the same pair of galaxies, fainter. The truth fluxes scale by
   the same ``s``.
5. **Depth** (a share ``noise_fraction``) — the sky noise raised to ``f`` times the release's
   sigma, ``f`` log-uniform in [1, ``noise_factor``] (a shallower survey). Trained on a deep
   release (``v1-deep``: v1's training galaxies under half v1's sky noise), the same step
   makes v1-like and shallower blends from deep ones: noise can be added, never taken away.

Steps 3–5 shrink the noise already in the image (a normalised kernel averages it; ``s`` scales
it), so white Gaussian noise is added to bring it back to ``f`` times the blend's own noise,
measured as the network measures it (``models.SkyNoise``; a v1 blend's noise is not the
release's ``sky_sigma``: where the two stamps overlap, both stamps' noise adds up): a
re-observed blend has the noise of the survey it pretends to come from, never less. A sharper
PSF cannot be simulated from a blend, and a quieter sky only from what lies under its noise:
deeper training data, or (step 0) the noiseless galaxies each training blend was made of, which
a release keeps (``galaxies.h5``, ``pairs_<split>.ecsv``); what remains is left to the network's
inputs (noise measured per image, fluxes relative to the aperture flux).

The truth stays untouched: :class:`Restore` maps the network's outputs back to the original
blend (``log10 flux - log10 s``; maps through the inverse dihedral transform) so that the usual
losses compare them with the release's targets. The masks are not shifted or broadened with the
image (the shift is sub-pixel; the truth maps keep the truth footprint).

Randomness comes from the layer's ``SeedGenerator``; :func:`set_augmentation_epoch` sets its
state from (seed, epoch) before every epoch, so an epoch's transforms depend only on those two
numbers and a resumed run repeats exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

from baselines.cnn.models import SkyNoise
from challenge.pipeline.photometry import KRON_FACTOR, MIN_DIAMETER_PX

STAMP = 128
KERNEL_HALF_WIDTH = 12  # px: Gaussian weights beyond 12 px (> 7 sigma) are negligible


@dataclass(frozen=True)
class AugmentSpec:
    """The random re-observation of training blends (all shares 0: dihedral transforms only).

    Attributes:
        dihedral: random dihedral transform about pixel (64, 64).
        resample_fraction: share of blends convolved with a Gaussian and shifted.
        psf_sigma_px: range of the Gaussian's sigma (px) for those blends.
        shift_px: largest shift (px) in y and in x.
        faint_fraction: share of blends made fainter.
        faint_mag: largest dimming (mag), uniform in [0, faint_mag].
        noise_fraction: share of blends observed with a noisier sky.
        noise_factor: largest sky sigma as a multiple of the release's (log-uniform from 1).
        clump_fraction: chance that each galaxy of a blend gets star-forming knots.
        clump_flux: range of the share of the galaxy's light moved into knots.
        clump_count: range of the number of knots (both ends included).
        knot_psf_sigma_px: Gaussian sigma (px) of a knot's image (v1's PSF: about 1.27 px).
        knot_light_power: knots land on a pixel with probability ~ light ** power (1: they
            follow the galaxy's light and share its half-light radius, as the ``v1-clumpy``
            track's GalSim ``RandomKnots`` share the galaxy's; 0.5: spread wider).
        knot_truth: re-measure the truth of a knotted galaxy: its flux target is multiplied by
            the ratio of its Kron fluxes after and before the knots (:func:`kron_flux`), as the
            truth procedure would measure the knotted galaxy (False: the target stays).
        knot_psf: the image of a knot: ``"gaussian"`` (sigma ``knot_psf_sigma_px``) or
            ``"release"``, the training release's PSF (``galaxies.h5`` 'psf', handed to
            :class:`ReObserve`): a knot is an unresolved star-forming region, drawn through the
            telescope as the ``v1-clumpy`` track draws its knots. v1's PSF (HST F160W) keeps 18%
            of its light beyond 4 px of the centre, a Gaussian of sigma 1.27 px under 1%.
        knot_light_share: which light of the blend is a galaxy's: ``"footprint"`` (its
            segmentation map less the other's: where the two galaxies overlap nothing moves and
            no knot lands) or ``"isolated"`` (its segmentation map, each pixel's light shared
            in proportion to the two isolated noiseless galaxies, channels 3-4 of the
            footprints input, ``data.IsolatedLight``): knots also where the galaxies overlap,
            as in the ``v1-clumpy`` track, where splitting the blend is hardest.
        quiet_fraction: share of blends observed under a quieter sky (step 0).
        quiet_factor: smallest sky sigma as a multiple of the blend's (log-uniform up to 1).
    """

    dihedral: bool = True
    resample_fraction: float = 0.0
    psf_sigma_px: tuple[float, float] = (0.4, 1.6)
    shift_px: float = 0.5
    faint_fraction: float = 0.0
    faint_mag: float = 2.5
    noise_fraction: float = 0.0
    noise_factor: float = 2.5
    clump_fraction: float = 0.0
    clump_flux: tuple[float, float] = (0.2, 0.6)
    clump_count: tuple[int, int] = (15, 60)
    knot_psf_sigma_px: float = 1.27
    knot_light_power: float = 0.5
    knot_truth: bool = False
    knot_psf: str = "gaussian"
    knot_light_share: str = "footprint"
    quiet_fraction: float = 0.0
    quiet_factor: float = 0.4

    @property
    def needs_footprints(self) -> bool:
        """Whether :class:`ReObserve` needs a second input, the truth segmentation maps (and,
        see :attr:`footprint_channels`, what the isolated galaxies give)."""
        return self.clump_fraction > 0 or self.needs_noiseless

    @property
    def needs_noiseless(self) -> bool:
        """Whether a step reads the noiseless blend: a quieter sky."""
        return self.quiet_fraction > 0

    @property
    def needs_isolated(self) -> bool:
        """Whether that input carries what the isolated noiseless galaxies give: the light
        shares (knots of ``knot_light_share`` "isolated") and, for a quieter sky, their sum."""
        return self.needs_footprints and (
            self.knot_light_share == "isolated" or self.needs_noiseless
        )

    @property
    def footprint_channels(self) -> int:
        """Channels of the second input: the 2 maps, the 2 light shares with
        :attr:`needs_isolated`, then the noiseless blend (counts) with
        :attr:`needs_noiseless`."""
        return 2 + 2 * self.needs_isolated + self.needs_noiseless


def _reflect(x, axis: int):
    """Mirror about index n // 2 along ``axis`` (i -> (n - i) mod n), as ``data.reflect``."""
    n = x.shape[axis]
    return ops.take(x, (n - np.arange(n)) % n, axis=axis)


def _per_blend(flag, a, b):
    """``a`` where the (batch,) boolean ``flag`` is set, else ``b`` (arrays (batch, ...))."""
    return ops.where(ops.reshape(flag, (-1,) + (1,) * (len(a.shape) - 1)), a, b)


def dihedral_ops(x, k, inverse: bool = False):
    """Per-blend dihedral transform of (batch, H, W, C) by ``k`` (batch,) int in 0..7.

    Same convention as ``baselines.cnn.data.dihedral`` on axes (1, 2): bit 0 transposes, bit 1
    mirrors rows, bit 2 mirrors columns (in this order; ``inverse`` in the reverse order).
    """
    steps = [
        (ops.equal(k % 2, 1), lambda y: ops.transpose(y, (0, 2, 1, 3))),
        (ops.equal((k // 2) % 2, 1), lambda y: _reflect(y, 1)),
        (ops.equal((k // 4) % 2, 1), lambda y: _reflect(y, 2)),
    ]
    for flag, step in reversed(steps) if inverse else steps:
        x = _per_blend(flag, step(x), x)
    return x


def dihedral_static(x, k: int, inverse: bool = False):
    """The dihedral transform ``k`` (a Python int) of every blend of (batch, H, W, C)."""
    steps = [
        (k & 1, lambda y: ops.transpose(y, (0, 2, 1, 3))),
        (k & 2, lambda y: _reflect(y, 1)),
        (k & 4, lambda y: _reflect(y, 2)),
    ]
    for on, step in reversed(steps) if inverse else steps:
        if on:
            x = step(x)
    return x


@keras.saving.register_keras_serializable(package="blendbench")
class DihedralStack(layers.Layer):
    """(batch, H, W, C) -> (8 batch, H, W, C): the 8 dihedral transforms, transform-major."""

    def call(self, x):
        return ops.concatenate([dihedral_static(x, k) for k in range(8)], axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])


@keras.saving.register_keras_serializable(package="blendbench")
class DihedralMean(layers.Layer):
    """(8 batch, ...) outputs of :class:`DihedralStack` blends -> (batch, ...) their mean.

    With ``maps`` the outputs are (8 batch, H, W, C) maps, each mapped back through the inverse
    of its transform before averaging.
    """

    def __init__(self, maps: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.maps = bool(maps)

    def call(self, y):
        parts = ops.split(y, 8, axis=0)
        if self.maps:
            parts = [dihedral_static(p, k, inverse=True) for k, p in enumerate(parts)]
        return ops.mean(ops.stack(parts, axis=0), axis=0)

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "maps": self.maps}


def _gaussian_matrices(sigma, shift, n: int):
    """(batch, n, n) resampling matrices K[i, j] = g(i - j - shift) / Z and the noise gain.

    ``g`` is a Gaussian of ``sigma`` px; Z normalises the kernel so that flux is conserved; the
    gain sqrt(sum of squared weights) is the factor by which the kernel shrinks white noise.
    """
    idx = ops.arange(n, dtype="float32")
    offsets = ops.reshape(idx, (1, n, 1)) - ops.reshape(idx, (1, 1, n))
    s = ops.reshape(sigma, (-1, 1, 1))
    d = ops.reshape(shift, (-1, 1, 1))
    u = ops.reshape(ops.arange(-KERNEL_HALF_WIDTH, KERNEL_HALF_WIDTH + 1, dtype="float32"),
                    (1, 1, -1))  # fmt: skip
    taps = ops.exp(-0.5 * ops.square((u - d) / s))
    norm = ops.sum(taps, axis=-1, keepdims=True)
    gain = ops.sqrt(ops.sum(ops.square(taps / norm), axis=-1))[:, 0]
    return ops.exp(-0.5 * ops.square((offsets - d) / s)) / norm, gain


def add_knots(x, footprints, spec: AugmentSpec, gen, sigma0, psf_otf=None):
    """Move a share of each chosen galaxy's light into star-forming knots (step 1 above).

    Args:
        x: (batch, H, W, 1) blends, counts.
        footprints: (batch, H, W, 2) truth segmentation maps [central, companion], 0 or 1;
            with ``spec.knot_light_share`` "isolated", (batch, H, W, 4): the maps, then each
            galaxy's share of every pixel's light, in [0, 1].
        spec: the augmentation (``clump_*`` and ``knot_psf_sigma_px`` fields).
        gen: the layer's ``keras.random.SeedGenerator``.
        sigma0: (batch,) each blend's sky noise, counts / px.
        psf_otf: with ``spec.knot_psf == "release"``, the (real, imaginary) parts of the
            PSF's discrete Fourier transform on the (H, W) grid (:func:`psf_transfer`).

    Returns:
        (batch, H, W, 1) blends with the same total flux per galaxy footprint, and (batch, 2)
        ``log10`` of each galaxy's Kron flux after / before the knots (0 where the galaxy got
        none, and everywhere unless ``spec.knot_truth``).
    """
    n = ops.shape(x)[0]
    h, w = x.shape[1], x.shape[2]
    image = x[..., 0]
    maps = ops.cast(footprints[..., :2], "float32")
    if spec.knot_light_share == "isolated":
        own = maps * ops.cast(footprints[..., 2:4], "float32")
    else:
        own = maps * (1.0 - ops.flip(maps, axis=-1))
    own = ops.transpose(own, (0, 3, 1, 2))  # (batch, 2, H, W): each galaxy's share of a pixel
    light = image[:, None] * own  # the observed blend's light, its noise included
    total = ops.sum(light, axis=(2, 3))  # (batch, 2) counts
    on = ops.logical_and(
        keras.random.uniform((n, 2), seed=gen) < spec.clump_fraction, total > 0.0
    )
    share = ops.where(on, keras.random.uniform((n, 2), *spec.clump_flux, seed=gen), 0.0)
    k_max = int(spec.clump_count[1])
    count = keras.random.randint((n, 2), int(spec.clump_count[0]), k_max + 1, seed=gen)
    # with probability ~ light ** power (pixels at or below zero: never)
    positive = ops.reshape(ops.maximum(light, 0.0), (-1, h * w))
    logits = ops.where(positive > 0, spec.knot_light_power * ops.log(positive + 1e-30), -1e9)
    pixel = keras.random.categorical(logits, k_max, dtype="int32", seed=gen)  # (2 batch, K)
    rows = ops.one_hot(pixel // w, h)  # (2 batch, K, H)
    cols = ops.one_hot(pixel % w, w)  # (2 batch, K, W)
    active = ops.cast(ops.arange(k_max)[None, :] < ops.reshape(count, (-1, 1)), "float32")
    knot_flux = ops.reshape(share * total / ops.cast(count, "float32"), (-1, 1)) * active
    points = ops.matmul(ops.transpose(rows * knot_flux[..., None], (0, 2, 1)), cols)
    points = ops.sum(ops.reshape(points, (-1, 2, h, w)), axis=1)  # (batch, H, W): the knots
    flat = points
    if psf_otf is not None:
        knots = _convolve(flat, psf_otf)
    else:
        psf = ops.full((ops.shape(flat)[0],), spec.knot_psf_sigma_px, dtype="float32")
        ky, _ = _gaussian_matrices(psf, ops.zeros_like(psf), h)
        kx, _ = _gaussian_matrices(psf, ops.zeros_like(psf), w)
        knots = ops.matmul(ops.matmul(ky, flat), ops.transpose(kx, (0, 2, 1)))
    moved_sum = ops.sum(share[:, :, None, None] * light, axis=1)  # (batch, H, W)
    knots_sum = knots
    log_ratio = ops.zeros((n, 2), dtype="float32")
    # The scaled pixels' noise, sigma0 (1 - sum f own), brought back to sigma0.
    kept = 1.0 - ops.sum(share[:, :, None, None] * own, axis=1)
    refill = ops.sqrt(ops.maximum(1.0 - ops.square(kept), 0.0))
    noise = ops.reshape(sigma0, (-1, 1, 1)) * refill * keras.random.normal((n, h, w), seed=gen)
    knotted = image - moved_sum + knots_sum + noise
    if spec.knot_truth:
        log_ratio = ops.where(on, _kron_log_ratio(image, knotted, maps), 0.0)
    return knotted[..., None], log_ratio


def psf_transfer(psf: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(real, imaginary) (H, W) float32 DFT of ``psf`` (odd-sized, centred, any normalisation)
    normalised to unit sum and centred on pixel (0, 0) of an (H, W) grid: multiplying an image's
    DFT by it convolves the image with the PSF (circularly; the PSF's wings that cross one edge
    of the stamp come back at the other)."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise ValueError(f"the PSF must be a 2-D image of odd sizes, not {psf.shape}")
    if psf.shape[0] > shape[0] or psf.shape[1] > shape[1] or not psf.sum() > 0:
        raise ValueError(f"the PSF {psf.shape} must fit the stamp {shape} and have light")
    grid = np.zeros(shape)
    grid[: psf.shape[0], : psf.shape[1]] = psf / psf.sum()
    grid = np.roll(grid, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
    otf = np.fft.fft2(grid)
    return otf.real.astype("float32"), otf.imag.astype("float32")


def _convolve(images, otf):
    """(batch, H, W) images convolved with the PSF whose transfer function is ``otf``."""
    re, im = ops.fft2((images, ops.zeros_like(images)))
    o_re, o_im = otf
    out, _ = ops.ifft2((re * o_re - im * o_im, re * o_im + im * o_re))
    return out


def _pixel_grid(h: int, w: int):
    """(1, H, 1) row and (1, 1, W) column indices, float32, px."""
    return (ops.reshape(ops.arange(h, dtype="float32"), (1, h, 1)),
            ops.reshape(ops.arange(w, dtype="float32"), (1, 1, w)))  # fmt: skip


def _centroid(weight):
    """(m,) row and (m,) column of the centroid of (m, H, W) non-negative light, px."""
    yy, xx = _pixel_grid(weight.shape[1], weight.shape[2])
    total = ops.maximum(ops.sum(weight, axis=(1, 2)), 1e-30)
    return ops.sum(weight * yy, axis=(1, 2)) / total, ops.sum(weight * xx, axis=(1, 2)) / total


def _ellipse(weight) -> dict:
    """sep's second-moment ellipse of (m, H, W) non-negative light ``weight``.

    Returns a dict of: ``xc``, ``yc`` (m,) the centroid (px; x the column); ``a``, ``b`` (m,)
    the semi-axes (px, at least 0.5) and ``theta`` (m,) the major axis's angle from the x axis
    (rad); ``dx``, ``dy`` (m, H, W) each pixel's offset from the centroid and ``r`` (m, H, W) its
    elliptical radius in units of the semi-axes.
    """
    yy, xx = _pixel_grid(weight.shape[1], weight.shape[2])
    total = ops.maximum(ops.sum(weight, axis=(1, 2)), 1e-30)

    def mean(v):
        return ops.sum(weight * v, axis=(1, 2)) / total

    def col(v):
        return ops.reshape(v, (-1, 1, 1))

    yc, xc = _centroid(weight)
    dx, dy = xx - col(xc), yy - col(yc)
    x2, y2, xy = mean(dx * dx), mean(dy * dy), mean(dx * dy)
    half_sum, half_diff = (x2 + y2) / 2, (x2 - y2) / 2
    root = ops.sqrt(half_diff**2 + xy**2)
    a = ops.maximum(ops.sqrt(ops.maximum(half_sum + root, 0.0)), 0.5)
    b = ops.maximum(ops.sqrt(ops.maximum(half_sum - root, 0.0)), 0.5)
    theta = 0.5 * ops.arctan2(2 * xy, x2 - y2)
    cos, sin = ops.cos(theta), ops.sin(theta)
    cxx = cos**2 / a**2 + sin**2 / b**2
    cyy = sin**2 / a**2 + cos**2 / b**2
    cxy = 2 * cos * sin * (1 / a**2 - 1 / b**2)
    r = ops.sqrt(ops.maximum(col(cxx) * dx**2 + col(cyy) * dy**2 + col(cxy) * dx * dy, 0.0))
    return {"xc": xc, "yc": yc, "a": a, "b": b, "theta": theta, "dx": dx, "dy": dy, "r": r}


def kron_flux(image, segment, keep):
    """The truth procedure's Kron flux (``photometry.kron_flux``), in ``keras.ops``.

    As sep measures a detected source: the ellipse from the second moments of the positive
    light in the source's segment (semi-axes at least 0.5 px), the Kron radius
    ``sum(r I) / sum(I)`` over the pixels within 6 of those radii, then the light of the pixels
    (centres) within ``KRON_FACTOR`` Kron radii, or within the minimum circle (diameter
    ``MIN_DIAMETER_PX``) when the Kron ellipse is smaller. No background is subtracted.

    Args:
        image: (m, H, W) counts.
        segment: (m, H, W) 1 on the source's segmentation-map pixels, else 0.
        keep: (m, H, W) 1 on the pixels that count (0 on other sources' segments, as sep's
            ``segmap`` masking), else 0.

    Returns:
        (m,) flux in counts (meaningless where the segment holds no positive light: callers
        mask those sources).
    """
    e = _ellipse(ops.maximum(image, 0.0) * segment)
    dx, dy, r, a, b = e["dx"], e["dy"], e["r"], e["a"], e["b"]
    data = image * keep
    inner = ops.cast(r < 6.0, "float32") * data
    moment, light = ops.sum(inner * r, axis=(1, 2)), ops.sum(inner, axis=(1, 2))
    kron_radius = ops.where((light > 0) & (moment > 0), moment / ops.maximum(light, 1e-30), 0.0)
    reach = ops.reshape(KRON_FACTOR * ops.maximum(kron_radius, 1e-3), (-1, 1, 1))
    flux = ops.sum(ops.where(r < reach, data, 0.0), axis=(1, 2))
    r_min = MIN_DIAMETER_PX / 2
    circle = ops.sum(ops.where(dx**2 + dy**2 < r_min**2, data, 0.0), axis=(1, 2))
    return ops.where(kron_radius * ops.sqrt(a * b) < r_min, circle, flux)


def _kron_log_ratio(before, after, maps):
    """(batch, 2) log10 of each galaxy's Kron flux in ``after`` over that in ``before``.

    ``before``, ``after``: (batch, H, W) blends, each galaxy measured on its own segment with
    the other's pixels masked. ``maps``: (batch, H, W, 2) truth segmentation maps
    [central, companion]. A ratio outside [1/2, 2] (a measurement gone wrong, not a knot)
    counts as 1.
    """
    n, h, w = ops.shape(before)[0], before.shape[-2], before.shape[-1]
    segment = ops.reshape(ops.transpose(maps, (0, 3, 1, 2)), (-1, h, w))
    others = ops.flip(maps, axis=-1)
    keep = ops.reshape(ops.transpose(1.0 - others, (0, 3, 1, 2)), (-1, h, w))

    def per_galaxy(image):
        return ops.reshape(ops.repeat(image[:, None], 2, axis=1), (-1, h, w))

    k0 = kron_flux(per_galaxy(before), segment, keep)
    k1 = kron_flux(per_galaxy(after), segment, keep)
    ratio = ops.where((k0 > 0) & (k1 > 0), k1 / ops.maximum(k0, 1e-30), 1.0)
    ratio = ops.where((ratio > 0.5) & (ratio < 2.0), ratio, 1.0)
    return ops.reshape(ops.log10(ratio), (n, 2))


def quieter_sky(x, noiseless, spec: AugmentSpec, gen):
    """A share ``spec.quiet_fraction`` of the blends under a quieter sky (step 0 above).

    Args:
        x: (batch, H, W, 1) blends, counts.
        noiseless: (batch, H, W, 1) each blend's two isolated noiseless galaxies, summed, counts
            (``data.IsolatedLight.shares`` with ``light``): the blend less it is its noise.
        spec: the augmentation (``quiet_fraction``, ``quiet_factor``).
        gen: the layer's ``keras.random.SeedGenerator``.

    Returns:
        (batch, H, W, 1): ``noiseless + q (x - noiseless)``, ``q`` log-uniform in
        [``quiet_factor``, 1], for the chosen blends; the others as they were.
    """
    n = ops.shape(x)[0]
    u = keras.random.uniform((n,), math.log(spec.quiet_factor), 0.0, seed=gen)
    on = keras.random.uniform((n,), seed=gen) < spec.quiet_fraction
    q = ops.reshape(ops.exp(u), (-1, 1, 1, 1))
    return _per_blend(on, noiseless + q * (x - noiseless), x)


@keras.saving.register_keras_serializable(package="blendbench")
class ReObserve(layers.Layer):
    """Training-only random re-observation: (batch, H, W, 1) counts -> same, log10 s, k.

    Returns the transformed blends, ``log10 s`` (batch, 1) (the flux factor applied; (batch, 2),
    one per galaxy, with ``knot_truth``: the knots' Kron flux ratio included) and the
    dihedral index ``k`` (batch,) int32; at inference (``training`` false) the blends unchanged,
    zeros and zeros. With ``clump_fraction`` or ``quiet_fraction`` > 0 the
    layer takes a second input, the truth segmentation maps (batch, H, W, 2) of the blends and
    what the isolated galaxies give (``AugmentSpec.footprint_channels``).
    """

    def __init__(self, spec: AugmentSpec | dict | None = None, seed: int = 0, psf=None,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if isinstance(spec, dict):
            spec = AugmentSpec(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in spec.items()})  # fmt: skip
        self.spec = spec or AugmentSpec()
        self.seed = int(seed)
        self.sky_noise = SkyNoise()
        if self.spec.knot_psf not in ("gaussian", "release"):
            raise ValueError(
                f"knot_psf must be 'gaussian' or 'release', not {self.spec.knot_psf!r}"
            )
        if self.spec.knot_light_share not in ("footprint", "isolated"):
            raise ValueError("knot_light_share must be 'footprint' or 'isolated', not "
                             f"{self.spec.knot_light_share!r}")
        if not 0 < self.spec.quiet_factor <= 1:
            raise ValueError(f"quiet_factor must be in (0, 1], not {self.spec.quiet_factor!r}")
        if self.spec.knot_psf == "release" and psf is None:
            raise ValueError("ReObserve with knot_psf 'release' needs the release's PSF (psf=)")
        self.psf = None if psf is None else np.asarray(psf, dtype="float32")

    def build(self, input_shape):
        self.sky_noise.build(input_shape)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # the knots' PSF in Fourier space, once per layer (constants of the compiled step)
        self.psf_otf = None
        if self.psf is not None:
            self.psf_otf = psf_transfer(self.psf, (input_shape[1], input_shape[2]))

    def call(self, x, footprints=None, training=None):
        n = ops.shape(x)[0]
        zeros = ops.zeros((n, 2 if self.spec.knot_truth else 1), dtype="float32")
        no_k = ops.zeros((n,), dtype="int32")
        if not training:
            return x, zeros, no_k
        spec, gen = self.spec, self.seed_generator

        def share(p):
            return keras.random.uniform((n,), seed=gen) < p

        if spec.needs_footprints and footprints is None:
            raise ValueError("ReObserve with clump_fraction or quiet_fraction > 0 needs the "
                             "segmentation maps")
        if spec.quiet_fraction > 0:
            # the noiseless blend is the last channel (AugmentSpec.footprint_channels)
            x = quieter_sky(x, footprints[..., -1:], spec, gen)
        sigma0 = ops.reshape(self.sky_noise(x), (-1,))  # the blend's noise before any change
        log_knots = None
        if spec.clump_fraction > 0:
            otf = self.psf_otf if spec.knot_psf == "release" else None
            x, log_knots = add_knots(x, footprints, spec, gen, sigma0, otf)
        k = keras.random.randint((n,), 0, 8, dtype="int32", seed=gen) if spec.dihedral else no_k
        x = dihedral_ops(x, k) if spec.dihedral else x
        noise_left = ops.ones((n,), dtype="float32")  # noise left in the image / sigma0
        if spec.resample_fraction > 0:
            lo, hi = spec.psf_sigma_px
            sigma = keras.random.uniform((n,), lo, hi, seed=gen)
            shift = keras.random.uniform((n, 2), -spec.shift_px, spec.shift_px, seed=gen)
            ky, gy = _gaussian_matrices(sigma, shift[:, 0], x.shape[1])
            kx, gx = _gaussian_matrices(sigma, shift[:, 1], x.shape[2])
            image = ops.matmul(ops.matmul(ky, x[..., 0]), ops.transpose(kx, (0, 2, 1)))
            on = share(spec.resample_fraction)
            x = _per_blend(on, image[..., None], x)
            noise_left = ops.where(on, gy * gx, noise_left)
        log_s = ops.zeros((n,), dtype="float32")
        if spec.faint_fraction > 0:
            dm = keras.random.uniform((n,), 0.0, spec.faint_mag, seed=gen)
            log_s = ops.where(share(spec.faint_fraction), -0.4 * dm, log_s)
            s = ops.power(10.0, log_s)
            x = x * ops.reshape(s, (-1, 1, 1, 1))
            noise_left = noise_left * s
        target = ops.ones((n,), dtype="float32")
        if spec.noise_fraction > 0:
            u = keras.random.uniform((n,), 0.0, math.log(spec.noise_factor), seed=gen)
            target = ops.where(share(spec.noise_fraction), ops.exp(u), target)
        if spec.resample_fraction > 0 or spec.faint_fraction > 0 or spec.noise_fraction > 0:
            add = sigma0 * ops.sqrt(ops.maximum(target**2 - noise_left**2, 0.0))
            x = x + ops.reshape(add, (-1, 1, 1, 1)) * keras.random.normal(ops.shape(x), seed=gen)
        log_s = ops.reshape(log_s, (-1, 1))
        if spec.knot_truth and log_knots is not None:
            log_s = log_s + log_knots  # (batch, 2): each galaxy's own flux factor
        return x, log_s, k

    def compute_output_shape(self, x_shape, footprints_shape=None):
        width = 2 if self.spec.knot_truth and self.spec.clump_fraction > 0 else 1
        return x_shape, (x_shape[0], width), (x_shape[0],)

    def get_config(self):
        from dataclasses import asdict

        psf = None if self.psf is None else self.psf.tolist()
        return {**super().get_config(), "spec": asdict(self.spec), "seed": self.seed, "psf": psf}


@keras.saving.register_keras_serializable(package="blendbench")
class RestoreFlux(layers.Layer):
    """log10 flux predicted on a re-observed blend -> on the original: ``flux - log10 s``."""

    def call(self, flux, log_s):
        return flux - log_s

    def compute_output_shape(self, flux_shape, log_s_shape):
        return flux_shape


@keras.saving.register_keras_serializable(package="blendbench")
class RestoreMasks(layers.Layer):
    """Maps (batch, H, W, 2) predicted on a transformed blend -> the original's orientation."""

    def call(self, masks, k):
        return dihedral_ops(masks, k, inverse=True)

    def compute_output_shape(self, masks_shape, k_shape):
        return masks_shape


def set_augmentation_epoch(model: keras.Model, seed: int, epoch: int) -> None:
    """Set the random state of every :class:`ReObserve` in ``model`` from (seed, epoch)."""
    state = np.random.default_rng([int(seed), int(epoch)]).integers(0, 2**31 - 1)
    for layer in model._flatten_layers():
        if isinstance(layer, ReObserve):
            var = layer.seed_generator.state
            var.assign(ops.convert_to_tensor(np.array([state, 0]), dtype=var.dtype))
