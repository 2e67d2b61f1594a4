"""The release contract: one typed description of a benchmark release, read by every stage.

A :class:`ReleaseSpec` fixes everything that determines a release (galaxy mix, blend counts, image
geometry, photometric zero point, sky noise, seed). ``release.toml`` in a release folder holds the
spec plus what generation measured (fingerprints of every array, number of galaxies redrawn).
Generator, loaders and scorer all read it from here, so there is one place for the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from challenge.contract._compat import tomllib
from challenge.contract.errors import ReleaseError

DEFAULT_SEED = 20190712
MORPHOLOGIES = ("bulge", "disc", "bulge+disc", "irregular")
SPLITS = ("train", "val", "test")
SOURCES = ("synthetic", "cosmos", "candels-npy", "fits-stamps")
# Sources of your own galaxies, with a declared instrument (challenge.pipeline.sources.instrument).
CUSTOM_SOURCES = ("candels-npy", "fits-stamps")
# How a release records its PSF: the synthetic model, a Gaussian of psf_fwhm, an image file.
PSF_KINDS = ("model", "gaussian", "file")
# Optical PSF models of synthetic releases (challenge.pipeline.sources.synthetic.release_psf).
PSF_MODELS = ("wfc3-f160w", "acs-f814w")
RELEASE_FILES = (
    "release.toml",
    "galaxies.ecsv",
    "pairs_train.ecsv",
    "pairs_val.ecsv",
    "pairs_test.ecsv",
    "galaxies.h5",
    "train.h5",
    "val.h5",
    "test_blends.h5",
    "test_truth.h5",
)
# Tables that are committed for frozen presets and compared by `blendbench verify`.
COMMITTED_TABLES = (
    "galaxies.ecsv",
    "pairs_train.ecsv",
    "pairs_val.ecsv",
    "pairs_test.ecsv",
)


MAX_RELEASE_BYTES = 2e12  # bytes on disk: beyond, no machine that runs the kit holds it


def estimated_bytes(spec: ReleaseSpec) -> float:
    """Bytes a release folder of ``spec`` takes, roughly: the blend images (float32) and masks
    (2 x uint8) of every split, the test truth masks again, and the parent galaxies' noiseless
    stamps (float32) and masks (uint8)."""
    pixels = float(spec.stamp_size) ** 2
    blends = sum(max(0, int(n)) for n in spec.n_blends.values())
    galaxies = spec.n_galaxies or 0
    return pixels * (6 * blends + 2 * max(0, int(spec.n_blends.get("test", 0))) + 5 * galaxies)


@dataclass(frozen=True)
class ReleaseSpec:
    """Everything that determines a release; the same spec gives the same release.

    Units: pixel_scale in arcsec/px, zero_point in AB mag for 1 count, sky_sigma in counts/px,
    magnitudes in AB, psf_fwhm in arcsec.
    """

    name: str
    version: str = "1.0"
    source: str = "synthetic"
    seed: int = DEFAULT_SEED
    morphology_counts: dict[str, int] = field(
        default_factory=lambda: {"bulge": 352, "disc": 433, "bulge+disc": 702, "irregular": 432}
    )
    n_blends: dict[str, int] = field(
        default_factory=lambda: {"train": 20_000, "val": 5_000, "test": 5_000}
    )
    test_fraction: float = 0.2
    stamp_size: int = 128
    pixel_scale: float = 0.06
    zero_point: float = 25.96
    sky_sigma: float = 0.012
    mag_min: float = 18.0
    mag_max: float = 23.5
    max_delta_mag: float = 2.0
    psf_fwhm: float = 0.18
    # Real-galaxy sources: where the input lives ("" = the example shipped with the kit) and an
    # optional cap on the number of input galaxies (0 = all).
    source_path: str = ""
    max_galaxies: int = 0
    # Custom sources (challenge.pipeline.sources.instrument): pixel scale (″/px) and AB zero
    # point of the input stamps (0 = the release's: stamps are resampled / rescaled onto the
    # release grid), and the declared PSF: psf_kind "model", "gaussian" (FWHM psf_fwhm) or
    # "file" (psf_file).
    input_pixel_scale: float = 0.0
    input_zero_point: float = 0.0
    psf_kind: str = "model"
    psf_file: str = ""
    # Shift tracks (test-only releases, see challenge.pipeline.tracks): the release whose test
    # galaxies and pairs this one shares ("" = a release of its own), and what the track changes.
    base: str = ""
    psf_model: str = "wfc3-f160w"
    psf_dilation: float = 1.0
    clumps: bool = False
    max_distance_r_e: float = 0.0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ReleaseError(
                f"release {self.name!r}: unknown source {self.source!r}; choose one of "
                f"{', '.join(SOURCES)}"
            )
        if self.source != "synthetic" and self.source != "cosmos" and not self.source_path:
            raise ReleaseError(
                f"release {self.name!r}: source {self.source!r} needs an input folder (--input)"
            )
        unknown = set(self.morphology_counts) - set(MORPHOLOGIES)
        if unknown:
            raise ReleaseError(f"release {self.name!r}: unknown morphologies {sorted(unknown)}")
        if set(self.n_blends) != set(SPLITS):
            raise ReleaseError(f"release {self.name!r}: n_blends needs keys {SPLITS}")
        if not 0 < self.test_fraction < 1:
            raise ReleaseError(f"release {self.name!r}: test_fraction must be in (0, 1)")
        if self.psf_model not in PSF_MODELS:
            raise ReleaseError(
                f"release {self.name!r}: unknown psf_model {self.psf_model!r}; choose one of "
                f"{', '.join(PSF_MODELS)}"
            )
        if self.base and (self.n_blends["train"] or self.n_blends["val"]):
            raise ReleaseError(f"release {self.name!r}: a shift track holds test blends only")
        if any(not n >= 0 for n in self.n_blends.values()):
            raise ReleaseError(f"release {self.name!r}: n_blends {self.n_blends} must be >= 0")
        if self.psf_kind not in PSF_KINDS or (self.psf_kind == "file") != bool(self.psf_file):
            raise ReleaseError(
                f"release {self.name!r}: psf_kind {self.psf_kind!r} with psf_file "
                f"{self.psf_file!r}; use one of {', '.join(PSF_KINDS)}, a file only with 'file'"
            )
        if self.input_pixel_scale < 0 or self.sky_sigma <= 0 or self.max_delta_mag <= 0:
            raise ReleaseError(
                f"release {self.name!r}: input_pixel_scale must be >= 0, sky_sigma and "
                "max_delta_mag > 0"
            )
        numbers = {"sky_sigma": self.sky_sigma, "max_delta_mag": self.max_delta_mag,
                   "input_pixel_scale": self.input_pixel_scale}
        bad = [k for k, v in numbers.items() if not math.isfinite(v)]
        if bad:
            raise ReleaseError(f"release {self.name!r}: {', '.join(bad)} must be finite")
        if not 0 <= self.seed < 2**63:
            raise ReleaseError(f"release {self.name!r}: seed {self.seed} must be a whole number "
                               "from 0 to 2**63 - 1")
        if not 8 <= self.stamp_size <= 1024:
            raise ReleaseError(f"release {self.name!r}: stamp_size {self.stamp_size} px must be "
                               "from 8 to 1024")
        if estimated_bytes(self) > MAX_RELEASE_BYTES:
            raise ReleaseError(
                f"release {self.name!r}: {self.n_galaxies or 0:,} galaxies and "
                f"{sum(self.n_blends.values()):,} blends of {self.stamp_size} px would take "
                f"about {estimated_bytes(self) / 1e12:,.1f} TB; a release may take at most "
                f"{MAX_RELEASE_BYTES / 1e12:g} TB (ask for fewer blends or galaxies)")

    @property
    def is_track(self) -> bool:
        """A test-only release sharing the test galaxies and pairs of ``base``."""
        return bool(self.base)

    @property
    def n_galaxies(self) -> int | None:
        """Parent galaxies to make (synthetic), or None when the input decides (real)."""
        return sum(self.morphology_counts.values()) if self.source == "synthetic" else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


PRESETS: dict[str, ReleaseSpec] = {
    "v1": ReleaseSpec(name="v1"),
    "mini": ReleaseSpec(
        name="mini",
        seed=DEFAULT_SEED + 1,
        morphology_counts={"bulge": 37, "disc": 45, "bulge+disc": 73, "irregular": 45},
        n_blends={"train": 600, "val": 200, "test": 200},
    ),
    # Real HST/ACS COSMOS galaxies (the 100-galaxy example shipped with the kit): a small
    # real-galaxy test track for methods trained on the synthetic releases.
    "cosmos-example": ReleaseSpec(
        name="cosmos-example",
        source="cosmos",
        seed=DEFAULT_SEED + 2,
        morphology_counts={},
        n_blends={"train": 400, "val": 100, "test": 500},
    ),
}

# Distribution-shift tracks: v1's test galaxies and pairs under one changed condition each
# (challenge.pipeline.tracks builds them). One line per track says what changes.
TRACK_BLENDS = 2_000
TRACK_SHIFTS: dict[str, tuple[str, dict[str, Any]]] = {
    "v1-psf": (
        "sharper PSF: ACS/WFC F814W-like (Airy at 814 nm ⊗ 0.05″ jitter), FWHM 0.11″ vs 0.18″",
        {"psf_model": "acs-f814w", "psf_fwhm": 0.11},
    ),
    "v1-psf-broad": (
        "broader PSF: v1's dilated by 1.5, FWHM 0.26″ vs 0.18″",
        {"psf_dilation": 1.5, "psf_fwhm": 0.26},
    ),
    "v1-noise": ("noisier sky: σ × 2 (0.024 counts/px), a shallower survey", {"sky_sigma": 0.024}),
    "v1-noise-low": (
        "quieter sky: σ × 0.5 (0.006 counts/px), a deeper survey",
        {"sky_sigma": 0.006},
    ),
    "v1-faint": (
        "faint galaxies: 23.5–25.5 mag instead of 18–23.5 (sizes follow the size–magnitude "
        "relation)",
        {"mag_min": 23.5, "mag_max": 25.5},
    ),
    "v1-clumpy": (
        "clumpy galaxies: 30–60% of every galaxy's flux in 20–60 star-forming knots",
        {"clumps": True, "version": "1.1"},
    ),
    "v1-close": (
        "close pairs: centre distance 1–1.5 R_e of the larger galaxy (v1: up to 4 R_e of the "
        "smaller)",
        {"max_distance_r_e": 1.5},
    ),
}
for _name, (_, _changes) in TRACK_SHIFTS.items():
    PRESETS[_name] = dataclasses.replace(
        PRESETS["v1"],
        name=_name,
        base="v1",
        n_blends={"train": 0, "val": 0, "test": TRACK_BLENDS},
        **_changes,
    )


def preset(name: str) -> ReleaseSpec:
    """The frozen spec of a named release (``v1``, ``mini``, a shift track...)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ReleaseError(
            f"unknown release {name!r}: choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def committed_dir(name: str) -> Path | None:
    """Folder of the tables committed in the package for a frozen release, if any."""
    path = Path(str(resources.files("challenge") / "releases" / name))
    return path if (path / "release.toml").is_file() else None


@dataclass(frozen=True)
class ReleaseInfo:
    """The content of ``release.toml``: the spec plus what generation measured.

    ``unpaired`` ([unpaired] table: galaxy split -> ids, source ids for real galaxies) lists the
    galaxies left out because no galaxy of their split lies within |Δm| < max_delta_mag;
    ``adjustments`` ([adjustments] table, keys in
    ``challenge.pipeline.catalogue.ParentCatalogue``) what generation changed in a custom source's
    input. Both are written only when not empty.
    """

    spec: ReleaseSpec
    counts: dict[str, int]
    fingerprints: dict[str, dict[str, Any]]
    n_redrawn: int = 0
    generator: str = ""
    unpaired: dict[str, list[str]] = field(default_factory=dict)
    adjustments: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str:
        doc = {
            "release": {**self.spec.to_dict(), "generator": self.generator},
            "counts": self.counts,
            "n_redrawn": self.n_redrawn,
            **({"unpaired": self.unpaired} if self.unpaired else {}),
            **({"adjustments": self.adjustments} if self.adjustments else {}),
        }
        return tomli_w.dumps(doc) + _fingerprints_toml(self.fingerprints)

    @classmethod
    def read(cls, path: Path) -> ReleaseInfo:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
            rel = dict(doc["release"])
            generator = rel.pop("generator", "")
            return cls(
                spec=ReleaseSpec.from_dict(rel),
                counts=dict(doc.get("counts", {})),
                fingerprints=dict(doc.get("fingerprints", {})),
                n_redrawn=int(doc.get("n_redrawn", 0)),
                generator=generator,
                unpaired={k: list(v) for k, v in doc.get("unpaired", {}).items()},
                adjustments=dict(doc.get("adjustments", {})),
            )
        except FileNotFoundError:
            raise ReleaseError(
                f"{path}: no release.toml here; generate a release with "
                "`blendbench generate --release v1 --out DIR`"
            ) from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ReleaseError(
                f"{path}: not a valid release.toml ({err}); regenerate the release"
            ) from None


def _inline(value: Any) -> str:
    """A TOML value on one line (arrays too: ``[5000, 128, 128]``)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split(" = ", 1)[1].rstrip("\n")


def _fingerprints_toml(fingerprints: dict[str, dict[str, Any]]) -> str:
    """The ``[fingerprints."FILE:DATASET"]`` tables, one line per key: a fingerprint holds a few
    dozen numbers, and release.toml stays short enough to read and to commit."""
    out = []
    for key, fp in fingerprints.items():
        header = tomli_w.dumps({key: 0}).split(" = ", 1)[0]
        out.append(f"\n[fingerprints.{header}]\n")
        out += [f"{k} = {_inline(v)}\n" for k, v in fp.items()]
    return "".join(out)


def resolve_release(data: str | Path) -> tuple[Path, ReleaseInfo]:
    """A release folder from a path, or the committed tables of a frozen release by name.

    ``data`` is either a folder written by ``blendbench generate`` or the name of a release whose
    tables ship with the package (``v1``, ``mini``): the latter is enough to score fluxes. A
    folder of a frozen release is checked against the shipped release first
    (:func:`check_frozen_truth`): its spec, test pair table and test truth arrays.

    Raises:
        ReleaseError: an unknown name, a folder without release.toml, or a frozen release whose
            test truth differs from the shipped one.
    """
    path = Path(data)
    if (path / "release.toml").is_file():
        info = ReleaseInfo.read(path / "release.toml")
        check_frozen_truth(path, info)
        return path, info
    committed = committed_dir(str(data)) if str(data) in PRESETS else None
    if committed is not None:
        return committed, ReleaseInfo.read(committed / "release.toml")
    raise ReleaseError(
        f"{data}: not a release folder (no release.toml) nor a release shipped with the kit "
        f"({', '.join(sorted(PRESETS))}); generate one with `blendbench generate --out DIR`"
    )


def blends_file(folder: Path | str, split: str) -> Path:
    """The HDF5 file holding the blend images of ``split`` (test inputs live apart from truth)."""
    if split not in SPLITS:
        raise ReleaseError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    folder = Path(folder)
    path = folder / ("test_blends.h5" if split == "test" else f"{split}.h5")
    if not path.is_file():
        raise ReleaseError(
            f"{path}: missing; this folder holds no generated {split} blends "
            "(run `blendbench generate --release NAME --out DIR` first)"
        )
    return path


def labels_file(folder: Path | str, split: str) -> Path:
    """The HDF5 file holding the truth (``flux``, ``masks``) of ``split``: ``test_truth.h5`` for
    test, the blends' own file for train and val."""
    if split == "test":
        path = Path(folder) / "test_truth.h5"
        if not path.is_file():
            raise ReleaseError(
                f"{path}: missing; this folder holds no generated test truth "
                "(run `blendbench generate --release NAME --out DIR` first)"
            )
        return path
    return blends_file(folder, split)


def table_file(folder: Path | str, name: str) -> Path:
    """The file of the release table ``name`` in ``folder``: ``name``, or ``name.gz`` where only
    that exists (the shipped training and validation pair tables are gzip-compressed)."""
    path = Path(folder) / name
    packed = path.with_name(path.name + ".gz")
    return packed if not path.exists() and packed.is_file() else path


def read_table(folder: Path | str, name: str):
    """Read one of the release's ECSV tables (an astropy ``Table``; ``name.gz`` where only that
    exists), with a clear error when it is missing or damaged."""
    from astropy.table import Table

    path = table_file(folder, name)
    try:
        return Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise ReleaseError(f"{path}: missing; regenerate the release") from None
    except Exception as err:  # astropy raises many types for a damaged table
        raise ReleaseError(f"{path}: unreadable table ({err}); regenerate the release") from None


# --------------------------------------------------------------------------------------------
# the frozen truth

TABLE_RTOL = 1e-6  # float columns of a regenerated table may differ by this much (relative)
# test_truth.h5 datasets and the pairs_test.ecsv columns they hold, [central, companion].
TRUTH_COLUMNS = {
    "blend_id": ("blend_id",),
    "flux": ("flux_central", "flux_companion"),
    "model_flux": ("model_flux_central", "model_flux_companion"),
    "mag": ("mag_central", "mag_companion"),
    "r_e": ("r_e_central", "r_e_companion"),
    "distance_px": ("distance_px",),
    "morphology": ("morph_central", "morph_companion"),
}


def _shown(value) -> str:
    return f"{value:.10g}" if isinstance(value, float) else repr(value)


def table_difference(mine, ref) -> str | None:
    """How astropy table ``mine`` differs from ``ref``, or None when they agree.

    Float columns agree within a relative :data:`TABLE_RTOL`, others exactly. The answer names the
    first differing column and its first differing row (with its ``blend_id`` or
    ``galaxy_id``).
    """
    import numpy as np

    if mine.colnames != ref.colnames:
        gone = [c for c in ref.colnames if c not in mine.colnames]
        new = [c for c in mine.colnames if c not in ref.colnames]
        what = (f"no column {', '.join(gone)}" if gone else
                f"unexpected column {', '.join(new)}" if new else "columns in another order")
        return what
    if len(mine) != len(ref):
        return f"{len(mine)} rows, expected {len(ref)}"
    for col in mine.colnames:
        a, b = np.asarray(mine[col]), np.asarray(ref[col])
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            try:
                same = np.isclose(a.astype(float), b.astype(float), rtol=TABLE_RTOL, atol=1e-12,
                                  equal_nan=True)
            except (TypeError, ValueError):
                same = np.zeros(len(a), dtype=bool)
        else:
            same = a.astype(str) == b.astype(str)
        if not np.all(same):
            row = int(np.flatnonzero(~same)[0])
            key = next((k for k in ("blend_id", "galaxy_id") if k in ref.colnames), None)
            where = f"row {row}" + (f", {key} {ref[key][row]}" if key else "")
            return (f"column '{col}' differs in {int(np.sum(~same))} of {len(a)} rows "
                    f"(first: {where}: {_shown(a[row].item())}, expected "
                    f"{_shown(b[row].item())})")
    return None


def spec_difference(mine: ReleaseSpec, ref: ReleaseSpec) -> str | None:
    """The first spec field (``sky_sigma 0.02, expected 0.012``) where two specs differ."""
    for f in dataclasses.fields(ReleaseSpec):
        a, b = getattr(mine, f.name), getattr(ref, f.name)
        if a != b:
            return f"{f.name} {a!r}, expected {b!r}"
    return None


def truth_arrays_difference(path: Path, table) -> str | None:
    """How the small datasets of ``test_truth.h5`` (all but the masks) differ from the values of
    the pair table ``table`` (within a relative :data:`TABLE_RTOL`), or None."""
    import h5py
    import numpy as np

    try:
        with h5py.File(path, "r") as f:
            if "delta_mag" not in f or f["delta_mag"].shape != (len(table),) or not np.allclose(
                f["delta_mag"][()], np.asarray(table["mag_central"] - table["mag_companion"]),
                rtol=TABLE_RTOL, atol=1e-9,
            ):
                return "dataset 'delta_mag' missing or not mag_central - mag_companion"
            for name, cols in TRUTH_COLUMNS.items():
                if name not in f:
                    return f"dataset '{name}' missing"
                ds = f[name]
                expect = (len(table), *((len(cols),) if len(cols) > 1 else ()))
                if ds.shape != expect:
                    return f"dataset '{name}' has shape {ds.shape}, expected {expect}"
                got = ds[()]
                ref = np.stack([np.asarray(table[c]) for c in cols], axis=-1).reshape(expect)
                if name == "morphology":
                    same = np.asarray(got).astype(str) == ref.astype(str)
                elif name == "blend_id":
                    same = np.asarray(got) == ref
                else:
                    same = np.isclose(np.asarray(got, dtype=float), ref.astype(float),
                                      rtol=TABLE_RTOL, atol=1e-12)
                if not np.all(same):
                    row = int(np.flatnonzero(~np.asarray(same).reshape(len(table), -1)
                                             .all(axis=1))[0])
                    n_bad = int(np.sum(~same))
                    return (f"dataset '{name}' differs from pairs_test.ecsv in {n_bad} "
                            f"value{'s' if n_bad > 1 else ''} (first: blend_id "
                            f"{table['blend_id'][row]})")
    except OSError as err:
        return f"unreadable HDF5 ({str(err).splitlines()[0]})"
    except (AttributeError, TypeError, ValueError) as err:  # a group, a compound, an odd shape
        return f"truth datasets unreadable ({type(err).__name__}: {str(err)[:100]})"
    return None


def check_frozen_truth(folder: Path | str, info: ReleaseInfo) -> None:
    """Check a folder of a frozen release against the release shipped with the kit.

    Compares what scores depend on, and only that, so it is fast enough to run before every
    score: the spec in ``release.toml``, ``pairs_test.ecsv`` (the truth fluxes, magnitudes,
    sizes, distances and morphologies; byte for byte first, then column by column within a
    relative :data:`TABLE_RTOL`) and the small datasets of ``test_truth.h5`` (every one but the
    masks, which ``blendbench verify`` checks). A release whose name is not shipped is left
    alone.

    Raises:
        ReleaseError: one line naming the file, what differs and the fix.
    """
    from astropy.table import Table

    folder = Path(folder)
    name = info.spec.name
    frozen = committed_dir(name) if name in PRESETS else None
    if frozen is None or frozen.resolve() == folder.resolve():
        return
    fix = f"regenerate it with `blendbench generate --release {name} --out DIR`"
    frozen_info = ReleaseInfo.read(frozen / "release.toml")
    why = spec_difference(info.spec, frozen_info.spec)
    if why:
        raise ReleaseError(f"{folder / 'release.toml'}: not the frozen {name} shipped with "
                           f"blendbench ({why}); {fix}, or give a release of your own another "
                           "name")
    mine, ref = folder / "pairs_test.ecsv", frozen / "pairs_test.ecsv"
    if not mine.is_file():
        return  # no test truth here (a copy of the training files): nothing to score against
    table = None
    try:
        same_bytes = mine.read_bytes() == ref.read_bytes()
    except OSError as err:
        raise ReleaseError(f"{mine}: cannot be read ({err.strerror}); {fix}") from None
    if not same_bytes:
        table = read_table(folder, "pairs_test.ecsv")
        why = table_difference(table, Table.read(ref, format="ascii.ecsv"))
        if why:
            raise ReleaseError(f"{mine}: the test truth differs from the frozen {name} shipped "
                               f"with blendbench ({why}); {fix}")
    truth = folder / "test_truth.h5"
    if truth.is_file():
        why = truth_arrays_difference(truth, table if table is not None else
                                       Table.read(ref, format="ascii.ecsv"))
        if why:
            raise ReleaseError(f"{truth}: {why}: not the frozen {name} shipped with "
                               f"blendbench; {fix}")
