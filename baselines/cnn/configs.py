"""Named configurations of the CNN baselines: the paper's sizes and compact CPU sizes.

A :class:`CNNConfig` holds everything that determines a run besides the data and the seed: the
architecture (:class:`ModelConfig`) and the optimisation (:class:`TrainConfig`). ``paper``
configs reproduce Boucaud et al. (2019) (sizes, MAPE loss, Adam 1e-4, batch 32,
ReduceLROnPlateau, early stopping) and are meant for a GPU; ``compact`` configs train on two
CPU cores in about 1 h (blend2flux) and 2 h (blend2mask2flux); ``compact-end-to-end`` is
blend2mask2flux with the paper's end-to-end second stage; ``tiny`` is for tests. Any other
configuration is a TOML file read by :func:`read_config` (``blendbench train --config
FILE.toml``); the training experiments behind the robust references are kept so, in
``docs/experiments/configs/``.

Input scaling and target parameterisation (all configs; applied inside the model, see
``baselines.cnn.models``): the network reads raw counts and computes
``asinh(x / sky_sigma) / 3`` (unit noise near zero, logarithmic for bright cores). Compact
configs add ``100 x / A`` (pixels as a fraction of the blend's aperture flux ``A``) and two
coordinate channels, and predict ``log10 flux - log10 A``: a ratio of order one whatever the
brightness, which keeps training stable across the 5 magnitudes of the release. The flux loss is
the absolute percentage error computed from the log10 prediction, i.e. MAPE itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from challenge.contract._compat import tomllib
from challenge.contract.errors import BlendbenchError

MODELS = ("blend2flux", "blend2mask2flux")


class ConfigError(BlendbenchError, ValueError):
    """An unknown model or configuration name, or an inconsistent option."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model.

    Attributes:
        flux_arch: ``"paper"`` (5 conv 3x3 ReLU + max-pool, flatten, dense) or ``"compact"``
            (strided entry, residual stages with batch norm, global + flattened head).
        flux_filters: filters per conv layer / stage of the flux net.
        dense_units: hidden dense layers of the flux net's head.
        entry_stride: the compact flux net's entry convolution stride (2: the rest of the
            network works at 64 x 64 px).
        coords: add two coordinate channels ((y - 64) / 64, (x - 64) / 64) to the input.
        linear: add the linear channel 100 x / A (A = aperture flux of the blend, counts).
        reference: predict log10 flux relative to the aperture flux (blend2flux) or to the
            flux inside each predicted map (blend2mask2flux).
        batch_norm: batch normalisation after every convolution.
        unet_depth: U-Net levels (the paper: 5).
        unet_filters: filters of the U-Net's first level, doubled at every level (paper: 32).
        unet_convs: conv blocks per U-Net level (paper: 2).
        unet_entry_stride: 2 runs the U-Net at 64 x 64 px; its maps are upsampled back to
            128 x 128 px with a transposed convolution and a full-resolution refinement conv.
        unet_max_filters: cap on the U-Net's filters per level.
        end_to_end: blend2mask2flux's flux loss trains the U-Net too (the paper's end-to-end
            stage). False stops the flux loss's gradient at the maps: in the second stage the
            U-Net keeps learning from the mask loss alone while the flux net learns from the
            flux loss, so the maps stay segmentation maps (with the paper's scheme the mean
            IoU fell from 0.80 to 0.65 on v1; the paper saw 0.82 -> 0.70). With the two
            parameter sets disjoint, Adam makes ``mask_weight`` matter only for choosing the
            best epoch (validation loss).
        noise_from_image: measure each blend's sky noise (robust scatter of neighbouring pixel
            differences) and use it, instead of the training release's sky sigma, for the
            input scaling and the aperture flux: the network reads every survey depth in units
            of its own noise.
        noise_floor: with ``noise_from_image``, the lowest noise the network reads, as a
            multiple of the training release's sky sigma (0: none). The re-observation adds
            noise and never removes it, so a network trained on v1 has never read a sky quieter
            than v1's; with a floor of 1 a blend from a deeper survey is read in v1's noise
            units (as a v1 blend with less noise) instead of as brighter than any training blend.
        split_aperture: blend2mask2flux's reference is the blend's aperture flux split in the
            proportions of the fluxes inside the two maps, instead of the flux inside each map
            (``models.MapFlux``): the maps set the split, not the blend's flux.
    """

    flux_arch: str = "compact"
    flux_filters: tuple[int, ...] = (16, 32, 48, 96, 128)
    dense_units: tuple[int, ...] = (128,)
    entry_stride: int = 2
    coords: bool = True
    linear: bool = True
    reference: bool = True
    batch_norm: bool = True
    unet_depth: int = 4
    unet_filters: int = 16
    unet_convs: int = 1
    unet_entry_stride: int = 2
    unet_max_filters: int = 512
    end_to_end: bool = True
    noise_from_image: bool = False
    noise_floor: float = 0.0
    split_aperture: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one run.

    Attributes:
        batch_size: blends per step (the paper: 32).
        learning_rate: Adam's (peak) learning rate (the paper: 1e-4).
        schedule: ``"plateau"`` (ReduceLROnPlateau on val loss, the paper's) or ``"cosine"``
            (linear warm-up over ``warmup_epochs`` then cosine decay to zero at the planned last
            epoch; with a time budget the plan is set from the first epoch's duration).
        epochs: maximum epochs (both stages together for blend2mask2flux).
        lr_factor, lr_patience: ReduceLROnPlateau's factor and patience (epochs).
        stop_patience: early stopping patience on the validation loss (epochs; 0 disables).
        loss: flux loss, ``"mape"`` (absolute percentage error) or ``"log_mae"`` (mean absolute
            log10 error, a smooth approximation of MAPE / ln 10).
        augment: random dihedral transforms about pixel (64, 64) of the training blends.
        mask_weight: weight of the mask loss (binary cross-entropy) in end-to-end training.
        mask_stage_fraction: share of the epochs (or of the time budget) spent pre-training
            the U-Net of blend2mask2flux on the masks alone.
        warmup_epochs: warm-up of the cosine schedule.
        reference_batch_size: the batch size ``learning_rate`` is tuned for; a run with another
            batch size scales it by sqrt(batch_size / reference_batch_size) (the square-root
            rule for Adam: the gradient noise per step falls as 1 / sqrt(batch)).
        resample_fraction, psf_sigma_px, shift_px, faint_fraction, faint_mag, noise_fraction,
            noise_factor, clump_fraction, clump_flux, clump_count, knot_psf_sigma_px,
            knot_light_power, knot_truth, knot_psf, knot_light_share, quiet_fraction,
            quiet_factor: the random re-observation of training blends on the accelerator
            (``baselines.cnn.augment.AugmentSpec``; all shares 0 leaves dihedral transforms
            only).
    """

    batch_size: int = 32
    learning_rate: float = 1e-4
    schedule: str = "plateau"
    epochs: int = 200
    lr_factor: float = 0.5
    lr_patience: int = 5
    stop_patience: int = 12
    loss: str = "mape"
    augment: bool = True
    mask_weight: float = 0.1
    mask_stage_fraction: float = 0.3
    warmup_epochs: int = 1
    reference_batch_size: int = 32
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

    def scaled_learning_rate(self) -> float:
        """Peak learning rate for ``batch_size`` (square-root rule, see the class docstring)."""
        return self.learning_rate * (self.batch_size / self.reference_batch_size) ** 0.5


@dataclass(frozen=True)
class CNNConfig:
    """A named model + training configuration."""

    name: str
    model: str
    arch: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.train.schedule not in ("plateau", "cosine"):
            raise ConfigError(f"config {self.name}: schedule must be 'plateau' or 'cosine'")
        if self.train.loss not in ("mape", "log_mae"):
            raise ConfigError(f"config {self.name}: loss must be 'mape' or 'log_mae'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CNNConfig:
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["arch"].items()}
        train = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["train"].items()}
        return cls(
            name=doc["name"],
            model=doc["model"],
            arch=ModelConfig(**arch),
            train=TrainConfig(**train),
        )

    def with_epochs(self, epochs: int) -> CNNConfig:
        return replace(self, train=replace(self.train, epochs=epochs))

    def with_batch_size(self, batch_size: int) -> CNNConfig:
        """The same run with another batch size (the learning rate follows, see TrainConfig)."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be a positive number of blends, not {batch_size}")
        return replace(self, train=replace(self.train, batch_size=int(batch_size)))


def _paper_flux(first_filters: int) -> ModelConfig:
    f = first_filters
    return ModelConfig(
        flux_arch="paper",
        flux_filters=(f, f, 2 * f, 2 * f, 4 * f),
        dense_units=(f, f // 2, f // 4),
        coords=False,
        linear=False,
        reference=False,
        batch_norm=False,
        unet_depth=5,
        unet_filters=32,
        unet_convs=2,
        unet_entry_stride=1,
    )


PAPER_TRAIN = TrainConfig()
COMPACT_TRAIN = TrainConfig(
    learning_rate=2e-3,
    schedule="cosine",
    epochs=40,
    stop_patience=0,
    warmup_epochs=1,
)

CONFIGS: dict[tuple[str, str], CNNConfig] = {
    ("blend2flux", "paper"): CNNConfig("paper", "blend2flux", _paper_flux(256), PAPER_TRAIN),
    ("blend2flux", "compact"): CNNConfig("compact", "blend2flux", ModelConfig(), COMPACT_TRAIN),
    ("blend2mask2flux", "paper"): CNNConfig(
        "paper", "blend2mask2flux", _paper_flux(64), PAPER_TRAIN
    ),
    ("blend2mask2flux", "compact"): CNNConfig(
        "compact",
        "blend2mask2flux",
        ModelConfig(end_to_end=False),
        replace(COMPACT_TRAIN, epochs=30, mask_stage_fraction=0.2),
    ),
    # The paper's end-to-end second stage on the compact architecture (better flux, worse maps).
    ("blend2mask2flux", "compact-end-to-end"): CNNConfig(
        "compact-end-to-end",
        "blend2mask2flux",
        ModelConfig(end_to_end=True),
        replace(COMPACT_TRAIN, epochs=30, mask_stage_fraction=0.25),
    ),
}

# A few-thousand-parameter network of the compact design, for tests and quick demos.
TINY_ARCH = ModelConfig(
    flux_filters=(8, 8, 16, 16, 16), dense_units=(16,), unet_depth=3, unet_filters=8
)
CONFIGS[("blend2flux", "tiny")] = CNNConfig("tiny", "blend2flux", TINY_ARCH, COMPACT_TRAIN)
CONFIGS[("blend2mask2flux", "tiny")] = CNNConfig(
    "tiny",
    "blend2mask2flux",
    replace(TINY_ARCH, end_to_end=False),
    replace(COMPACT_TRAIN, mask_stage_fraction=0.5),
)


def get_config(model: str, name: str) -> CNNConfig:
    """The named configuration of ``model`` (``compact``, ``paper``, ``tiny``, ...)."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    try:
        return CONFIGS[(model, name)]
    except KeyError:
        names = ", ".join(n for m, n in CONFIGS if m == model)
        raise ConfigError(f"unknown {model} config {name!r}: choose one of {names}, or give a "
                          "FILE.toml (docs/experiments/configs/ holds examples)") from None


def read_config(path: str | Path, model: str | None = None) -> CNNConfig:
    """A configuration from a TOML file (the layout of :meth:`CNNConfig.to_dict`: ``name``,
    ``model``, ``[arch]`` and ``[train]`` with :class:`ModelConfig` and :class:`TrainConfig`
    fields; fields left out take their defaults).

    Raises:
        ConfigError: one line naming the file and the field: unreadable TOML, another model than
            ``model``, an unknown field or a value of the wrong kind.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: not a readable TOML config ({str(err).splitlines()[0]}); "
                          "see docs/experiments/configs/ for the layout") from None
    return config_from_doc(doc, str(path), model)


def config_from_doc(doc: dict[str, Any], where: str, model: str | None = None) -> CNNConfig:
    """A configuration from a parsed TOML table (``name``, ``model``, ``[arch]``, ``[train]``).

    Raises:
        ConfigError: one line starting with ``where``: another model than ``model``, an
            unknown field or a value of the wrong kind.
    """
    for key in ("name", "model"):
        if not isinstance(doc.get(key), str):
            raise ConfigError(f"{where}: field {key!r} missing or not text; add {key} = \"...\"")
    if model is not None and doc["model"] != model:
        raise ConfigError(f"{where}: a {doc['model']} config, not {model}; train it with "
                          f"`blendbench train {doc['model']}`")
    parts = {}
    for table, cls in (("arch", ModelConfig), ("train", TrainConfig)):
        values = doc.get(table, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{table}] must be a table of {cls.__name__} fields")
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: [{table}] {key}: not a {cls.__name__} field of this "
                                  "version (a recipe of an older version runs at its git tag)")
            default = getattr(cls(), key)
            if isinstance(default, tuple) != isinstance(value, list) or (
                    isinstance(default, bool) != isinstance(value, bool)) or (
                    isinstance(default, str) != isinstance(value, str)):
                raise ConfigError(f"{where}: [{table}] {key} = {value!r}: expected a value like "
                                  f"{default!r}")
        parts[table] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return CNNConfig(name=doc["name"], model=doc["model"], arch=ModelConfig(**parts["arch"]),
                     train=TrainConfig(**parts["train"]))


def load_config(model: str, name: str) -> CNNConfig:
    """``name`` as a registered config of ``model``, or as a TOML file when it ends in .toml."""
    if name.endswith(".toml"):
        return read_config(name, model)
    return get_config(model, name)
