"""The release contract: one typed description of a benchmark release, read by every stage.

A :class:`ReleaseSpec` fixes everything that determines a release (galaxy mix, blend counts, image
geometry, photometric zero point, sky noise, seed). ``release.toml`` in a release folder holds the
spec plus what generation measured (fingerprints of every array, number of galaxies redrawn).
Generator, loaders and scorer all read it from here, so there is one place for the numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from challenge.errors import ReleaseError

DEFAULT_SEED = 20190712
MORPHOLOGIES = ("bulge", "disc", "bulge+disc", "irregular")
SPLITS = ("train", "val", "test")
SOURCES = ("synthetic", "cosmos", "candels-npy", "fits-stamps")
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


def preset(name: str) -> ReleaseSpec:
    """The frozen spec of a named release (``v1`` or ``mini``)."""
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
    """The content of ``release.toml``: the spec plus what generation measured."""

    spec: ReleaseSpec
    counts: dict[str, int]
    fingerprints: dict[str, dict[str, Any]]
    n_redrawn: int = 0
    generator: str = ""

    def to_toml(self) -> str:
        doc = {
            "release": {**self.spec.to_dict(), "generator": self.generator},
            "counts": self.counts,
            "n_redrawn": self.n_redrawn,
            "fingerprints": self.fingerprints,
        }
        return tomli_w.dumps(doc)

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
            )
        except FileNotFoundError:
            raise ReleaseError(
                f"{path}: no release.toml here; generate a release with "
                "`blendbench generate --release v1 --out DIR`"
            ) from None
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as err:
            raise ReleaseError(
                f"{path}: not a valid release.toml ({err}); regenerate the release"
            ) from None


def resolve_release(data: str | Path) -> tuple[Path, ReleaseInfo]:
    """A release folder from a path, or the committed tables of a frozen release by name.

    ``data`` is either a folder written by ``blendbench generate`` or the name of a release whose
    tables ship with the package (``v1``, ``mini``): the latter is enough to score fluxes.
    """
    path = Path(data)
    if (path / "release.toml").is_file():
        return path, ReleaseInfo.read(path / "release.toml")
    committed = committed_dir(str(data)) if str(data) in PRESETS else None
    if committed is not None:
        return committed, ReleaseInfo.read(committed / "release.toml")
    raise ReleaseError(
        f"{data}: not a release folder (no release.toml) nor a release shipped with the kit "
        f"({', '.join(sorted(PRESETS))}); generate one with `blendbench generate --out DIR`"
    )
