"""Augmentation inside the compiled training step: the blend re-observed under other conditions.

:class:`ReObserve` is a Keras layer placed in front of the network of the training model only
(never in the saved model). While training it transforms every blend of the batch on the
accelerator, with ``keras.ops`` and ``keras.random`` only (JAX, TensorFlow and PyTorch alike):

1. **Star-forming knots** (each galaxy with chance ``clump_fraction``; needs the truth
   segmentation maps as a second input) — a share ``f`` (uniform in ``clump_flux``) of the
   galaxy's light inside its own footprint (its segmentation map less the other galaxy's) is
   moved into ``n`` equal point sources (``n`` uniform in ``clump_count``), placed with
   probability proportional to that light raised to ``knot_light_power`` (1: the knots follow
   the light, so they share the galaxy's half-light radius; 0.5: spread wider) and blurred by a
   Gaussian PSF of ``knot_psf_sigma_px``: clumpy substructure as in the ``v1-clumpy`` track (GalSim
   ``RandomKnots``). The light moved is the light added, so each galaxy keeps its flux and the
   truth stays valid (up to the other galaxy's faint wings inside the footprint). The pixels
   scaled by ``1 - f`` get white noise back to their former level. Runs first, on the blend as
   stored, so that the maps need no transform.
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
PSF cannot be simulated from a blend, and a quieter sky only from deeper training data; what
remains is left to the network's inputs (noise measured per image, fluxes relative to the
aperture flux).

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

    @property
    def needs_footprints(self) -> bool:
        """Whether :class:`ReObserve` needs the truth segmentation maps as a second input."""
        return self.clump_fraction > 0


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


def add_knots(x, footprints, spec: AugmentSpec, gen, sigma0):
    """Move a share of each chosen galaxy's light into star-forming knots (step 1 above).

    Args:
        x: (batch, H, W, 1) blends, counts.
        footprints: (batch, H, W, 2) truth segmentation maps [central, companion], 0 or 1.
        spec: the augmentation (``clump_*`` and ``knot_psf_sigma_px`` fields).
        gen: the layer's ``keras.random.SeedGenerator``.
        sigma0: (batch,) each blend's sky noise, counts / px.

    Returns:
        (batch, H, W, 1) blends with the same total flux per galaxy footprint.
    """
    n = ops.shape(x)[0]
    h, w = x.shape[1], x.shape[2]
    image = x[..., 0]
    maps = ops.cast(footprints, "float32")
    own = ops.transpose(maps * (1.0 - ops.flip(maps, axis=-1)), (0, 3, 1, 2))  # (batch, 2, H, W)
    light = image[:, None] * own
    total = ops.sum(light, axis=(2, 3))  # (batch, 2) counts
    on = ops.logical_and(
        keras.random.uniform((n, 2), seed=gen) < spec.clump_fraction, total > 0.0
    )
    share = ops.where(on, keras.random.uniform((n, 2), *spec.clump_flux, seed=gen), 0.0)
    k_max = int(spec.clump_count[1])
    count = keras.random.randint((n, 2), int(spec.clump_count[0]), k_max + 1, seed=gen)
    # Knot positions drawn with probability ~ light ** power (pixels at or below zero: never).
    positive = ops.reshape(ops.maximum(light, 0.0), (-1, h * w))
    logits = spec.knot_light_power * ops.log(positive + 1e-30)
    pixel = keras.random.categorical(logits, k_max, dtype="int32", seed=gen)  # (2 batch, K)
    rows = ops.one_hot(pixel // w, h)  # (2 batch, K, H)
    cols = ops.one_hot(pixel % w, w)  # (2 batch, K, W)
    active = ops.cast(ops.arange(k_max)[None, :] < ops.reshape(count, (-1, 1)), "float32")
    knot_flux = ops.reshape(share * total / ops.cast(count, "float32"), (-1, 1)) * active
    points = ops.matmul(ops.transpose(rows * knot_flux[..., None], (0, 2, 1)), cols)
    points = ops.sum(ops.reshape(points, (-1, 2, h, w)), axis=1)  # (batch, H, W)
    psf = ops.full((n,), spec.knot_psf_sigma_px, dtype="float32")
    zero = ops.zeros((n,), dtype="float32")
    ky, _ = _gaussian_matrices(psf, zero, h)
    kx, _ = _gaussian_matrices(psf, zero, w)
    knots = ops.matmul(ops.matmul(ky, points), ops.transpose(kx, (0, 2, 1)))
    moved = ops.sum(share[:, :, None, None] * light, axis=1)
    # The scaled pixels' noise, sigma0 (1 - f), brought back to sigma0.
    refill = ops.sum(own * ops.sqrt(1.0 - ops.square(1.0 - share))[:, :, None, None], axis=1)
    noise = ops.reshape(sigma0, (-1, 1, 1)) * refill * keras.random.normal((n, h, w), seed=gen)
    return (image - moved + knots + noise)[..., None]


@keras.saving.register_keras_serializable(package="blendbench")
class ReObserve(layers.Layer):
    """Training-only random re-observation: (batch, H, W, 1) counts -> same, log10 s, k.

    Returns the transformed blends, ``log10 s`` (batch, 1) (the flux factor applied) and the
    dihedral index ``k`` (batch,) int32; at inference (``training`` false) the blends unchanged,
    zeros and zeros. With ``clump_fraction`` > 0 the layer takes a second input, the truth
    segmentation maps (batch, H, W, 2) of the blends.
    """

    def __init__(self, spec: AugmentSpec | dict | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(spec, dict):
            spec = AugmentSpec(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in spec.items()})  # fmt: skip
        self.spec = spec or AugmentSpec()
        self.seed = int(seed)
        self.sky_noise = SkyNoise()

    def build(self, input_shape):
        self.sky_noise.build(input_shape)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, x, footprints=None, training=None):
        n = ops.shape(x)[0]
        zeros = ops.zeros((n, 1), dtype="float32")
        no_k = ops.zeros((n,), dtype="int32")
        if not training:
            return x, zeros, no_k
        spec, gen = self.spec, self.seed_generator

        def share(p):
            return keras.random.uniform((n,), seed=gen) < p

        sigma0 = ops.reshape(self.sky_noise(x), (-1,))  # the blend's noise before any change
        if spec.needs_footprints:
            if footprints is None:
                raise ValueError("ReObserve with clump_fraction > 0 needs the segmentation maps")
            x = add_knots(x, footprints, spec, gen, sigma0)
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
        return x, ops.reshape(log_s, (-1, 1)), k

    def compute_output_shape(self, x_shape, footprints_shape=None):
        return x_shape, (x_shape[0], 1), (x_shape[0],)

    def get_config(self):
        from dataclasses import asdict

        return {**super().get_config(), "spec": asdict(self.spec), "seed": self.seed}


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
