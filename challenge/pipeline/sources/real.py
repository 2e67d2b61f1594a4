"""Real-galaxy stamps from files: the paper's ``candels-npy`` archive and ``fits-stamps`` folders.

Real stamps already carry noise. Each :class:`RealStamp` states the noise variance it holds
(estimated from its sky pixels), so the release tops it up to its own sky level instead of
adding a second full layer of noise. Stamps hold the galaxy centred on pixel (H // 2, W // 2).
Each stamp is prepared in this order (:func:`prepare_stamp`): zero padding (exact zeros
connected to the stamp edge, e.g. beyond a mosaic's edge, at least MIN_PAD_PIXELS px) is filled
with Gaussian noise of the stamp's own sky, seeded by the release seed and the catalogue row
(a stamp more than MAX_PAD_FRACTION padding is rejected); counts are rescaled to the release
zero point; stamps at another pixel scale are resampled onto the release grid
(``challenge.pipeline.sources.instrument``); the noise variance is then measured on the result.

Catalogue errors (duplicate ids or files, NaN/inf or non-positive fluxes, unreadable stamps)
are :class:`SourceError` naming the file, the column and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage

from challenge.contract.errors import SourceError
from challenge.contract.release import ReleaseSpec
from challenge.pipeline.photometry import mag_to_flux
from challenge.pipeline.sources.instrument import (
    input_pixel_scale,
    input_stamp_size,
    needs_resampling,
    resample,
    zero_point_scale,
)

MIN_PAD_PIXELS = 25  # fewer exact zeros at the edge are left alone (integer data has some)
MAX_PAD_FRACTION = 0.5  # stamps with more zero padding than this are rejected
RESAMPLE_MARGIN = 8  # input px kept beyond the release stamp's field before resampling
FILL_STREAM = 6  # SeedSequence(seed, spawn_key=(FILL_STREAM, row)): noise filling the padding

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
        morphology: one of ``challenge.contract.release.MORPHOLOGIES``.
        r_e_px: half-light radius from the catalogue (px), or None to measure it.
        zero_filled: pixels of zero padding filled with noise (input pixels).
    """

    source_id: str
    stamp: np.ndarray
    noise_var: float
    catalogue_flux: float
    morphology: str
    r_e_px: float | None = None
    zero_filled: int = 0


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
            col = table[lower[name.lower()]]
            if np.any(getattr(col, "mask", False)):  # masked cells: NaN (numbers) or ""
                numeric = col.dtype.kind in "iuf"
                return np.asarray(col.astype(float).filled(np.nan) if numeric else col.filled(""))
            return np.asarray(col)
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


def _missing_folder(folder: Path, source: str) -> SourceError:
    return SourceError(
        f"input folder {folder} does not exist; pass the folder that holds the {source} files "
        "with --input"
    )


def _unique(values, path: Path, column: str) -> list[str]:
    """The column's values as str, or a SourceError naming the duplicates (1-based rows)."""
    labels = [str(v).strip() for v in values]
    first: dict[str, int] = {}
    duplicates = []
    for row, label in enumerate(labels, start=1):
        if label in first:
            duplicates.append(f"{label!r} (rows {first[label]} and {row})")
        else:
            first[label] = row
    if duplicates:
        raise SourceError(
            f"{path}: column {column!r} has duplicates: {', '.join(duplicates[:5])}; each "
            f"galaxy needs its own {column}: remove or rename the repeated rows"
        )
    return labels


def _numbers(values, path: Path, column: str, ids: list[str], unit: str, positive: bool):
    """The column as float (n,), or a SourceError naming the ids of NaN/inf (or <= 0) values."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise SourceError(
            f"{path}: column {column!r} holds values that are not numbers; give {unit}"
        ) from None
    bad = ~np.isfinite(arr) | ((arr <= 0) if positive else False)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(f"id {ids[i]}: {arr[i]:g}" for i in rows[:5])
        need = "finite and > 0" if positive else "finite"
        raise SourceError(
            f"{path}: column {column!r} must be {need} ({unit}); {len(rows)} bad "
            f"({shown}): fix or remove those rows"
        )
    return arr


def zero_padding(stamp: np.ndarray) -> np.ndarray:
    """Zero padding of a stamp: (H, W) bool, exact zeros connected to the stamp's edge.

    Empty when they number fewer than MIN_PAD_PIXELS (isolated zeros of integer data).
    """
    zero = np.asarray(stamp) == 0
    if zero.sum() < MIN_PAD_PIXELS:
        return np.zeros_like(zero)
    labels, _ = ndimage.label(zero)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    pad = np.isin(labels, edge[edge > 0])
    return pad if pad.sum() >= MIN_PAD_PIXELS else np.zeros_like(zero)


def fill_padding(
    stamp: np.ndarray,
    pad: np.ndarray,
    rng: np.random.Generator,
    galaxy_mask: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``stamp`` (H, W) with the ``pad`` pixels drawn from Gaussian noise of the
    stamp's own sky (3σ-clipped median and σ of the other pixels, outside ``galaxy_mask``)."""
    sky = ~pad if galaxy_mask is None else ~pad & ~np.asarray(galaxy_mask, bool)
    _, median, std = sigma_clipped_stats(stamp[sky], sigma=3.0, maxiters=10)
    out = np.array(stamp, dtype=np.float64)
    out[pad] = median + std * rng.standard_normal(int(pad.sum()))
    return out


def _crop_centred(stamp: np.ndarray, half: int) -> np.ndarray:
    """The (2 half + 1)-px cut of ``stamp`` around (H // 2, W // 2), per axis where it fits
    (resampling costs grow with the stamp; the release needs its central field only)."""
    cut = []
    for n in stamp.shape:
        c = n // 2
        cut.append(slice(c - half, c + half + 1) if c - half >= 0 and c + half < n else slice(None))
    return stamp[tuple(cut)]


@dataclass
class InputStamp:
    """One galaxy as read from the input, before it is brought onto the release grid.

    ``stamp`` (H, W) finite counts at the input's pixel scale and zero point; the other fields
    as :class:`RealStamp`'s (fluxes already at the release zero point, radii in release px);
    ``galaxy_mask`` (H, W) bool galaxy pixels to leave out of sky estimates, or None.
    """

    source_id: str
    stamp: np.ndarray
    catalogue_flux: float
    morphology: str
    r_e_px: float | None = None
    galaxy_mask: np.ndarray | None = None


def prepare_stamps(
    inputs: Iterable[InputStamp], spec: ReleaseSpec
) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """:func:`prepare_stamp` on every input (row = its position): the stamps kept and the
    (source id, reason) of those rejected."""
    stamps, rejected = [], []
    for row, item in enumerate(inputs):
        result = prepare_stamp(item.stamp, spec, row, item.galaxy_mask)
        if isinstance(result, str):
            rejected.append((item.source_id, result))
            continue
        stamp, noise_var, n_pad = result
        stamps.append(
            RealStamp(
                source_id=item.source_id,
                stamp=stamp,
                noise_var=noise_var,
                catalogue_flux=item.catalogue_flux,
                morphology=item.morphology,
                r_e_px=item.r_e_px,
                zero_filled=n_pad,
            )
        )
    return stamps, rejected


def prepare_stamp(
    stamp: np.ndarray, spec: ReleaseSpec, row: int, galaxy_mask: np.ndarray | None = None
) -> tuple[np.ndarray, float, int] | str:
    """Bring one input stamp onto the release grid, or say why it is rejected.

    Args:
        stamp: (H, W) finite input counts, galaxy on (H // 2, W // 2).
        spec: the release (its instrument fields say how the input differs).
        row: the stamp's catalogue row (seeds the noise that fills its padding).
        galaxy_mask: (H, W) galaxy pixels left out of sky estimates (None: 3σ clipping only).

    Returns:
        the (stamp_size, stamp_size) float32 stamp in counts at the release zero point, the
        variance of the noise it holds (counts²/px, measured after resampling, which changes
        and correlates the noise) and the number of padding pixels filled; or the reason.
    """
    if needs_resampling(spec):
        stamp = _crop_centred(stamp, input_stamp_size(spec) // 2 + RESAMPLE_MARGIN)
    pad = zero_padding(stamp)
    n_pad = int(pad.sum())
    if n_pad > MAX_PAD_FRACTION * stamp.size:
        return (
            f"{n_pad / stamp.size:.0%} of the stamp is zero padding "
            f"(more than {MAX_PAD_FRACTION:.0%})"
        )
    if n_pad:
        seq = np.random.SeedSequence(spec.seed, spawn_key=(FILL_STREAM, row))
        stamp = fill_padding(stamp, pad, np.random.default_rng(seq), galaxy_mask)
    factor = zero_point_scale(spec)
    if factor != 1.0:
        stamp = stamp * factor
    if needs_resampling(spec):
        stamp = resample(stamp, input_pixel_scale(spec), spec.pixel_scale, spec.stamp_size)
        galaxy_mask = None
    stamp = np.asarray(stamp, dtype=np.float32)
    return stamp, sky_variance(stamp, galaxy_mask), n_pad


def _check_stamp(stamp: np.ndarray, spec: ReleaseSpec, where: str) -> np.ndarray:
    """The input stamp, when 2-D, finite and large enough for the release stamp."""
    size = spec.stamp_size
    if not needs_resampling(spec):
        if stamp.ndim != 2 or stamp.shape != (size, size):
            raise SourceError(
                f"{where}: stamp shape {stamp.shape}, expected ({size}, {size}); cut the stamps "
                f"to {size}x{size} px on the release grid"
            )
    else:
        n = input_stamp_size(spec)
        if stamp.ndim != 2 or min(stamp.shape) < n:
            raise SourceError(
                f"{where}: stamp shape {stamp.shape}, expected at least ({n}, {n}) px of "
                f"{input_pixel_scale(spec)}″ to cover the release stamp ({size} px of "
                f"{spec.pixel_scale}″); cut larger stamps"
            )
    if not np.all(np.isfinite(stamp)):
        raise SourceError(f"{where}: stamp has NaN or inf pixels; fill them before use")
    return stamp


def _read_fits_stamp(path: Path) -> np.ndarray:
    """The first 2-D image HDU of a FITS file as float64, or a SourceError."""
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path) as hdul:
                data = next((h.data for h in hdul if h.data is not None and h.data.ndim == 2), None)
                data = None if data is None else np.array(data, dtype=np.float64)
    except Exception as err:  # astropy raises OSError, TypeError... for damaged files
        raise SourceError(
            f"{path}: unreadable FITS file ({err}); is it truncated? write the stamp again"
        ) from None
    if data is None:
        raise SourceError(f"{path}: no 2-D image HDU; write the stamp as a 2-D image")
    return data


def load_candels_npy(
    folder: Path | str, spec: ReleaseSpec
) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """The paper's released archive: candels_img.npy (N, 128, 128), candels_seg.npy and
    candels_cat.csv (ID, mag, radius [px], galtype in irr/disk/sph/sphd).

    The segmentation maps mark each central galaxy; its sky pixels (outside them) give the
    noise already in the stamp. Returns the stamps (the first ``spec.max_galaxies`` rows when
    set) and the (ID, reason) of those rejected.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _missing_folder(folder, "candels-npy")
    size = spec.stamp_size
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
    cat_path = paths["candels_cat.csv"]
    cat = _read_table(cat_path, "ascii.csv")
    ids = _unique(_column(cat, ("ID", "id"), cat_path), cat_path, "ID")
    mag = _numbers(_column(cat, ("mag",), cat_path), cat_path, "mag", ids, "AB mag", False)
    radius = _column(cat, ("radius", "rad", "r_e"), cat_path)
    radius = _numbers(radius, cat_path, "radius", ids, "px", True)
    galtype = _column(cat, ("galtype", "type"), cat_path)
    if not (len(images) == len(segs) == len(cat)):
        raise SourceError(
            f"{folder}: {len(images)} images, {len(segs)} segmentation maps and {len(cat)} "
            "catalogue rows; they must match one to one"
        )
    morphs = [
        morphology_label(galtype[i], f"{cat_path} row {i} (ID {ids[i]})") for i in range(len(ids))
    ]
    n = len(ids) if spec.max_galaxies <= 0 else min(len(ids), spec.max_galaxies)
    inputs = (
        InputStamp(
            source_id=ids[i],
            stamp=_check_stamp(
                np.asarray(images[i], dtype=np.float32), spec, f"{paths['candels_img.npy']} [{i}]"
            ),
            catalogue_flux=float(mag_to_flux(mag[i], spec.zero_point)),
            morphology=morphs[i],
            r_e_px=float(radius[i]),
            galaxy_mask=np.asarray(segs[i]) > 0,
        )
        for i in range(n)
    )
    return prepare_stamps(inputs, spec)


def load_fits_stamps(
    folder: Path | str, spec: ReleaseSpec, catalogue: str = "catalogue.ecsv"
) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """A folder of FITS cutouts plus a catalogue table (any format astropy reads).

    Catalogue columns: ``id`` (unique); ``mag`` (AB) or ``flux`` (counts at the input zero
    point, > 0); ``morphology``; optional ``r_e`` (input px) and ``file`` (default
    ``{id}.fits``). Each FITS file's first 2-D image HDU holds the galaxy on (H // 2, W // 2),
    in counts at ``spec.input_zero_point``, at ``spec.input_pixel_scale``: H = W = stamp_size
    on the release grid, at least the release stamp's extent otherwise. Returns the stamps (the
    first ``spec.max_galaxies`` rows when set) and the (id, reason) of those rejected.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _missing_folder(folder, "fits-stamps")
    cat_path = folder / catalogue
    cat = _read_table(cat_path)
    if len(cat) == 0:
        raise SourceError(f"{cat_path}: the catalogue has no rows; add one row per stamp")
    ids = _unique(_column(cat, ("id",), cat_path), cat_path, "id")
    mag = _column(cat, ("mag",), cat_path, required=False)
    flux = _column(cat, ("flux",), cat_path, required=False)
    if mag is None and flux is None:
        raise SourceError(f"{cat_path}: needs a 'mag' or a 'flux' column")
    if flux is not None:
        counts = _numbers(flux, cat_path, "flux", ids, "counts", True) * zero_point_scale(spec)
    else:
        counts = mag_to_flux(_numbers(mag, cat_path, "mag", ids, "AB mag", False), spec.zero_point)
    morph = _column(cat, ("morphology", "galtype"), cat_path)
    morphs = [
        morphology_label(m, f"{cat_path} id {gid}") for m, gid in zip(morph, ids, strict=True)
    ]
    r_e = _column(cat, ("r_e", "r_e_px", "radius"), cat_path, required=False)
    if r_e is not None:
        r_e = _numbers(r_e, cat_path, "r_e", ids, "px", True)
        r_e = r_e * input_pixel_scale(spec) / spec.pixel_scale
    files = _column(cat, ("file",), cat_path, required=False)
    names = _unique(
        [str(files[i]) if files is not None else f"{gid}.fits" for i, gid in enumerate(ids)],
        cat_path,
        "file",
    )
    n = len(ids) if spec.max_galaxies <= 0 else min(len(ids), spec.max_galaxies)

    def inputs():
        for i in range(n):
            path = folder / names[i]
            if not path.is_file():
                raise SourceError(
                    f"{path}: stamp of id {ids[i]} not found; add it or fix column 'file' of "
                    f"{cat_path}"
                )
            yield InputStamp(
                source_id=ids[i],
                stamp=_check_stamp(_read_fits_stamp(path), spec, str(path)),
                catalogue_flux=float(counts[i]),
                morphology=morphs[i],
                r_e_px=None if r_e is None else float(r_e[i]),
            )

    return prepare_stamps(inputs(), spec)


def stamp_adjustments(spec: ReleaseSpec, stamps: list[RealStamp]) -> dict:
    """What loading changed in a custom source's input, for the release record."""
    out: dict = {}
    if needs_resampling(spec):
        out["resampled_from_pixel_scale"] = input_pixel_scale(spec)
        out["n_resampled"] = len(stamps)
    if zero_point_scale(spec) != 1.0:
        out["zero_point_scale"] = zero_point_scale(spec)
    filled = {s.source_id: s.zero_filled for s in stamps if s.zero_filled}
    if filled:
        out["zero_filled"] = filled
    return out
