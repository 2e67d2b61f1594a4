"""Keras 3 builders of the CNN baselines: blend2flux, the U-Net and blend2mask2flux.

Pure builder functions (``keras.Input`` in, ``keras.Model`` out) written with ``keras.layers``
and ``keras.ops`` only, so the same code runs on TensorFlow, JAX and PyTorch.

Every model reads raw blends in counts, shape ``(batch, 128, 128, 1)``, and scales them itself
(:class:`BlendScaling`), so training, inference and saved models can never disagree on the
scaling. Outputs:

- ``flux``: ``(batch, 2)`` log10 flux in counts, [central, companion];
- ``masks`` (U-Net, blend2mask2flux): ``(batch, 128, 128, 2)`` fractional maps in [0, 1],
  [central, companion] (channels last; the release stores masks as ``(n, 2, 128, 128)``).

The paper's blend2flux (Boucaud et al. 2019) is reproduced by :func:`build_blend2flux` with
``first_filters`` F = 64 / 256 / 512: conv 3x3 ReLU layers of F, F, 2F, 2F, 4F filters, a 2x2
max-pool after each of the first four (128 -> 8 px), flatten, dense layers of F, F/2, F/4 units
(ReLU) and a linear dense layer of 2 outputs: 1,605,458 / 25,670,978 / 102,673,026 parameters
(1.6 / 25.7 / 102.7 M).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from baselines.cnn.configs import CNNConfig, ModelConfig, _paper_flux

SKY_SIGMA = 0.012  # counts / px, v1 release
STAMP_SHAPE = (128, 128, 1)
LN10 = math.log(10.0)
FLUX_FLOOR = 1.0  # counts: aperture fluxes are floored here before taking log10
# Batch-norm statistics follow the weights within ~10 steps (Keras' default 0.99: ~100), so the
# validation loss tracks the training loss early in short, high-learning-rate runs.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="blendbench")
class SkyNoise(layers.Layer):
    """Sky noise of each blend: (batch, H, W, 1) counts -> (batch, 1) counts / px.

    The 3-sigma-clipped scatter of neighbouring pixel differences, x[i, j+1] - x[i, j], divided
    by sqrt(2): for white noise of sigma it is sigma, while galaxies (smooth on the pixel scale,
    a minority of the stamp) give the few large differences that the clipping removes. Five
    clipping passes from the unclipped scatter, then the 1.3% deficit of a 3-sigma-clipped
    Gaussian corrected; reductions only (no sort), so it costs little on any backend.
    Floored at ``floor``.
    """

    CLIP = 3.0
    PASSES = 5
    CLIPPED_STD = 0.986598  # std of a unit Gaussian truncated at +-3
    MIN_NOISE = 1e-6  # counts / px: the lowest floor, so that a noiseless image divides safely

    def __init__(self, floor: float = MIN_NOISE, **kwargs):
        super().__init__(**kwargs)
        self.floor = float(floor)

    def call(self, x):
        diff = (x[:, :, 1:, :] - x[:, :, :-1, :]) / math.sqrt(2.0)
        sq = ops.square(diff)
        var = ops.mean(sq, axis=(1, 2, 3), keepdims=True)
        for _ in range(self.PASSES):
            keep = ops.cast(sq < self.CLIP**2 * var, x.dtype)
            var = ops.sum(sq * keep, axis=(1, 2, 3), keepdims=True) / ops.maximum(
                ops.sum(keep, axis=(1, 2, 3), keepdims=True), 1.0
            )
        sigma = ops.sqrt(var) / self.CLIPPED_STD
        return ops.maximum(ops.reshape(sigma, (-1, 1)), self.floor)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


@keras.saving.register_keras_serializable(package="blendbench")
class ApertureFlux(layers.Layer):
    """Aperture flux of the whole blend: (batch, H, W, 1) counts -> (batch, 1) counts.

    Sum of the pixels whose 5x5 box-smoothed value exceeds 3 sky sigmas of the smoothed image
    (``3 sky_sigma / 5``), floored at ``floor``. A second input (batch, 1), each blend's
    measured noise (:class:`SkyNoise`), replaces ``sky_sigma`` when given. On the v1 release
    it follows the sum of the two truth fluxes within 0.02 dex (about 8% high: the detection
    area covers more than the Kron apertures).
    """

    def __init__(self, sky_sigma: float = SKY_SIGMA, floor: float = FLUX_FLOOR, **kwargs):
        super().__init__(**kwargs)
        self.sky_sigma = float(sky_sigma)
        self.floor = float(floor)

    def call(self, x, sigma=None):
        kernel = ops.ones((5, 5, 1, 1), dtype=x.dtype) / 25.0
        smooth = ops.conv(x, kernel, strides=1, padding="same")
        noise = self.sky_sigma if sigma is None else ops.reshape(sigma, (-1, 1, 1, 1))
        detected = ops.cast(smooth > 3.0 * noise / 5.0, x.dtype)
        return ops.maximum(ops.sum(x * detected, axis=(1, 2)), self.floor)

    def compute_output_shape(self, x_shape, sigma_shape=None):
        return (x_shape[0], 1)

    def get_config(self):
        return {**super().get_config(), "sky_sigma": self.sky_sigma, "floor": self.floor}


@keras.saving.register_keras_serializable(package="blendbench")
class BlendScaling(layers.Layer):
    """Input channels from raw counts: (batch, H, W, 1) and (batch, 1) -> (batch, H, W, C).

    Channels: ``asinh(x / sky_sigma) / 3``; with ``linear``, ``100 x / A`` (A = aperture flux,
    second input); with ``coords``, ``(y - H/2) / (H/2)`` and ``(x - W/2) / (W/2)`` (zero on the
    central galaxy's pixel (64, 64)). A third input (batch, 1), each blend's measured noise,
    replaces ``sky_sigma`` when given.
    """

    def __init__(
        self, sky_sigma: float = SKY_SIGMA, linear: bool = True, coords: bool = True, **kwargs
    ):
        super().__init__(**kwargs)
        self.sky_sigma = float(sky_sigma)
        self.linear = bool(linear)
        self.coords = bool(coords)

    def call(self, x, aperture=None, sigma=None):
        noise = self.sky_sigma if sigma is None else ops.reshape(sigma, (-1, 1, 1, 1))
        channels = [ops.arcsinh(x / noise) / 3.0]
        if self.linear:
            channels.append(100.0 * x / ops.reshape(aperture, (-1, 1, 1, 1)))
        if self.coords:
            h, w = x.shape[1], x.shape[2]
            yy = (ops.arange(h, dtype="float32") - h // 2) / (h // 2)
            xx = (ops.arange(w, dtype="float32") - w // 2) / (w // 2)
            grid_y = ops.broadcast_to(ops.reshape(yy, (1, h, 1, 1)), (1, h, w, 1))
            grid_x = ops.broadcast_to(ops.reshape(xx, (1, 1, w, 1)), (1, h, w, 1))
            zeros = ops.zeros_like(x)
            channels += [zeros + ops.cast(grid_y, x.dtype), zeros + ops.cast(grid_x, x.dtype)]
        return ops.concatenate(channels, axis=-1) if len(channels) > 1 else channels[0]

    def compute_output_shape(self, x_shape, aperture_shape=None, sigma_shape=None):
        return (*x_shape[:3], 1 + int(self.linear) + 2 * int(self.coords))

    def get_config(self):
        return {
            **super().get_config(),
            "sky_sigma": self.sky_sigma,
            "linear": self.linear,
            "coords": self.coords,
        }


@keras.saving.register_keras_serializable(package="blendbench")
class MapFlux(layers.Layer):
    """Flux inside fractional maps: (batch, H, W, 1), (batch, H, W, k), (batch, 1) -> (batch, k).

    ``sum(x * map)`` in counts, floored at 5% of the aperture flux (third input) so that an
    empty map still gives a usable log10 reference. With ``split_aperture`` it is the aperture
    flux split in the proportions of the (non-negative) fluxes inside the maps: the maps then
    set only the split, and the blend's flux comes from the noise-relative aperture. The maps
    of a deeper survey reach further into the galaxies' outskirts (on ``v1-noise-low`` the flux
    inside them is 31-39% above the truth, against 16-19% on v1); the split keeps the
    reference within 3.3% of the truth on both (docs/robust-cnns.md).
    """

    def __init__(self, split_aperture: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.split_aperture = bool(split_aperture)

    def call(self, x, maps, aperture):
        flux = ops.sum(x * maps, axis=(1, 2))
        if self.split_aperture:
            flux = ops.maximum(flux, 0.0)
            flux = aperture * flux / ops.maximum(ops.sum(flux, axis=-1, keepdims=True), 1e-6)
        return ops.maximum(flux, 0.05 * aperture)

    def compute_output_shape(self, x_shape, maps_shape, aperture_shape):
        return (maps_shape[0], maps_shape[-1])

    def get_config(self):
        return {**super().get_config(), "split_aperture": self.split_aperture}


@keras.saving.register_keras_serializable(package="blendbench")
class StopGradient(layers.Layer):
    """Identity whose gradient is zero: what follows it cannot train what precedes it."""

    def call(self, x):
        return ops.stop_gradient(x)


@keras.saving.register_keras_serializable(package="blendbench")
class Log10(layers.Layer):
    """log10 of a positive tensor (counts -> dex)."""

    def call(self, x):
        return ops.log(x) / LN10


# --------------------------------------------------------------------------------------------
# building blocks (functions on tensors)


def _conv(x, filters: int, kernel: int, strides: int, batch_norm: bool, name: str):
    """Conv -> [batch norm] -> ReLU."""
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=not batch_norm, name=name
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _residual(x, filters: int, name: str):
    """Two 3x3 conv + batch norm with an identity shortcut (same filters in and out)."""
    y = _conv(x, filters, 3, 1, True, f"{name}_a")
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_b_bn")(y)
    y = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation("relu", name=f"{name}_relu")(y)


def _paper_flux_body(x, arch: ModelConfig, prefix: str):
    """The paper's conv + max-pool stack and dense head -> (batch, 2) (no activation)."""
    last = len(arch.flux_filters) - 1
    for i, filters in enumerate(arch.flux_filters):
        x = _conv(x, filters, 3, 1, arch.batch_norm, f"{prefix}conv{i}")
        if i < last:
            x = layers.MaxPooling2D(2, name=f"{prefix}pool{i}")(x)
    x = layers.Flatten(name=f"{prefix}flatten")(x)
    for i, units in enumerate(arch.dense_units):
        x = layers.Dense(units, activation="relu", name=f"{prefix}dense{i}")(x)
    return x


def _compact_flux_body(x, arch: ModelConfig, prefix: str, extra=None):
    """Strided entry, one downsampling conv + residual block per stage, pooled + flat head.

    (batch, 128, 128, C) -> (batch, units) features. The head concatenates global average and
    max pooling (position-free evidence: the companion may be anywhere), the flattened last map
    (kept position: the central is at the centre) and ``extra`` scalars (log10 references).
    """
    x = _conv(x, arch.flux_filters[0], 5, arch.entry_stride, arch.batch_norm, f"{prefix}entry")
    for i, filters in enumerate(arch.flux_filters[1:]):
        x = _conv(x, filters, 3, 2, arch.batch_norm, f"{prefix}down{i}")
        x = _residual(x, filters, f"{prefix}res{i}")
    parts = [
        layers.GlobalAveragePooling2D(name=f"{prefix}gap")(x),
        layers.GlobalMaxPooling2D(name=f"{prefix}gmp")(x),
        layers.Flatten(name=f"{prefix}flatten")(x),
    ]
    if extra is not None:
        parts.append(extra)
    x = layers.Concatenate(name=f"{prefix}features")(parts)
    for i, units in enumerate(arch.dense_units):
        x = layers.Dense(units, activation="relu", name=f"{prefix}dense{i}")(x)
    return x


def _flux_head(x, reference, arch: ModelConfig, prefix: str):
    """Linear dense -> (batch, 2) log10 flux, optionally added to a log10 reference."""
    if reference is None:
        # Start near the release's typical flux (~30 counts) so early MAPE stays finite.
        bias = keras.initializers.Constant(1.5)
        return layers.Dense(2, bias_initializer=bias, name="flux")(x)
    delta = layers.Dense(
        2,
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        bias_initializer=keras.initializers.Constant(math.log10(0.5)),
        name=f"{prefix}delta",
    )(x)
    return layers.Add(name="flux")([delta, reference])


def _scaled_input(image, arch: ModelConfig, sky_sigma: float):
    if not arch.noise_from_image:  # the training release's sky sigma, fixed in the model
        aperture = ApertureFlux(sky_sigma, name="aperture")(image)
        scaled = BlendScaling(sky_sigma, arch.linear, arch.coords, name="scaling")(image, aperture)
        return scaled, aperture
    sigma = SkyNoise(max(arch.noise_floor * sky_sigma, SkyNoise.MIN_NOISE), name="sky_noise")(image)
    aperture = ApertureFlux(sky_sigma, name="aperture")(image, sigma)
    scaled = BlendScaling(sky_sigma, arch.linear, arch.coords, name="scaling")(
        image, aperture, sigma
    )
    return scaled, aperture


def _unet_body(x, arch: ModelConfig, full_res):
    """U-Net on scaled channels -> (batch, H, W, 2) sigmoid maps named ``masks``.

    ``full_res`` (the scaled input) is concatenated back before the last conv when the U-Net
    works at reduced resolution (``unet_entry_stride`` 2).
    """
    bn = arch.batch_norm
    f0 = arch.unet_filters
    if arch.unet_entry_stride > 1:
        x = _conv(x, f0, 3, arch.unet_entry_stride, bn, "unet_entry")
    filters = [min(f0 * 2**level, arch.unet_max_filters) for level in range(arch.unet_depth)]
    skips = []
    for level, f in enumerate(filters):
        for c in range(arch.unet_convs):
            x = _conv(x, f, 3, 1, bn, f"unet_down{level}_{c}")
        if level < len(filters) - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"unet_pool{level}")(x)
    for level in reversed(range(len(filters) - 1)):
        f = filters[level]
        x = layers.Conv2DTranspose(f, 2, strides=2, name=f"unet_upconv{level}")(x)
        x = layers.Concatenate(name=f"unet_concat{level}")([x, skips[level]])
        for c in range(arch.unet_convs):
            x = _conv(x, f, 3, 1, bn, f"unet_up{level}_{c}")
    if arch.unet_entry_stride > 1:
        x = layers.Conv2DTranspose(
            8, arch.unet_entry_stride, strides=arch.unet_entry_stride, name="unet_upsample"
        )(x)
        x = layers.Concatenate(name="unet_concat_input")([x, full_res])
        x = _conv(x, 8, 3, 1, bn, "unet_refine")
    return layers.Conv2D(2, 1, activation="sigmoid", name="masks")(x)


# --------------------------------------------------------------------------------------------
# public builders


def build_blend2flux(
    input_shape: tuple[int, int, int] = STAMP_SHAPE,
    first_filters: int = 256,
    arch: ModelConfig | None = None,
    sky_sigma: float = SKY_SIGMA,
) -> keras.Model:
    """blend2flux: blend (counts) -> log10 fluxes of [central, companion].

    Args:
        input_shape: (H, W, 1) of the raw blends.
        first_filters: F of the paper's architecture (64, 256 or 512); used when ``arch`` is None.
        arch: the architecture (``configs.ModelConfig``); None gives the paper's with F filters.
        sky_sigma: sky noise in counts / px (the input scaling's unit).

    Returns:
        A model (batch, H, W, 1) counts -> (batch, 2) log10 flux (output ``flux``).
    """
    arch = arch or _paper_flux(first_filters)
    image = keras.Input(input_shape, name="blend")
    scaled, aperture = _scaled_input(image, arch, sky_sigma)
    if arch.flux_arch == "paper":
        features = _paper_flux_body(scaled, arch, "")
        reference = None
        if arch.reference:
            reference = Log10(name="log_aperture")(aperture)
    else:
        log_aperture = Log10(name="log_aperture")(aperture)
        extra = layers.Rescaling(1.0, offset=-1.5, name="log_aperture_feature")(log_aperture)
        features = _compact_flux_body(scaled, arch, "", extra)
        reference = log_aperture if arch.reference else None
    flux = _flux_head(features, reference, arch, "")
    return keras.Model(image, flux, name="blend2flux")


def build_unet(
    input_shape: tuple[int, int, int] = STAMP_SHAPE,
    depth: int = 5,
    first_filters: int = 32,
    arch: ModelConfig | None = None,
    sky_sigma: float = SKY_SIGMA,
) -> keras.Model:
    """U-Net: blend (counts) -> (batch, H, W, 2) fractional maps [central, companion].

    Two conv blocks per level (paper), max-pool down, transposed conv up, skip concatenation,
    sigmoid. ``depth`` and ``first_filters`` are used when ``arch`` is None (paper: 5, 32).
    """
    if arch is None:
        arch = ModelConfig(
            **{
                **_paper_flux(64).__dict__,
                "unet_depth": depth,
                "unet_filters": first_filters,
            }
        )
    image = keras.Input(input_shape, name="blend")
    scaled, _ = _scaled_input(image, arch, sky_sigma)
    return keras.Model(image, _unet_body(scaled, arch, scaled), name="unet")


def build_blend2mask2flux(
    input_shape: tuple[int, int, int] = STAMP_SHAPE,
    arch: ModelConfig | None = None,
    sky_sigma: float = SKY_SIGMA,
) -> keras.Model:
    """blend2mask2flux: U-Net maps, then a flux net on [scaled blend, map_cen, map_comp].

    Returns a model (batch, H, W, 1) counts -> {"masks": (batch, H, W, 2) in [0, 1],
    "flux": (batch, 2) log10 counts}. With ``arch.reference`` the flux net predicts log10 flux
    relative to the flux inside each predicted map (``MapFlux``). Unless ``arch.end_to_end``,
    the flux loss does not reach the U-Net (``StopGradient`` on the maps). ``arch`` None gives the
    paper's U-Net (depth 5, 32 filters) and a paper flux net with F = 64.
    """
    arch = arch or _paper_flux(64)
    image = keras.Input(input_shape, name="blend")
    scaled, aperture = _scaled_input(image, arch, sky_sigma)
    maps = _unet_body(scaled, arch, scaled)
    # Without end-to-end training the flux net reads the maps but its loss cannot reshape them:
    # the U-Net learns from the mask loss alone and its maps stay segmentation maps.
    flux_maps = maps if arch.end_to_end else StopGradient(name="maps_detached")(maps)
    stacked = layers.Concatenate(name="flux_input")([scaled, flux_maps])
    log_aperture = Log10(name="log_aperture")(aperture)
    map_flux = MapFlux(arch.split_aperture, name="map_flux")(image, flux_maps, aperture)
    log_maps = Log10(name="log_map_flux")(map_flux)
    if arch.flux_arch == "paper":
        features = _paper_flux_body(stacked, arch, "fluxnet_")
    else:
        extra = layers.Concatenate(name="fluxnet_extra")([log_aperture, log_maps])
        extra = layers.Rescaling(1.0, offset=-1.5, name="fluxnet_extra_scaled")(extra)
        features = _compact_flux_body(stacked, arch, "fluxnet_", extra)
    flux = _flux_head(features, log_maps if arch.reference else None, arch, "fluxnet_")
    return keras.Model(image, {"masks": maps, "flux": flux}, name="blend2mask2flux")


def build_model(config: CNNConfig, sky_sigma: float = SKY_SIGMA) -> keras.Model:
    """The model of a named configuration (see ``configs.get_config``)."""
    if config.model == "blend2flux":
        return build_blend2flux(STAMP_SHAPE, arch=config.arch, sky_sigma=sky_sigma)
    return build_blend2mask2flux(STAMP_SHAPE, arch=config.arch, sky_sigma=sky_sigma)


def unet_part(model: keras.Model) -> keras.Model:
    """The U-Net inside a blend2mask2flux model (shares its layers and weights)."""
    return keras.Model(model.input, model.get_layer("masks").output, name="unet")
