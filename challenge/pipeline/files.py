"""The release folder on disk: generate, verify, export and summarise a release.

``generate_release`` runs the data flow (catalogue -> split -> pairs -> blends) and streams the
blends to HDF5 in chunks, so a release never sits whole in memory. Everything is written to a
hidden sibling folder first and renamed into place at the end: a failed or interrupted run leaves
no half-written release. Every dataset gets a fingerprint (see :class:`Fingerprint`: float64 sums
that see any changed or swapped pixel for float arrays, SHA-256 for the others) recorded in
``release.toml``; ``verify_release`` recomputes them and compares, with a float tolerance far
below the sky noise, so a release regenerated on another machine can be checked against the
frozen one; it checks every HDF5 attribute against the spec and every table too.
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
    PRESETS,
    SPLITS,
    ReleaseInfo,
    ReleaseSpec,
    blends_file,
    committed_dir,
    estimated_bytes,
    read_table,
    spec_difference,
    table_difference,
    table_file,
    truth_arrays_difference,
)
from challenge.pipeline.catalogue import ParentCatalogue, build_catalogue, select_galaxies
from challenge.pipeline.chunks import write_blends
from challenge.pipeline.pairs import draw_pairs, has_partner, pair_table
from challenge.pipeline.sources.instrument import check_instrument, psf_image, with_psf_fwhm
from challenge.pipeline.sources.synthetic import render_psf
from challenge.pipeline.split import TEST, TRAIN_VAL, pool_for, split_galaxies
from challenge.pipeline.tracks import track_catalogue, track_pairs
from challenge.pipeline.workers import Parallel, dask_client

# (stage, advance, total): called with advance=0 when a stage starts.
Progress = Callable[[str, int, int], None]
CHUNK_BLENDS = 16
# Float fingerprints agree when every number differs by at most FINGERPRINT_RTOL times the root
# sum of squares of the array: the size of float32 rounding differences (a few units in the last
# place of every value, with random signs), far below the sky noise (v1 images: 3e-4 counts).
FINGERPRINT_RTOL = 2e-7
# (item, cell) steps of the Weyl sequences that weight the two ``mix`` sums: the fractional parts
# of sqrt(2), sqrt(3), sqrt(5) and sqrt(7).
_MIX_STEPS = ((0.41421356237309503, 0.7320508075688772), (0.2360679774997898, 0.6457513110645907))


def _weyl(n: int, step: float) -> np.ndarray:
    """(n,) float64 weights in [0, 1): the fractional parts of step, 2 step, ..., n step."""
    return np.remainder(np.arange(1, n + 1, dtype=np.float64) * step, 1.0)


def _bits(n: int) -> int:
    """Number of bits that tell ``n`` indices apart."""
    return max(n - 1, 0).bit_length()


@dataclass
class BlockSums:
    """Per-block sums of ``n`` float items of shape ``item_shape`` (see
    :meth:`Fingerprint.block_sums`): item sums, item sums of squares, cell sums per block and the
    two weighted item sums, each a list with one array per block of :attr:`Fingerprint.BLOCK`
    items."""

    n: int
    item_shape: tuple[int, ...]
    dtype: str
    rows: list[np.ndarray]
    sumsq: list[np.ndarray]
    cols: list[np.ndarray]
    mix: list[list[np.ndarray]]


class Fingerprint:
    """A checksum of an array streamed in blocks along axis 0 (items: blends, galaxies, rows).

    Float arrays get float64 sums with a tolerance (``FINGERPRINT_RTOL``), so a release
    regenerated on another machine still agrees; each array is seen as items x cells (the
    pixels of an image, the columns of a row):

    - ``sum`` of all values: any single value that changes by more than the tolerance;
    - ``items``: for every bit k of the item index, the sum of the items whose index has bit k
      set; ``cells`` the same for the cell index within an item. Two values swapped between
      different items (or different cells) differ in at least one such sum by their difference,
      and the bits that moved name the item (or cell) when one value changed;
    - ``mix``: two sums with pseudo-random weights (item weight x cell weight, each from a Weyl
      sequence), for changes that sums of rows and columns cannot see (values moved around a
      rectangle);
    - ``sumsq``, which sets the tolerance.

    Integer, boolean and string arrays get the SHA-256 of their bytes (little-endian, C order):
    any change at all.

    Float items are summed in blocks of :attr:`BLOCK` whatever blocks ``update`` is given, so the
    numbers do not depend on chunk sizes or workers (not even in the last bit).
    """

    BLOCK = 16

    def __init__(self) -> None:
        self.shape: tuple[int, ...] | None = None
        self.dtype = ""
        self.n = 0
        self._hash = None
        self._pending: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []
        self._sumsq: list[np.ndarray] = []
        self._mix: list[list[np.ndarray]] = [[] for _ in _MIX_STEPS]
        self._cols: np.ndarray | None = None

    @staticmethod
    def exact(dtype: np.dtype) -> bool:
        """Whether arrays of ``dtype`` are hashed (not float)."""
        return np.dtype(dtype).kind not in "fc"

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        self.dtype = str(block.dtype)
        if self.exact(block.dtype):
            import hashlib

            if self._hash is None:
                self._hash = hashlib.sha256()
            data = block.astype(block.dtype.newbyteorder("<"), copy=False)
            self._hash.update(np.ascontiguousarray(data).tobytes())
        else:
            self._pending.append(block.reshape(len(block), math.prod(block.shape[1:])))
            if sum(map(len, self._pending)) >= self.BLOCK:
                self._sum_pending(whole_blocks_only=True)
        self.shape = (self.n + len(block), *block.shape[1:])
        self.n += len(block)

    def _sum_pending(self, whole_blocks_only: bool) -> None:
        """Add the pending items to the sums, BLOCK items at a time."""
        pending = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        stop = len(pending) - len(pending) % self.BLOCK if whole_blocks_only else len(pending)
        self._pending = [pending[stop:]] if stop < len(pending) else []
        self._add(self.block_sums(pending[:stop]))

    @classmethod
    def block_sums(cls, items: np.ndarray) -> BlockSums:
        """The sums of float ``items`` (n, ...) that a fingerprint keeps, BLOCK items at a time.

        Computed where the items are made (a Dask task) and added in order with
        :meth:`add_block_sums` by the process that writes them, the fingerprint is the one that
        :meth:`update` gives, to the last bit: only these sums travel, not the items.
        """
        items = np.asarray(items)
        flat = items.reshape(len(items), math.prod(items.shape[1:]))
        weights = [_weyl(flat.shape[1], step) for _, step in _MIX_STEPS]
        out = BlockSums(len(items), tuple(items.shape[1:]), str(items.dtype), [], [], [],
                        [[] for _ in _MIX_STEPS])  # fmt: skip
        for start in range(0, len(flat), cls.BLOCK):
            b = flat[start : start + cls.BLOCK].astype(np.float64)
            out.rows.append(b.sum(axis=1))
            out.sumsq.append(np.einsum("ij,ij->i", b, b))
            out.cols.append(b.sum(axis=0))
            for w, sums in zip(weights, out.mix, strict=True):
                sums.append(np.einsum("ij,j->i", b, w))
        return out

    def add_block_sums(self, sums: BlockSums) -> None:
        """Append the items that ``sums`` describe (see :meth:`block_sums`): the items so far
        must fill whole blocks."""
        if self._pending:
            raise ValueError("block sums must start on a block boundary")
        self._add(sums)
        self.dtype = sums.dtype
        self.shape = (self.n + sums.n, *sums.item_shape)
        self.n += sums.n

    def _add(self, sums: BlockSums) -> None:
        self._rows += sums.rows
        self._sumsq += sums.sumsq
        for cols in sums.cols:
            self._cols = cols if self._cols is None else self._cols + cols
        for mine, theirs in zip(self._mix, sums.mix, strict=True):
            mine += theirs

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {"shape": list(self.shape or ()), "dtype": self.dtype}
        if self.exact(self.dtype or "u1"):
            import hashlib

            return {**head, "sha256": (self._hash or hashlib.sha256()).hexdigest()}
        if self._pending:
            self._sum_pending(whole_blocks_only=False)
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0)
        cols = self._cols if self._cols is not None else np.zeros(0)

        def bit_sums(values: np.ndarray, n: int) -> list[float]:
            index = np.arange(len(values))
            return [math.fsum(values[(index >> k) & 1 == 1]) for k in range(_bits(n))]

        return {
            **head,
            "sum": math.fsum(rows),
            "sumsq": math.fsum(np.concatenate(self._sumsq)) if self._sumsq else 0.0,
            "items": bit_sums(rows, len(rows)),
            "cells": bit_sums(cols, len(cols)) if len(rows) else [],
            "mix": [
                math.fsum(_weyl(len(rows), item_step) * np.concatenate(m)) if m else 0.0
                for (item_step, _), m in zip(_MIX_STEPS, self._mix, strict=True)
            ],
        }

    @classmethod
    def of(cls, dataset, chunk: int = 256) -> Fingerprint:
        """Fingerprint of an HDF5 dataset (or array), read ``chunk`` items at a time."""
        fp = cls()
        if len(dataset.shape) == 0:
            fp.update(np.asarray(dataset[()]).reshape(1))
            return fp
        for start in range(0, dataset.shape[0], chunk):
            fp.update(dataset[start : start + chunk])
        if dataset.shape[0] == 0:
            fp.shape, fp.dtype = tuple(dataset.shape), str(dataset.dtype)
        return fp


def _one_change(deltas: list[float], dsum: float, tol: float) -> int | None:
    """The index whose bits moved, when the bit-sum changes spell one changed value, else None.

    One value changed by d at index i moves the sum by d and the sum of bit k by d exactly when
    bit k of i is set.
    """
    if not all(abs(d) <= tol or abs(d - dsum) <= tol for d in deltas):
        return None
    return sum(1 << k for k, d in enumerate(deltas) if abs(d) > tol)


def fingerprints_differ(got: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """Why two fingerprint dicts differ, or None when they agree within tolerance.

    The answer names the first number that differs and, when one value changed, its item
    (blend) and cell (flat pixel index) positions.
    """
    if list(got["shape"]) != list(expected["shape"]):
        return f"shape {tuple(got['shape'])}, expected {tuple(expected['shape'])}"
    if got["dtype"] != expected["dtype"]:
        return f"dtype {got['dtype']}, expected {expected['dtype']}"
    if "sha256" in got or "sha256" in expected:
        if got.get("sha256") != expected.get("sha256"):
            return "content differs (SHA-256)"
        return None
    if "items" not in expected:
        return "fingerprint in an older format; regenerate the release with this blendbench"
    scale = math.sqrt(max(float(got["sumsq"]), float(expected["sumsq"]), 0.0))
    tol = FINGERPRINT_RTOL * scale + 1e-12
    dsum = float(got["sum"]) - float(expected["sum"])
    deltas, moved = {}, {}
    for key in ("items", "cells"):
        a, b = list(got[key]), list(expected[key])
        if len(a) != len(b):
            return f"{len(a)} {key} sums, expected {len(b)}"
        deltas[key] = [x - y for x, y in zip(a, b, strict=True)]
        moved[key] = [abs(d) > tol for d in deltas[key]]
    if abs(dsum) > tol:
        item = _one_change(deltas["items"], dsum, tol)
        cell = _one_change(deltas["cells"], dsum, tol)
        where = ""
        cells = tuple(got["shape"][1:]) or (1,)
        if item is not None and cell is not None and item < got["shape"][0] and cell < math.prod(
            cells
        ):
            index = (item, *np.unravel_index(cell, cells))
            index = index[: len(got["shape"])]
            where = f", one value changed at index {tuple(int(i) for i in index)}"
        return f"values changed (sum {got['sum']:.12g}, expected {expected['sum']:.12g}{where})"
    for key in ("items", "cells"):
        if any(moved[key]):
            k = moved[key].index(True)
            return (f"values moved between {key} (sum over the {key} with index bit {k}: "
                    f"{got[key][k]:.12g}, expected {expected[key][k]:.12g})")
    for k, (x, y) in enumerate(zip(got["mix"], expected["mix"], strict=True)):
        if abs(x - y) > tol:
            return f"values moved (weighted sum {k}: {x:.12g}, expected {y:.12g})"
    if abs(float(got["sumsq"]) - float(expected["sumsq"])) > 4 * FINGERPRINT_RTOL * scale**2:
        return f"sum of squares {got['sumsq']:.12g}, expected {expected['sumsq']:.12g}"
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


def h5_attributes(spec: ReleaseSpec, fname: str, noiseless: bool = True) -> dict[str, Any]:
    """The attributes of the release's HDF5 file ``fname`` (``galaxies.h5``, ``train.h5``...),
    all from the spec: written by ``generate``, checked by ``verify``."""
    split = "all" if fname == "galaxies.h5" else "test" if fname.startswith("test_") else (
        fname.removesuffix(".h5"))
    attrs: dict[str, Any] = {
        "release": spec.name,
        "version": spec.version,
        "split": split,
        "pixel_scale": spec.pixel_scale,
        "zero_point": spec.zero_point,
        "sky_sigma": spec.sky_sigma,
    }
    if fname == "galaxies.h5":
        attrs["noiseless"] = noiseless
    return attrs


def _h5_attrs(f: h5py.File, spec: ReleaseSpec, noiseless: bool = True) -> None:
    for key, value in h5_attributes(spec, Path(f.filename).name, noiseless).items():
        f.attrs[key] = value


def _dataset(f: h5py.File, name: str, shape: tuple[int, ...], dtype, compress: bool = True):
    # an empty split (a training-only or test-only release) gets an empty contiguous dataset
    chunks = (min(CHUNK_BLENDS, shape[0]), *shape[1:]) if len(shape) > 1 and shape[0] else None
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
        _h5_attrs(f, spec, noiseless=cat.noise_var is None)
        _write_small(f, "galaxy_id", np.asarray(cat.table["galaxy_id"], np.int64), prints)
        psf = psf_image(spec) if spec.source in CUSTOM_SOURCES else render_psf(spec)
        _write_small(f, "psf", psf, prints)
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
    workers: Parallel = 1,
) -> None:
    """Materialise a split's blends chunk by chunk into its HDF5 file(s) (``workers``: where the
    chunks are made, see :func:`challenge.pipeline.chunks.write_blends`)."""
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
            _h5_attrs(f, spec)
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
            delta_mag = np.asarray(pairs["mag_central"] - pairs["mag_companion"], np.float64)
            _write_small(truth_f, "delta_mag", delta_mag, prints)
            _write_small(truth_f, "distance_px", np.asarray(pairs["distance_px"], np.float64),
                         prints)
            morph = np.column_stack([pairs["morph_central"], pairs["morph_companion"]])
            _write_small(truth_f, "morphology", morph.astype("S10"), prints)
        images = _dataset(img_f, "images", (n, size, size), np.float32)
        masks = _dataset(truth_f, "masks", (n, 2, size, size), np.uint8)
        if progress:
            progress(split, 0, n)
        if n == 0:
            prints[_key(img_f, "images")] = Fingerprint.of(images).to_dict()
            prints[_key(truth_f, "masks")] = Fingerprint.of(masks).to_dict()
            return
        fp_img, fp_mask = write_blends(
            images, masks, cat.stamps, cat.masks, cat.noise_var, spec.sky_sigma, rows_c, rows_k,
            np.asarray(pairs["dx"]), np.asarray(pairs["dy"]), np.asarray(pairs["noise_seed"]),
            chunk_size, workers, (lambda k: progress(split, k, n)) if progress else None,
        )
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
    workers: Parallel = 1,
    progress: Progress | None = None,
) -> Path:
    """Generate the release ``spec`` into the new folder ``out``; returns ``out``.

    Args:
        spec: the release to make (``challenge.contract.release.preset("v1")`` for the frozen one).
        out: a folder that does not exist yet (or is empty).
        chunk_size: blends materialised and written per task (does not change the result).
        workers: where galaxies and blend chunks are made (does not change the result): 1 in
            this process, N or "local:N" worker processes, "tcp://HOST:PORT" a Dask cluster, or
            a Dask client (see :mod:`challenge.pipeline.workers`).
        progress: optional callback ``(stage, advance, total)``.

    Raises:
        ReleaseError: among others, before any work, when the release would not fit the free
            space where ``out`` goes.
    """
    check_space(spec, Path(out))
    with dask_client(workers) as client:
        return _generate_release(spec, out, chunk_size, client or 1, progress)


def check_space(spec: ReleaseSpec, out: Path) -> None:
    """Refuse, in one line, a release that would not fit the free disk space where ``out``
    goes (:func:`~challenge.contract.release.estimated_bytes`, with a tenth to spare)."""
    where = out.absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    need = 1.1 * estimated_bytes(spec)
    if need > free:
        raise ReleaseError(f"{out}: the release needs about {need / 1e9:,.1f} GB and "
                           f"{where} has {free / 1e9:,.1f} GB free; free some space, write it "
                           "elsewhere (--out) or ask for fewer blends")


def _generate_release(
    spec: ReleaseSpec,
    out: Path | str,
    chunk_size: int,
    workers: Parallel,
    progress: Progress | None,
) -> Path:
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
            _write_split(tmp, spec, split, pairs, cat, chunk_size, prints, progress, workers)
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


def _attribute_problems(f: h5py.File, fname: str, expected: dict[str, Any]) -> list[str]:
    got = dict(f.attrs)
    problems = []
    for key, value in expected.items():
        if key not in got:
            problems.append(f"{fname}: attribute '{key}' missing (expected {value!r})")
            continue
        have = got[key]
        have = have.decode() if isinstance(have, bytes) else have
        have = have.item() if isinstance(have, np.generic) else have
        try:
            same = bool(np.asarray(have == value).all()) and np.ndim(have) == 0
        except (TypeError, ValueError):
            same = False
        if not same:
            problems.append(f"{fname}: attribute '{key}' is {have!r}, expected {value!r}")
    problems += [f"{fname}: unexpected attribute '{k}'" for k in got if k not in expected]
    return [p + "; regenerate the release" for p in problems]


def _check_file(folder: Path, fname: str, datasets: dict[str, list[dict]], spec: ReleaseSpec,
                noiseless: bool, report: VerifyReport, extra_ok: bool = False) -> None:
    """Fingerprint every dataset of one HDF5 file and check its attributes against the spec.

    ``datasets``: {dataset: [(where, expected fingerprint), ...]}, compared in that order; any
    other object in the file is a problem unless ``extra_ok``.
    """
    path = folder / fname
    try:
        with h5py.File(path, "r") as f:
            report.problems += _attribute_problems(f, fname, h5_attributes(spec, fname, noiseless))
            if not extra_ok:
                report.problems += [f"{fname}: unexpected object '{name}'; regenerate the release"
                                    for name in f if name not in datasets]
            for dname, expectations in datasets.items():
                if dname not in f or not isinstance(f[dname], h5py.Dataset):
                    report.problems.append(
                        f"{fname}: dataset '{dname}' missing; regenerate the release"
                    )
                    continue
                got = Fingerprint.of(f[dname]).to_dict()
                for where, expected in expectations:
                    try:
                        why = fingerprints_differ(got, expected)
                    except (KeyError, TypeError, ValueError, IndexError):
                        why = "its fingerprint in release.toml is malformed"
                    if why:
                        report.problems.append(
                            f"{fname}: array '{dname}' differs from {where} ({why}); "
                            "regenerate the release"
                        )
                        break
                report.checked.append(f"{fname}:{dname}")
    except FileNotFoundError:
        report.problems.append(f"{fname}: file missing; regenerate the release")
    except OSError as err:
        report.problems.append(
            f"{fname}: unreadable HDF5 ({str(err).splitlines()[0]}); regenerate the release"
        )


def verify_release(folder: Path | str) -> VerifyReport:
    """Recompute every array's fingerprint, check every attribute, compare the tables.

    Compares against the folder's own ``release.toml`` and, for a frozen release whose tables
    ship with the kit (v1, mini, the shift tracks, cosmos-example), against the shipped
    fingerprints and tables too; the truth datasets of ``test_truth.h5`` must hold the values of
    ``pairs_test.ecsv``. A file that is missing or unreadable is reported once.
    """
    folder = Path(folder)
    info = ReleaseInfo.read(folder / "release.toml")
    report = VerifyReport()
    name = info.spec.name
    frozen = committed_dir(name) if name in PRESETS else None
    frozen_info = ReleaseInfo.read(frozen / "release.toml") if frozen else None
    if frozen_info is not None:
        why = spec_difference(info.spec, frozen_info.spec)
        if why:
            report.problems.append(
                f"release.toml: spec of {name!r} differs from the frozen release's ({why})"
            )
    by_file: dict[str, dict[str, list]] = {}
    frozen_prints = frozen_info.fingerprints if frozen_info is not None else {}
    # Fingerprints of an older blendbench (sums of |x|, no per-pixel sums) are not compared: a
    # frozen release is checked against the shipped ones, any other release must be regenerated.
    older = [k for k, fp in info.fingerprints.items() if isinstance(fp, dict) and "wsum" in fp]
    if older and not frozen_prints:
        report.problems.append(
            "release.toml: fingerprints written by an older blendbench, which missed single "
            "changed pixels; regenerate the release to verify it"
        )
    for key in sorted(set(info.fingerprints) | set(frozen_prints)):
        if ":" not in key:
            report.problems.append(f"release.toml: fingerprint key {key!r} is not FILE:DATASET; "
                                   "regenerate the release")
            continue
        fname, dname = key.split(":", 1)
        expectations = []
        own = info.fingerprints.get(key)
        if own is not None and key not in older:
            expectations.append(("release.toml", own))
        if key in frozen_prints:
            expectations.append((f"the frozen {name}", frozen_prints[key]))
        by_file.setdefault(fname, {})[dname] = expectations
    keys = set(info.fingerprints) | set(frozen_prints)
    for fname, datasets in by_file.items():
        _check_file(folder, fname, datasets, info.spec, "galaxies.h5:noise_var" not in keys,
                    report, extra_ok=bool(older) and not frozen_prints)
    pairs_test = None
    if frozen is not None:
        for table_name in COMMITTED_TABLES:
            if not table_file(frozen, table_name).is_file():
                continue  # a shift track ships its test tables only
            try:
                mine = Table.read(folder / table_name, format="ascii.ecsv")
            except FileNotFoundError:
                report.problems.append(f"{table_name}: table missing; regenerate the release")
                continue
            except Exception as err:  # astropy raises many types for a damaged table
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                report.problems.append(
                    f"{table_name}: unreadable table ({first}); regenerate the release"
                )
                continue
            why = table_difference(mine, read_table(frozen, table_name))
            if why:
                report.problems.append(
                    f"{table_name}: differs from the frozen {name} ({why}); regenerate the release"
                )
            report.checked.append(table_name)
            if table_name == "pairs_test.ecsv":
                pairs_test = mine
    elif (folder / "pairs_test.ecsv").is_file():
        try:
            pairs_test = Table.read(folder / "pairs_test.ecsv", format="ascii.ecsv")
        except Exception as err:  # astropy raises many types for a damaged table
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            report.problems.append(
                f"pairs_test.ecsv: unreadable table ({first}); regenerate the release"
            )
    truth = folder / "test_truth.h5"
    broken = any(p.startswith("test_truth.h5: file missing") or
                 p.startswith("test_truth.h5: unreadable") for p in report.problems)
    if pairs_test is not None and truth.is_file() and not broken:
        why = truth_arrays_difference(truth, pairs_test)
        if why:
            report.problems.append(f"test_truth.h5: {why}; regenerate the release")
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
