"""Real-galaxy stamps from files: the paper's ``candels-npy`` archive and ``fits-stamps`` folders.

Real stamps already carry noise. Each :class:`RealStamp` states the noise variance it holds
(estimated from its sky pixels), so the release tops it up to its own sky level instead of
adding a second full layer of noise. Stamps must be on the release grid (stamp_size² pixels at
the release pixel scale, in counts at the release zero point) with the galaxy centred on pixel
(size // 2, size // 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table

from challenge.errors import SourceError
from challenge.photometry import mag_to_flux

# The paper's galtype labels and common spellings -> the release's morphologies.
MORPHOLOGY_ALIASES = {
    "bulge": "bulge",
    "sph": "bulge",
    "spheroid": "bulge",
    "elliptical": "bulge",
    "disc": "disc",
    "disk": "disc",
    "bulge+disc": "bulge+disc",
    "sphd": "bulge+disc",
    "disk+bulge": "bulge+disc",
    "disc+bulge": "bulge+disc",
    "bulge+disk": "bulge+disc",
    "irregular": "irregular",
    "irr": "irregular",
}


@dataclass
class RealStamp:
    """One real galaxy on the release grid.

    Attributes:
        source_id: the galaxy's identifier in the input catalogue.
        stamp: (H, W) float32 image in counts, galaxy centred on (H // 2, W // 2).
        noise_var: variance (counts²/px) of the noise already in ``stamp``.
        catalogue_flux: the input catalogue's flux (counts at the release zero point).
        morphology: one of ``challenge.release.MORPHOLOGIES``.
        r_e_px: half-light radius from the catalogue (px), or None to measure it.
    """

    source_id: str
    stamp: np.ndarray
    noise_var: float
    catalogue_flux: float
    morphology: str
    r_e_px: float | None = None


def morphology_label(value: str, where: str) -> str:
    """Map a catalogue morphology label to the release's, or raise naming ``where``."""
    key = str(value).strip().lower()
    if key not in MORPHOLOGY_ALIASES:
        raise SourceError(
            f"{where}: unknown morphology {str(value)!r}; use one of "
            f"{', '.join(sorted(MORPHOLOGY_ALIASES))}"
        )
    return MORPHOLOGY_ALIASES[key]


def sky_variance(stamp: np.ndarray, galaxy_mask: np.ndarray | None = None) -> float:
    """Noise variance of a stamp from its sky pixels (3σ-clipped), outside ``galaxy_mask``."""
    pixels = stamp if galaxy_mask is None else stamp[~np.asarray(galaxy_mask, bool)]
    _, _, std = sigma_clipped_stats(pixels, sigma=3.0, maxiters=10)
    return float(std) ** 2


def _column(table: Table, names: tuple[str, ...], path: Path, required: bool = True):
    lower = {c.lower(): c for c in table.colnames}
    for name in names:
        if name.lower() in lower:
            return np.asarray(table[lower[name.lower()]])
    if required:
        raise SourceError(
            f"{path}: missing column {names[0]!r} (have {', '.join(table.colnames)}); "
            f"add it to the catalogue"
        )
    return None


def _read_table(path: Path, fmt: str | None = None) -> Table:
    if not path.is_file():
        raise SourceError(f"{path}: catalogue file not found; pass the folder that holds it")
    try:
        return Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as err:  # astropy raises many types for unreadable tables
        raise SourceError(f"{path}: unreadable catalogue table ({err})") from None


def _check_stamp(stamp: np.ndarray, size: int, where: str) -> np.ndarray:
    if stamp.ndim != 2 or stamp.shape != (size, size):
        raise SourceError(
            f"{where}: stamp shape {stamp.shape}, expected ({size}, {size}); cut the stamps "
            f"to {size}x{size} px on the release grid"
        )
    return stamp.astype(np.float32)


def load_candels_npy(folder: Path | str, size: int, zero_point: float) -> list[RealStamp]:
    """The paper's released archive: candels_img.npy (N, 128, 128), candels_seg.npy and
    candels_cat.csv (ID, mag, radius [px], galtype in irr/disk/sph/sphd).

    The segmentation maps mark each central galaxy; its sky pixels (outside them) give the
    noise already in the stamp.
    """
    folder = Path(folder)
    paths = {
        name: folder / name for name in ("candels_img.npy", "candels_seg.npy", "candels_cat.csv")
    }
    for path in paths.values():
        if not path.is_file():
            raise SourceError(
                f"{path}: missing; candels-npy needs candels_img.npy, candels_seg.npy and "
                "candels_cat.csv in the --input folder"
            )
    try:
        images = np.load(paths["candels_img.npy"], mmap_mode="r")
        segs = np.load(paths["candels_seg.npy"], mmap_mode="r")
    except (ValueError, OSError) as err:
        raise SourceError(f"{folder}: unreadable .npy file ({err})") from None
    for name, arr in (("candels_img.npy", images), ("candels_seg.npy", segs)):
        if arr.ndim != 3 or arr.shape[1:] != (size, size):
            raise SourceError(f"{paths[name]}: shape {arr.shape}, expected (N, {size}, {size})")
    cat = _read_table(paths["candels_cat.csv"], "ascii.csv")
    ids = _column(cat, ("ID", "id"), paths["candels_cat.csv"])
    mag = _column(cat, ("mag",), paths["candels_cat.csv"]).astype(float)
    radius = _column(cat, ("radius", "rad", "r_e"), paths["candels_cat.csv"]).astype(float)
    galtype = _column(cat, ("galtype", "type"), paths["candels_cat.csv"])
    if not (len(images) == len(segs) == len(cat)):
        raise SourceError(
            f"{folder}: {len(images)} images, {len(segs)} segmentation maps and {len(cat)} "
            "catalogue rows; they must match one to one"
        )
    stamps = []
    for i in range(len(images)):
        where = f"{paths['candels_cat.csv']} row {i} (ID {ids[i]})"
        stamp = np.asarray(images[i], dtype=np.float32)
        stamps.append(
            RealStamp(
                source_id=str(ids[i]),
                stamp=stamp,
                noise_var=sky_variance(stamp, np.asarray(segs[i]) > 0),
                catalogue_flux=float(mag_to_flux(mag[i], zero_point)),
                morphology=morphology_label(galtype[i], where),
                r_e_px=float(radius[i]),
            )
        )
    return stamps


def load_fits_stamps(
    folder: Path | str, size: int, zero_point: float, catalogue: str = "catalogue.ecsv"
) -> list[RealStamp]:
    """A folder of FITS cutouts plus a catalogue table (any format astropy reads).

    Catalogue columns: ``id``; ``mag`` (AB) or ``flux`` (counts); ``morphology``; optional
    ``r_e`` (px) and ``file`` (default ``{id}.fits``). Each FITS file's first image HDU must be
    size x size on the release grid, in counts at the release zero point.
    """
    from astropy.io import fits

    folder = Path(folder)
    cat_path = folder / catalogue
    cat = _read_table(cat_path)
    ids = _column(cat, ("id",), cat_path)
    mag = _column(cat, ("mag",), cat_path, required=False)
    flux = _column(cat, ("flux",), cat_path, required=False)
    if mag is None and flux is None:
        raise SourceError(f"{cat_path}: needs a 'mag' or a 'flux' column")
    morph = _column(cat, ("morphology", "galtype"), cat_path)
    r_e = _column(cat, ("r_e", "r_e_px", "radius"), cat_path, required=False)
    files = _column(cat, ("file",), cat_path, required=False)
    stamps = []
    for i, gid in enumerate(ids):
        path = folder / (str(files[i]) if files is not None else f"{gid}.fits")
        if not path.is_file():
            raise SourceError(f"{path}: stamp of id {gid} not found (column 'file' of {cat_path})")
        try:
            with fits.open(path) as hdul:
                data = next((h.data for h in hdul if h.data is not None and h.data.ndim == 2), None)
                if data is None:
                    raise SourceError(f"{path}: no 2-D image HDU")
                stamp = _check_stamp(np.asarray(data, dtype=np.float64), size, str(path))
        except OSError as err:
            raise SourceError(f"{path}: unreadable FITS file ({err})") from None
        if not np.all(np.isfinite(stamp)):
            raise SourceError(f"{path}: stamp has NaN or inf pixels; fill them before use")
        catalogue_flux = (
            float(flux[i]) if flux is not None else float(mag_to_flux(float(mag[i]), zero_point))
        )
        stamps.append(
            RealStamp(
                source_id=str(gid),
                stamp=stamp,
                noise_var=sky_variance(stamp),
                catalogue_flux=catalogue_flux,
                morphology=morphology_label(morph[i], f"{cat_path} id {gid}"),
                r_e_px=None if r_e is None else float(r_e[i]),
            )
        )
    return stamps
