"""The release folder on disk: generate, verify, export and summarise a release.

``generate_release`` runs the data flow (catalogue -> split -> pairs -> blends) and streams the
blends to HDF5 in chunks, so a release never sits whole in memory. Everything is written to a
hidden sibling folder first and renamed into place at the end: a failed or interrupted run leaves
no half-written release. Every array gets a fingerprint (float64 sums, see :class:`Fingerprint`)
recorded in ``release.toml``; ``verify_release`` recomputes them and compares, with a float
tolerance, so a release regenerated on another machine can be checked against the frozen one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

import challenge
from challenge.contract.errors import ReleaseError
from challenge.contract.release import (
    COMMITTED_TABLES,
    CUSTOM_SOURCES,
    SPLITS,
    ReleaseInfo,
    ReleaseSpec,
    blends_file,
    committed_dir,
    read_table,
)
from challenge.pipeline.blending import materialise
from challenge.pipeline.catalogue import ParentCatalogue, build_catalogue, select_galaxies
from challenge.pipeline.pairs import draw_pairs, has_partner, pair_table
from challenge.pipeline.sources.instrument import check_instrument, psf_image, with_psf_fwhm
from challenge.pipeline.sources.synthetic import render_psf
from challenge.pipeline.split import TEST, TRAIN_VAL, pool_for, split_galaxies
from challenge.pipeline.tracks import track_catalogue, track_pairs

# (stage, advance, total): called with advance=0 when a stage starts.
Progress = Callable[[str, int, int], None]
CHUNK_BLENDS = 16
FINGERPRINT_RTOL = 1e-6
FINGERPRINT_KEYS = ("sum", "abs", "sumsq", "wsum", "wabs")


class Fingerprint:
    """Order-sensitive float64 checksums of an array streamed in blocks along axis 0.

    ``sum``, ``sumsq`` and ``wsum`` (a sum weighted by item index and pixel position, so swapped
    blends or flipped images change it), with ``abs`` and ``wabs`` (the same sums of |x|) that set
    the tolerance: each number may move by ``FINGERPRINT_RTOL`` times the sum of the magnitudes
    it adds up, i.e. by what a relative change of 1e-6 in every element could cause.
    """

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype = ""
        self.n = 0
        self._items: dict[str, list[np.ndarray]] = {k: [] for k in FINGERPRINT_KEYS}

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        b = block.astype(np.float64).reshape(len(block), -1)
        item_w = (self.n + np.arange(len(b))) % 1009 + 1.0
        pix_w = np.arange(b.shape[1]) % 97 + 1.0
        a = np.abs(b)
        # Per-item sums, added up exactly (math.fsum) at the end: the result does not depend on
        # how the array was cut into blocks.
        self._items["sum"].append(b.sum(axis=1))
        self._items["abs"].append(a.sum(axis=1))
        self._items["sumsq"].append(np.einsum("ij,ij->i", b, b))
        self._items["wsum"].append(item_w * (b @ pix_w))
        self._items["wabs"].append(item_w * (a @ pix_w))
        self.shape = (self.n + len(block), *block.shape[1:])
        self.dtype = str(block.dtype)
        self.n += len(block)

    def to_dict(self) -> dict[str, Any]:
        sums = {k: math.fsum(np.concatenate(v)) if v else 0.0 for k, v in self._items.items()}
        return {"shape": list(self.shape or ()), "dtype": self.dtype, **sums}

    @classmethod
    def of(cls, dataset, chunk: int = 256) -> Fingerprint:
        """Fingerprint of an HDF5 dataset (or array), read ``chunk`` items at a time."""
        fp = cls()
        for start in range(0, dataset.shape[0], chunk):
            fp.update(dataset[start : start + chunk])
        if dataset.shape[0] == 0:
            fp.shape, fp.dtype = tuple(dataset.shape), str(dataset.dtype)
        return fp


def fingerprints_differ(got: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """Why two fingerprint dicts differ, or None when they agree within tolerance."""
    if list(got["shape"]) != list(expected["shape"]):
        return f"shape {tuple(got['shape'])}, expected {tuple(expected['shape'])}"
    if got["dtype"] != expected["dtype"]:
        return f"dtype {got['dtype']}, expected {expected['dtype']}"
    for key, scale in (("sum", "abs"), ("sumsq", "sumsq"), ("wsum", "wabs")):
        tol = FINGERPRINT_RTOL * max(got[scale], expected[scale]) + 1e-12
        if abs(got[key] - expected[key]) > tol:
            return f"{key} {got[key]:.10g}, expected {expected[key]:.10g}"
    return None


# --------------------------------------------------------------------------------------------
# generate


def remove_stale_partials(out: Path | str) -> list[Path]:
    """Remove the ``.NAME.partial-PID`` folders left in ``out``'s parent by killed generations.

    Only folders whose process is gone are removed (a generation still running keeps its own).
    Returns the folders removed.
    """
    parent = Path(out).resolve().parent
    removed = []
    for folder in sorted(parent.glob(".*.partial-*")) if parent.is_dir() else []:
        pid_text = folder.name.rsplit(".partial-", 1)[1]
        if not (folder.is_dir() and pid_text.isdigit()) or _process_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid: leave the folder alone
    return True


def _prepare_output(out: Path) -> Path:
    """Check ``out`` can be created and return the temporary sibling to write into."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(
            f"{out}: output folder exists and is not empty; choose a new --out or remove it"
        )
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise ReleaseError(
            f"{out}: cannot write the release there ({err.strerror}); choose a writable --out"
        ) from None
    return tmp


def _write_table(table: Table, path: Path) -> None:
    table.write(path, format="ascii.ecsv", overwrite=True)


def _h5_attrs(f: h5py.File, spec: ReleaseSpec, split: str) -> None:
    f.attrs["release"] = spec.name
    f.attrs["version"] = spec.version
    f.attrs["split"] = split
    f.attrs["pixel_scale"] = spec.pixel_scale
    f.attrs["zero_point"] = spec.zero_point
    f.attrs["sky_sigma"] = spec.sky_sigma


def _dataset(f: h5py.File, name: str, shape: tuple[int, ...], dtype, compress: bool = True):
    chunks = (min(CHUNK_BLENDS, max(shape[0], 1)), *shape[1:]) if len(shape) > 1 else None
    kwargs: dict[str, Any] = {"chunks": chunks}
    if compress and chunks is not None:
        kwargs.update(compression="gzip", compression_opts=1, shuffle=True)
    return f.create_dataset(name, shape=shape, dtype=dtype, **kwargs)


def _key(f: h5py.File, name: str) -> str:
    """Fingerprint key of a dataset: ``FILE:DATASET``."""
    return f"{Path(f.filename).name}:{name}"


def _write_small(f: h5py.File, name: str, data: np.ndarray, prints: dict[str, dict]) -> None:
    """Write a small dataset in one go and record its fingerprint."""
    f.create_dataset(name, data=data)
    fp = Fingerprint()
    fp.update(data)
    prints[_key(f, name)] = fp.to_dict()


def _write_galaxies_h5(path: Path, spec: ReleaseSpec, cat: ParentCatalogue, prints: dict) -> None:
    with h5py.File(path, "w") as f:
        _h5_attrs(f, spec, "all")
        _write_small(f, "galaxy_id", np.asarray(cat.table["galaxy_id"], np.int64), prints)
        psf = psf_image(spec) if spec.source in CUSTOM_SOURCES else render_psf(spec)
        _write_small(f, "psf", psf, prints)
        f.attrs["noiseless"] = cat.noise_var is None
        if cat.noise_var is not None:
            _write_small(f, "noise_var", cat.noise_var, prints)
        for name, arr in (("stamps", cat.stamps), ("masks", cat.masks)):
            ds = _dataset(f, name, arr.shape, arr.dtype)
            fp = Fingerprint()
            for start in range(0, len(arr), 256):
                block = arr[start : start + 256]
                ds[start : start + len(block)] = block
                fp.update(block)
            prints[_key(f, name)] = fp.to_dict()


def _write_split(
    folder: Path,
    spec: ReleaseSpec,
    split: str,
    pairs: Table,
    cat: ParentCatalogue,
    chunk_size: int,
    prints: dict[str, dict],
    progress: Progress | None,
) -> None:
    """Materialise a split's blends chunk by chunk into its HDF5 file(s)."""
    n = len(pairs)
    size = spec.stamp_size
    row_of = {int(g): i for i, g in enumerate(cat.table["galaxy_id"])}
    rows_c = np.array([row_of[int(g)] for g in pairs["central_id"]], dtype=np.int64)
    rows_k = np.array([row_of[int(g)] for g in pairs["companion_id"]], dtype=np.int64)
    flux = np.column_stack([pairs["flux_central"], pairs["flux_companion"]]).astype(np.float64)
    model_flux = np.column_stack(
        [pairs["model_flux_central"], pairs["model_flux_companion"]]
    ).astype(np.float64)
    blend_id = np.asarray(pairs["blend_id"], dtype=np.int64)

    if split == "test":
        files = {"images": folder / "test_blends.h5", "truth": folder / "test_truth.h5"}
    else:
        files = {"images": folder / f"{split}.h5", "truth": folder / f"{split}.h5"}
    handles = {p: h5py.File(p, "w") for p in set(files.values())}
    try:
        for f in handles.values():
            _h5_attrs(f, spec, split)
        img_f, truth_f = handles[files["images"]], handles[files["truth"]]
        _write_small(img_f, "blend_id", blend_id, prints)
        if truth_f is not img_f:
            _write_small(truth_f, "blend_id", blend_id, prints)
        _write_small(truth_f, "flux", flux, prints)
        _write_small(truth_f, "model_flux", model_flux, prints)
        if split == "test":
            for name, cols in (
                ("mag", ("mag_central", "mag_companion")),
                ("r_e", ("r_e_central", "r_e_companion")),
            ):
                arr = np.column_stack([pairs[c] for c in cols]).astype(np.float64)
                _write_small(truth_f, name, arr, prints)
            truth_f.create_dataset(
                "delta_mag",
                data=np.asarray(pairs["mag_central"] - pairs["mag_companion"], dtype=np.float64),
            )
            truth_f.create_dataset("distance_px", data=np.asarray(pairs["distance_px"], np.float64))
            morph = np.column_stack([pairs["morph_central"], pairs["morph_companion"]])
            truth_f.create_dataset("morphology", data=morph.astype("S10"))
        images = _dataset(img_f, "images", (n, size, size), np.float32)
        masks = _dataset(truth_f, "masks", (n, 2, size, size), np.uint8)
        fp_img, fp_mask = Fingerprint(), Fingerprint()
        if progress:
            progress(split, 0, n)
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            imgs, msks = materialise(
                cat.stamps,
                cat.masks,
                rows_c[sl],
                rows_k[sl],
                np.asarray(pairs["dx"][sl]),
                np.asarray(pairs["dy"][sl]),
                np.asarray(pairs["noise_seed"][sl]),
                spec.sky_sigma,
                cat.noise_var,
            )
            images[sl] = imgs
            masks[sl] = msks
            fp_img.update(imgs)
            fp_mask.update(msks)
            if progress:
                progress(split, len(imgs), n)
        prints[_key(img_f, "images")] = fp_img.to_dict()
        prints[_key(truth_f, "masks")] = fp_mask.to_dict()
    finally:
        for f in handles.values():
            f.close()


def _galaxy_names(cat: ParentCatalogue) -> np.ndarray:
    """(n_galaxies,) str: the input's ids of real galaxies, the galaxy ids of synthetic ones."""
    column = "source_id" if "source_id" in cat.table.colnames else "galaxy_id"
    return np.asarray(cat.table[column]).astype(str)


def _listed(names, limit: int = 10) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _drop_unpaired(
    spec: ReleaseSpec, cat: ParentCatalogue
) -> tuple[ParentCatalogue, dict[str, list[str]]]:
    """Leave out the galaxies that have no partner in their split; say which.

    Returns the catalogue without them and {galaxy split: their ids} (empty when every galaxy
    of a split with blends has a partner within |Δm| < max_delta_mag).

    Raises:
        ReleaseError: a split with blends holds fewer than two galaxies, or no pair.
    """
    labels = np.asarray(cat.table["split"])
    mag = np.asarray(cat.table["mag"], dtype=float)
    names = _galaxy_names(cat)
    where = spec.source_path or f"release {spec.name!r}"
    keep = np.ones(len(labels), dtype=bool)
    unpaired: dict[str, list[str]] = {}
    for pool in (TRAIN_VAL, TEST):
        if not any(spec.n_blends[s] for s in SPLITS if pool_for(s) == pool):
            continue
        rows = np.flatnonzero(labels == pool)
        if len(rows) < 2:
            fix = "raise" if pool == TEST else "lower"
            listed = f" ({_listed(names[rows])})" if len(rows) else ""
            raise ReleaseError(
                f"{where}: split '{pool}' has {_count(len(rows), 'galaxy', 'galaxies')}{listed} "
                f"of {len(labels)} usable; blends need at least 2 galaxies in each split: add "
                f"galaxies to the input (test takes {spec.test_fraction:g} of them) or {fix} "
                "--test-fraction"
            )
        partnered = has_partner(mag[rows], spec.max_delta_mag)
        if not partnered.any():
            gap = float(np.min(np.diff(np.sort(mag[rows]))))
            shown = _listed(f"{n} {m:.2f}" for n, m in zip(names[rows], mag[rows], strict=True))
            raise ReleaseError(
                f"{where}: split '{pool}': none of its {len(rows)} galaxies ({shown} mag) has "
                f"a partner within |Δm| < {spec.max_delta_mag:g} mag; add galaxies of similar "
                f"magnitude or raise --max-delta-mag above {gap:.2f}"
            )
        if not partnered.all():
            keep[rows[~partnered]] = False
            unpaired[pool] = [str(n) for n in names[rows[~partnered]]]
    return select_galaxies(cat, keep), unpaired


def _as_built(spec: ReleaseSpec, cat: ParentCatalogue) -> ReleaseSpec:
    """A custom source's spec with what generation found: the magnitude range of the kept
    galaxies (AB, rounded outwards to 0.01) and the sky noise when it was raised."""
    if spec.source not in CUSTOM_SOURCES:
        return spec
    mag = np.asarray(cat.table["mag"], dtype=float)
    changes: dict[str, Any] = {
        "mag_min": math.floor(mag.min() * 100) / 100,
        "mag_max": math.ceil(mag.max() * 100) / 100,
    }
    if "sky_sigma" in cat.adjustments:
        changes["sky_sigma"] = cat.adjustments["sky_sigma"]
    return dataclasses.replace(spec, **changes)


def generate_release(
    spec: ReleaseSpec,
    out: Path | str,
    chunk_size: int = 256,
    workers: int = 1,
    progress: Progress | None = None,
) -> Path:
    """Generate the release ``spec`` into the new folder ``out``; returns ``out``.

    Args:
        spec: the release to make (``challenge.contract.release.preset("v1")`` for the frozen one).
        out: a folder that does not exist yet (or is empty).
        chunk_size: blends materialised and written per step (does not change the result).
        workers: processes rendering galaxies (does not change the result).
        progress: optional callback ``(stage, advance, total)``.
    """
    out = Path(out)
    tmp = _prepare_output(out)
    unpaired: dict[str, list[str]] = {}
    try:
        if spec.is_track:
            cat = track_catalogue(spec, workers, progress)
        else:
            if spec.source in CUSTOM_SOURCES:
                check_instrument(spec)
                spec = with_psf_fwhm(spec)
            if progress:
                progress("galaxies", 0, spec.n_galaxies)
            cat = build_catalogue(
                spec,
                workers=workers,
                progress=(lambda k: progress("galaxies", k, spec.n_galaxies)) if progress else None,
            )
            cat.table["split"] = split_galaxies(
                np.asarray(cat.table["galaxy_id"]), spec.test_fraction, spec.seed
            )
            cat, unpaired = _drop_unpaired(spec, cat)
            spec = _as_built(spec, cat)
        _write_table(cat.table, tmp / "galaxies.ecsv")
        if cat.rejected:
            ids, reasons = zip(*cat.rejected, strict=True)
            _write_table(Table({"source_id": ids, "reason": reasons}), tmp / "rejected.ecsv")
        prints: dict[str, dict] = {}
        _write_galaxies_h5(tmp / "galaxies.h5", spec, cat, prints)
        first_id = 0
        for index, split in enumerate(SPLITS):
            if spec.is_track:
                if not spec.n_blends[split]:
                    continue  # a track holds test blends only
                pairs = track_pairs(spec, cat)
            else:
                pool = np.asarray(cat.table["split"]) == pool_for(split)
                draws = draw_pairs(
                    cat.table, pool, spec.n_blends[split], spec.seed, index, spec.max_delta_mag
                )
                pairs = pair_table(cat.table, draws, first_id)
            first_id += len(pairs)
            _write_table(pairs, tmp / f"pairs_{split}.ecsv")
            _write_split(tmp, spec, split, pairs, cat, chunk_size, prints, progress)
        counts = {
            "galaxies": len(cat.table),
            "test_galaxies": int(np.sum(np.asarray(cat.table["split"]) == "test")),
            **({"rejected_galaxies": len(cat.rejected)} if spec.source != "synthetic" else {}),
            **({"unpaired_galaxies": sum(map(len, unpaired.values()))} if unpaired else {}),
            **{f"blends_{s}": spec.n_blends[s] for s in SPLITS},
        }
        info = ReleaseInfo(
            spec,
            counts,
            dict(sorted(prints.items())),
            cat.n_redrawn,
            generator=f"blendbench {challenge.__version__}",
            unpaired=unpaired,
            adjustments=cat.adjustments,
        )
        (tmp / "release.toml").write_text(info.to_toml())
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------------------------
# verify


@dataclass
class VerifyReport:
    """What ``verify_release`` checked and what differed (one line each)."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _compare_tables(mine: Table, ref: Table, name: str, report: VerifyReport) -> None:
    if mine.colnames != ref.colnames or len(mine) != len(ref):
        report.problems.append(
            f"{name}: columns/rows {mine.colnames}x{len(mine)} differ from the frozen "
            f"{ref.colnames}x{len(ref)}"
        )
        return
    for col in mine.colnames:
        a, b = np.asarray(mine[col]), np.asarray(ref[col])
        if a.dtype.kind == "f":
            same = np.allclose(a, b, rtol=1e-5, atol=1e-9, equal_nan=True)
        else:
            same = np.array_equal(a.astype(str), b.astype(str))
        if not same:
            report.problems.append(f"{name}: column '{col}' differs from the frozen table")
    report.checked.append(name)


def verify_release(folder: Path | str) -> VerifyReport:
    """Recompute every array's fingerprint and compare tables with the frozen ones.

    Compares against the folder's own ``release.toml`` and, for a frozen preset whose tables ship
    with the kit (v1, mini), against those committed tables and fingerprints too.
    """
    folder = Path(folder)
    info = ReleaseInfo.read(folder / "release.toml")
    report = VerifyReport()
    frozen = committed_dir(info.spec.name)
    frozen_info = ReleaseInfo.read(frozen / "release.toml") if frozen else None
    if frozen_info is not None and frozen_info.spec != info.spec:
        report.problems.append(
            f"release.toml: spec of {info.spec.name!r} differs from the frozen release's"
        )
    broken_files: set[str] = set()  # a missing or unreadable file is reported once
    for key, expected in info.fingerprints.items():
        fname, dname = key.split(":", 1)
        if fname in broken_files:
            continue
        path = folder / fname
        try:
            with h5py.File(path, "r") as f:
                got = Fingerprint.of(f[dname]).to_dict()
        except FileNotFoundError:
            broken_files.add(fname)
            report.problems.append(f"{fname}: file missing; regenerate the release")
            continue
        except KeyError:
            report.problems.append(f"{fname}: dataset '{dname}' missing; regenerate the release")
            continue
        except OSError as err:
            broken_files.add(fname)
            report.problems.append(
                f"{fname}: unreadable HDF5 ({str(err).splitlines()[0]}); regenerate the release"
            )
            continue
        why = fingerprints_differ(got, expected)
        if why:
            report.problems.append(f"{fname}: array '{dname}' differs from release.toml ({why})")
        elif frozen_info is not None and key in frozen_info.fingerprints:
            why = fingerprints_differ(got, frozen_info.fingerprints[key])
            if why:
                report.problems.append(
                    f"{fname}: array '{dname}' differs from the frozen {info.spec.name} ({why})"
                )
        report.checked.append(key)
    if frozen is not None:
        for name in COMMITTED_TABLES:
            if not (frozen / name).is_file():
                continue  # a shift track ships its test tables only
            try:
                mine = Table.read(folder / name, format="ascii.ecsv")
            except FileNotFoundError:
                report.problems.append(f"{name}: table missing; regenerate the release")
                continue
            except Exception as err:  # astropy raises many types for a damaged table
                report.problems.append(f"{name}: unreadable table ({err}); regenerate the release")
                continue
            _compare_tables(mine, Table.read(frozen / name, format="ascii.ecsv"), name, report)
    return report


# --------------------------------------------------------------------------------------------
# read, export, summarise

EXPORT_FORMATS = ("h5", "fits", "npy")


def export_blends(
    folder: Path | str,
    split: str,
    fmt: str,
    out: Path | str | None = None,
    chunk: int = 256,
) -> list[Path]:
    """Write a split's blend images as HDF5, a FITS cube or .npy, streaming ``chunk`` at a time.

    The FITS file holds the (N, 128, 128) float32 cube in its primary HDU and the blend ids in a
    ``BLEND_ID`` table extension; ``npy`` writes ``{split}_images.npy`` and
    ``{split}_blend_id.npy``. Returns the paths written (atomically renamed into place).
    """
    from astropy.io import fits

    if fmt not in EXPORT_FORMATS:
        raise ReleaseError(
            f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}"
        )
    src = blends_file(folder, split)
    out_dir = Path(out) if out is not None else Path(folder) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with h5py.File(src, "r") as f:
        images, ids = f["images"], f["blend_id"][:]
        n = images.shape[0]
        if fmt == "h5":
            path = out_dir / f"{split}_blends.h5"
            tmp = path.with_name(path.name + ".tmp")
            with h5py.File(tmp, "w") as g:
                for k, v in f.attrs.items():
                    g.attrs[k] = v
                g.create_dataset("blend_id", data=ids)
                ds = _dataset(g, "images", images.shape, images.dtype)
                for s in range(0, n, chunk):
                    ds[s : s + chunk] = images[s : s + chunk]
            os.replace(tmp, path)
            written.append(path)
        elif fmt == "fits":
            path = out_dir / f"{split}_blends.fits"
            tmp = path.with_name(path.name + ".tmp")
            header = fits.Header()
            header["SIMPLE"], header["BITPIX"], header["NAXIS"] = True, -32, 3
            header["NAXIS1"], header["NAXIS2"], header["NAXIS3"] = (
                images.shape[2],
                images.shape[1],
                n,
            )
            header["EXTEND"] = True
            header["RELEASE"] = str(f.attrs.get("release", ""))
            header["PIXSCALE"] = (float(f.attrs.get("pixel_scale", 0.0)), "arcsec/px")
            header["ZP_AB"] = (float(f.attrs.get("zero_point", 0.0)), "AB mag of 1 count")
            shdu = fits.StreamingHDU(tmp, header)
            for s in range(0, n, chunk):
                shdu.write(np.ascontiguousarray(images[s : s + chunk], dtype=">f4"))
            shdu.close()
            table = fits.BinTableHDU(Table({"blend_id": ids}), name="BLEND_ID")
            fits.append(tmp, table.data, table.header)
            os.replace(tmp, path)
            written.append(path)
        else:
            path = out_dir / f"{split}_images.npy"
            tmp = path.with_name(path.name + ".tmp.npy")
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=images.shape)
            for s in range(0, n, chunk):
                mm[s : s + chunk] = images[s : s + chunk]
            mm.flush()
            del mm
            os.replace(tmp, path)
            id_path = out_dir / f"{split}_blend_id.npy"
            np.save(id_path.with_name(id_path.name + ".tmp.npy"), ids)
            os.replace(id_path.with_name(id_path.name + ".tmp.npy"), id_path)
            written += [path, id_path]
    return written


def release_summary(folder: Path | str) -> dict[str, Any]:
    """Numbers for ``blendbench info``: counts, sizes and magnitudes per morphology, disk size."""
    folder = Path(folder)
    info = ReleaseInfo.read(folder / "release.toml")
    galaxies = read_table(folder, "galaxies.ecsv").to_pandas()
    per_morph = (
        galaxies.groupby("morphology")
        .agg(
            n=("galaxy_id", "size"),
            mag_median=("mag", "median"),
            r_e_median_px=("r_e_px", "median"),
            sep_over_model=(
                "flux",
                lambda s: float(np.median(s / galaxies.loc[s.index, "model_flux"])),
            ),
            test=("split", lambda s: int((s == "test").sum())),
        )
        .reset_index()
    )
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    return {
        "info": info,
        "per_morphology": per_morph,
        "files": files,
        "size_bytes": sum(files.values()),
    }


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def release_notes(info: ReleaseInfo) -> list[str]:
    """One line per galaxy group left out, and per change made to a custom source's input."""
    spec, adj = info.spec, info.adjustments
    lines = []
    for split, ids in info.unpaired.items():
        lines.append(
            f"{_count(len(ids), f'{split} galaxy', f'{split} galaxies')} with no partner within "
            f"|Δm| < {spec.max_delta_mag:g} mag left out of the release: {_listed(ids)}"
        )
    if info.counts.get("rejected_galaxies"):
        n = info.counts["rejected_galaxies"]
        lines.append(f"{_count(n, 'galaxy', 'galaxies')} rejected (rejected.ecsv)")
    if "sky_sigma" in adj:
        lines.append(
            f"sky σ raised from {adj['sky_sigma_requested']:g} to {adj['sky_sigma']:.4g} "
            f"counts/px to match the noisiest stamp ({adj['noisiest_stamp']})"
        )
    if "resampled_from_pixel_scale" in adj:
        lines.append(
            f"{_count(adj['n_resampled'], 'stamp', 'stamps')} resampled from "
            f"{adj['resampled_from_pixel_scale']:g}″/px "
            f"to {spec.pixel_scale:g}″/px"
        )
    if "zero_point_scale" in adj:
        lines.append(
            f"counts rescaled from zero point {spec.input_zero_point:g} to {spec.zero_point:g} "
            f"(× {adj['zero_point_scale']:.4g})"
        )
    if "zero_filled" in adj:
        filled = adj["zero_filled"]
        lines.append(
            f"zero padding filled with sky noise in {_count(len(filled), 'stamp', 'stamps')}: "
            + _listed(f"{k} ({v} px)" for k, v in filled.items())
        )
    return lines
