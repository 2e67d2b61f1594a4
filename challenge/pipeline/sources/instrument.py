"""The instrument of a custom source (``fits-stamps``, ``candels-npy``) and the release grid.

A custom release keeps the release grid (``stamp_size``² px of ``pixel_scale`` ″/px, counts at
``zero_point`` AB): the source declares the instrument of its stamps and the stamps are brought
onto the grid.

- ``input_pixel_scale`` (″/px): stamps at another scale are resampled with GalSim
  (:func:`resample`); 0 means the release's.
- ``input_zero_point`` (AB mag of 1 count): stamps and catalogue fluxes are multiplied by
  10^(0.4 (zero_point − input_zero_point)); 0 means the release's.
- the PSF: ``psf_kind`` "model" (the synthetic releases' F160W-like model, the candels-npy
  archive's), "gaussian" (a Gaussian of FWHM ``psf_fwhm`` ″) or "file" (the FITS image
  ``psf_file``, at the input pixel scale). The release records it in galaxies.h5 ``psf``
  (:func:`psf_image`); it is not applied to the stamps, which already hold it.
- ``sky_sigma`` (counts/px on the release grid): the sky noise of the blends; the catalogue stage
  raises it to the noise of the noisiest stamp when a stamp is noisier.

``fits-stamps`` must declare the pixel scale, zero point and PSF, as ``blendbench generate``
options or as meta keys of its catalogue (``pixel_scale``, ``zero_point``, ``psf``, ``sky_sigma``);
``candels-npy`` is the paper's instrument (0.06″/px, ZP 25.96, F160W).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import galsim
import numpy as np

from challenge.contract.errors import SourceError
from challenge.contract.release import CUSTOM_SOURCES, ReleaseSpec

CATALOGUE = "catalogue.ecsv"
INSTRUMENT_KEYS = ("pixel_scale", "zero_point", "psf", "sky_sigma")
PSF_SIZE = 33  # px on the release grid of a declared Gaussian PSF (as render_psf)
_HINT = {"pixel_scale": "ARCSEC_PER_PX", "zero_point": "AB_MAG", "psf": "FILE|FWHM_ARCSEC"}


def input_pixel_scale(spec: ReleaseSpec) -> float:
    """Pixel scale of the input stamps (″/px)."""
    return spec.input_pixel_scale or spec.pixel_scale


def zero_point_scale(spec: ReleaseSpec) -> float:
    """Factor taking input counts to counts at the release zero point."""
    if not spec.input_zero_point or spec.input_zero_point == spec.zero_point:
        return 1.0
    return float(10 ** (0.4 * (spec.zero_point - spec.input_zero_point)))


def needs_resampling(spec: ReleaseSpec) -> bool:
    """Whether the input stamps are on another pixel scale than the release's."""
    return not math.isclose(input_pixel_scale(spec), spec.pixel_scale, rel_tol=1e-9)


def input_stamp_size(spec: ReleaseSpec) -> int:
    """Smallest input stamp side (px) covering the release stamp (stamp_size × pixel_scale ″)."""
    if not needs_resampling(spec):
        return spec.stamp_size
    return math.ceil(spec.stamp_size * spec.pixel_scale / input_pixel_scale(spec) - 1e-6)


def resample(image: np.ndarray, input_scale: float, scale: float, size: int) -> np.ndarray:
    """An image resampled onto a (size, size) grid of ``scale`` ″/px, flux conserved.

    ``image`` (H, W) in counts at ``input_scale`` ″/px, its centre on pixel (H // 2, W // 2),
    becomes a GalSim ``InterpolatedImage`` (quintic) drawn with its centre on pixel
    (size // 2, size // 2). Finer input pixels are integrated over the release pixel
    (``method="auto"``); coarser ones are sampled (``method="no_pixel"``: their pixel response is
    already in the data). Returns (size, size) float64 counts.
    """
    data = np.ascontiguousarray(image, dtype=np.float64)
    # maxk from the interpolant, not estimated from the image: the estimate cuts the
    # high-frequency noise off (a stepk estimated from the image keeps the FFTs small).
    profile = galsim.InterpolatedImage(
        galsim.Image(data, scale=input_scale),
        use_true_center=False,
        calculate_stepk=True,
        calculate_maxk=False,
    )
    out = galsim.ImageD(size, size, scale=scale)
    method = "auto" if input_scale < scale else "no_pixel"
    profile.drawImage(out, method=method, use_true_center=False)
    return out.array


def _read_psf_file(path: Path) -> np.ndarray:
    from astropy.io import fits

    if not path.is_file():
        raise SourceError(f"{path}: PSF file not found (--psf); pass a FITS image or a FWHM in ″")
    try:
        with fits.open(path) as hdul:
            data = next((h.data for h in hdul if h.data is not None and h.data.ndim == 2), None)
            data = None if data is None else np.asarray(data, dtype=np.float64)
    except Exception as err:  # astropy raises OSError, TypeError... for damaged files
        raise SourceError(f"{path}: unreadable FITS PSF image ({err}); rewrite the file") from None
    if data is None:
        raise SourceError(f"{path}: no 2-D image HDU in the PSF file (--psf)")
    if not np.all(np.isfinite(data)) or data.sum() <= 0:
        raise SourceError(
            f"{path}: the PSF image (--psf) has NaN/inf pixels or a sum <= 0; "
            "give a PSF image with positive total light"
        )
    return data


def psf_image(spec: ReleaseSpec) -> np.ndarray:
    """The release's record of the PSF: an image on the release grid, float32, unit sum.

    "file": the declared image, resampled from the input pixel scale when it differs (odd side
    of about the same extent); "gaussian": a Gaussian of FWHM ``psf_fwhm`` ″ drawn on
    PSF_SIZE² px with the pixel response; "model": the synthetic PSF model (``render_psf``).
    """
    from challenge.pipeline.sources.synthetic import render_psf

    if spec.psf_kind == "model":
        return render_psf(spec)
    if spec.psf_kind == "gaussian":
        image = galsim.ImageD(PSF_SIZE, PSF_SIZE, scale=spec.pixel_scale)
        galsim.Gaussian(fwhm=spec.psf_fwhm).drawImage(image, method="auto")
        arr = image.array
    else:
        path = Path(spec.psf_file)
        stamp = path.stat().st_mtime_ns if path.is_file() else 0
        arr = _psf_from_file(str(path), stamp, input_pixel_scale(spec), spec.pixel_scale)
    return (arr / arr.sum()).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _psf_from_file(path: str, mtime_ns: int, input_scale: float, scale: float) -> np.ndarray:
    """The PSF image of ``path`` on the release grid (cached: resampling takes ~1 s)."""
    arr = _read_psf_file(Path(path))
    if not math.isclose(input_scale, scale, rel_tol=1e-9):
        side = max(arr.shape) * input_scale / scale
        arr = resample(arr, input_scale, scale, int(round(side)) // 2 * 2 + 1)
    arr.flags.writeable = False
    return arr


def psf_fwhm_arcsec(image: np.ndarray, scale: float) -> float:
    """FWHM (″) of a PSF image (H, W) at ``scale`` ″/px, about its peak pixel (GalSim)."""
    img = galsim.Image(np.ascontiguousarray(image, dtype=np.float64), scale=scale)
    y, x = np.unravel_index(int(np.argmax(image)), image.shape)
    return float(img.calculateFWHM(center=galsim.PositionD(x + 1, y + 1)))


def parse_psf(value: str | float, folder: Path, where: str) -> dict[str, Any]:
    """Spec fields of a declared PSF: a FWHM in ″ (a number) or a FITS image file.

    A relative file name is relative to ``folder`` (the input folder for the catalogue's meta,
    the current folder for the ``--psf`` option).
    """
    text = str(value).strip()
    try:
        fwhm = float(text)
    except ValueError:
        path = folder / text
        _read_psf_file(path)
        return {"psf_kind": "file", "psf_file": str(path.resolve())}
    if not (math.isfinite(fwhm) and fwhm > 0):
        raise SourceError(f"{where}: PSF FWHM {text}, expected a number of arcsec > 0")
    return {"psf_kind": "gaussian", "psf_fwhm": fwhm}


def _positive(value: Any, where: str, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise SourceError(f"{where}: {what} {value!r}, expected a number > 0")
    return number


def catalogue_meta(folder: Path) -> dict[str, Any]:
    """The instrument keys found in the meta of a fits-stamps catalogue (lower-cased)."""
    from astropy.table import Table

    path = folder / CATALOGUE
    if not path.is_file():
        return {}
    try:
        meta = Table.read(path).meta
    except Exception:  # the loader reports an unreadable catalogue with its own message
        return {}
    lower = {str(k).lower(): v for k, v in meta.items()}
    return {k: lower[k] for k in INSTRUMENT_KEYS if k in lower}


def custom_spec(
    source: str,
    folder: Path | None,
    *,
    pixel_scale: float | None = None,
    zero_point: float | None = None,
    psf: str | None = None,
    sky_sigma: float | None = None,
    **fields: Any,
) -> ReleaseSpec:
    """The spec of a custom release from ``source`` in ``folder`` and its declared instrument.

    Options (None = not given) override the catalogue's meta keys (fits-stamps only). The
    candels-npy archive and cosmos have a known instrument: only ``sky_sigma`` applies there.
    ``fields`` are other ReleaseSpec fields (name, n_blends, seed, ...).

    Raises:
        SourceError: a missing input folder, an instrument option that does not apply, an
            undeclared (fits-stamps) or invalid value.
    """
    if source in CUSTOM_SOURCES and folder is not None and not Path(folder).is_dir():
        raise SourceError(
            f"input folder {folder} does not exist; pass the folder that holds the "
            f"{source} files with --input"
        )
    options = {"pixel_scale": pixel_scale, "zero_point": zero_point, "psf": psf}
    given = [k for k, v in options.items() if v is not None]
    if source != "fits-stamps" and given:
        raise SourceError(
            f"--{given[0].replace('_', '-')}: the instrument options apply to --source "
            f"fits-stamps; {source} has a known instrument (drop the option)"
        )
    values: dict[str, Any] = {"sky_sigma": sky_sigma}
    where = "options"
    if source == "fits-stamps":
        folder = Path(folder) if folder is not None else Path(".")
        meta = catalogue_meta(folder)
        values = {**options, "sky_sigma": sky_sigma}
        values = {k: meta.get(k) if v is None else v for k, v in values.items()}
        where = f"{folder / CATALOGUE} (meta) or options"
        missing = [k for k in ("pixel_scale", "zero_point", "psf") if values[k] is None]
        if missing:
            raise SourceError(
                f"{folder / CATALOGUE}: the instrument of the stamps is not declared "
                f"({', '.join(missing)}); pass "
                + " ".join(f"--{k.replace('_', '-')} {_HINT[k]}" for k in missing)
                + " or add the meta keys to the catalogue"
            )
        fields["input_pixel_scale"] = _positive(values["pixel_scale"], where, "pixel_scale")
        try:
            zp = float(values["zero_point"])
        except (TypeError, ValueError):
            zp = math.nan
        if not (math.isfinite(zp) and zp > 0):
            raise SourceError(
                f"{where}: zero_point {values['zero_point']!r}, expected the AB magnitude of "
                "1 count (e.g. 25.96)"
            )
        fields["input_zero_point"] = zp
        psf_folder = Path(".") if psf is not None else folder
        fields.update(parse_psf(values["psf"], psf_folder, where))
    if values["sky_sigma"] is not None:
        fields["sky_sigma"] = _positive(values["sky_sigma"], where, "sky_sigma")
    spec = ReleaseSpec(
        source=source,
        morphology_counts={},
        source_path=str(Path(folder).resolve()) if folder is not None else "",
        **fields,
    )
    return with_psf_fwhm(spec)


def with_psf_fwhm(spec: ReleaseSpec) -> ReleaseSpec:
    """The spec with ``psf_fwhm`` measured on the declared PSF image (psf_kind "file")."""
    if spec.psf_kind != "file":
        return spec
    fwhm = psf_fwhm_arcsec(psf_image(spec), spec.pixel_scale)
    return dataclasses.replace(spec, psf_fwhm=round(fwhm, 4))


def check_instrument(spec: ReleaseSpec) -> None:
    """Raise a SourceError when a fits-stamps spec leaves its instrument undeclared."""
    if spec.source != "fits-stamps":
        return
    missing = [
        name
        for name, ok in (
            ("input_pixel_scale", spec.input_pixel_scale > 0),
            ("input_zero_point", spec.input_zero_point > 0),
            ("psf_kind", spec.psf_kind in ("gaussian", "file")),
        )
        if not ok
    ]
    if missing:
        raise SourceError(
            f"release {spec.name!r}: fits-stamps needs a declared instrument; set "
            f"{', '.join(missing)} (blendbench generate: --pixel-scale, --zero-point, --psf)"
        )
