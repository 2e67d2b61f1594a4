"""Lazy numpy access to one split of a release: ``load_release(name_or_folder, split)``.

Nothing is read until asked for: the pair table when a per-blend column is first used, the HDF5
arrays slice by slice. Per blend ``i`` (the row order of ``pairs_{split}.ecsv`` and of the HDF5
files):

- ``images``: (n, H, W) float32 blend in counts, central galaxy on pixel (H // 2, W // 2);
- ``masks``: (n, 2, H, W) uint8 0/1 truth segmentation of [central, companion];
- ``flux``: (n, 2) float64 [central, companion] truth flux in counts (sep FLUX_AUTO of the
  isolated galaxy); ``model_flux``: the noiseless model flux (counts);
- ``blend_id``: (n,) int64.

The test split reads its images from ``test_blends.h5`` and its labels from ``test_truth.h5``
and ``pairs_test.ecsv``. Framework adapters (:meth:`ReleaseSplit.to_torch`, ``to_tf``,
``to_jax``) live in :mod:`challenge.loaders.frameworks` and import their framework only when
called::

    from challenge import load_release

    train = load_release("releases/v1", "train")
    train.images[:8].shape                  # (8, 128, 128), read now
    for batch in train.batches(64, shuffle=True, seed=0):
        batch["images"], batch["flux"]      # numpy arrays of 64 blends
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from challenge.contract.errors import ReleaseError
from challenge.contract.release import (
    DEFAULT_SEED,
    SPLITS,
    ReleaseInfo,
    blends_file,
    labels_file,
    read_table,
    resolve_release,
)

FIELDS = ("images", "masks", "flux", "model_flux", "blend_id")
DEFAULT_FIELDS = ("images", "flux")
BLOCK = 256  # blends read at once by `batches` (a multiple of the files' 16-blend chunks)
CACHE_BYTES = 64 * 2**20  # HDF5 chunk cache per open file: consecutive reads decompress once


class H5Array:
    """One dataset of a release's HDF5 file, read lazily with numpy indexing.

    ``shape``, ``dtype`` and ``len`` without reading; ``a[i]``, ``a[i:j]``, ``a[i, 32:96]`` and
    ``a[[i, k]]`` (any order, repeats allowed) read just those; ``np.asarray(a)`` reads all. The
    file is opened at first access and kept open; a copy sent to another process (a PyTorch
    ``DataLoader`` worker) opens its own.
    """

    def __init__(self, path: Path, name: str):
        import h5py

        self.path, self.name = Path(path), name
        self._file: Any = None
        self._pid: int | None = None
        try:
            with h5py.File(self.path, "r") as f:
                ds = f[name]
                self.shape: tuple[int, ...] = tuple(ds.shape)
                self.dtype = ds.dtype
        except KeyError:
            raise ReleaseError(
                f"{self.path}: dataset '{name}' missing; regenerate the release"
            ) from None
        except OSError as err:
            raise ReleaseError(
                f"{self.path}: unreadable HDF5 ({str(err).splitlines()[0]}); regenerate the release"
            ) from None

    def _dataset(self):
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r", rdcc_nbytes=CACHE_BYTES, rdcc_nslots=10007)
            self._pid = os.getpid()
        return self._file[self.name]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        ds = self._dataset()
        if isinstance(index, int | np.integer | slice | tuple) or index is Ellipsis:
            return ds[index]  # h5py reads these directly (tuples: item, then pixels)
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} items")
        unique, inverse = np.unique(index, return_inverse=True)  # h5py reads sorted indices
        return ds[unique.tolist()][inverse.ravel()].reshape(*index.shape, *self.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __repr__(self) -> str:
        return f"H5Array({self.path.name}:{self.name}, shape={self.shape}, dtype={self.dtype})"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ReleaseSplit:
    """One split of a release, read lazily (see the module docstring for the fields).

    Attributes:
        folder: the release folder (or the tables shipped with the kit, for a release name).
        info: the release's ``release.toml`` (spec: stamp size, pixel scale, zero point...).
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    def __init__(self, folder: Path, info: ReleaseInfo, split: str):
        self.folder, self.info, self.split = Path(folder), info, split

    def __repr__(self) -> str:
        return f"ReleaseSplit({self.info.spec.name!r}, {self.split!r}, n={len(self)})"

    def __len__(self) -> int:
        return len(self.blend_id)

    @cached_property
    def pairs(self):
        """The pair table ``pairs_{split}.ecsv`` (astropy ``Table``), one row per blend: ids,
        shifts, magnitudes, fluxes, radii, morphologies, distance."""
        return read_table(self.folder, f"pairs_{self.split}.ecsv")

    def _pair_columns(self, prefix: str) -> np.ndarray:
        cols = (f"{prefix}_central", f"{prefix}_companion")
        missing = [c for c in cols if c not in self.pairs.colnames]
        if missing:
            raise ReleaseError(
                f"{self.folder / f'pairs_{self.split}.ecsv'}: no column "
                f"{', '.join(missing)}; regenerate the release"
            )
        return np.stack([np.asarray(self.pairs[c], dtype=np.float64) for c in cols], axis=1)

    @cached_property
    def blend_id(self) -> np.ndarray:
        """(n,) int64 blend ids."""
        return np.asarray(self.pairs["blend_id"], dtype=np.int64)

    @cached_property
    def flux(self) -> np.ndarray:
        """(n, 2) float64 [central, companion] truth flux (sep FLUX_AUTO), counts."""
        return self._pair_columns("flux")

    @cached_property
    def model_flux(self) -> np.ndarray:
        """(n, 2) float64 [central, companion] noiseless model flux, counts."""
        return self._pair_columns("model_flux")

    def _h5(self, path: Path, name: str) -> H5Array:
        array = H5Array(path, name)
        ids = H5Array(path, "blend_id")[:]
        if not np.array_equal(ids, self.blend_id):
            raise ReleaseError(
                f"{path}: blend ids differ from pairs_{self.split}.ecsv; regenerate the release"
            )
        return array

    @cached_property
    def images(self) -> H5Array:
        """(n, H, W) float32 blends in counts, read lazily."""
        return self._h5(blends_file(self.folder, self.split), "images")

    @cached_property
    def masks(self) -> H5Array:
        """(n, 2, H, W) uint8 0/1 truth masks of [central, companion], read lazily."""
        return self._h5(labels_file(self.folder, self.split), "masks")

    def arrays(self, fields=DEFAULT_FIELDS, index=slice(None)) -> dict[str, np.ndarray]:
        """``{field: array}`` of the blends at ``index`` (an int, a slice or positions)."""
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}: choose from {', '.join(FIELDS)}")
        return {f: getattr(self, f)[index] for f in fields}

    def batches(
        self,
        batch_size: int = 64,
        fields=DEFAULT_FIELDS,
        *,
        shuffle: bool = False,
        seed: int = DEFAULT_SEED,
        epoch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield ``{field: array}`` batches of ``batch_size`` blends (numpy, as stored).

        Blends are read in contiguous blocks of :data:`BLOCK`, so every compressed HDF5 chunk is
        read once per pass. With ``shuffle`` the blocks come in a random order and the blends of
        each block are shuffled, from ``np.random.default_rng([seed, epoch])``: an epoch's
        batches depend only on (seed, epoch).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected >= 1")
        n = len(self)
        rng = np.random.default_rng([seed, epoch]) if shuffle else None
        starts = np.arange(0, n, BLOCK)
        if rng is not None:
            starts = rng.permutation(starts)
        pending: dict[str, np.ndarray] | None = None
        for start in starts:
            rows = self.arrays(fields, slice(int(start), min(int(start) + BLOCK, n)))
            if rng is not None:
                order = rng.permutation(len(next(iter(rows.values()))))
                rows = {k: v[order] for k, v in rows.items()}
            pending = (
                rows
                if pending is None
                else {k: np.concatenate([pending[k], v]) for k, v in rows.items()}
            )
            while len(next(iter(pending.values()))) >= batch_size:
                yield {k: v[:batch_size] for k, v in pending.items()}
                pending = {k: v[batch_size:] for k, v in pending.items()}
        if pending is not None and len(next(iter(pending.values()))) and not drop_last:
            yield pending

    def to_torch(self, fields=DEFAULT_FIELDS):
        """A ``torch.utils.data.Dataset`` of this split (imports torch); see
        :func:`challenge.loaders.frameworks.torch_dataset`."""
        from challenge.loaders.frameworks import torch_dataset

        return torch_dataset(self, fields)

    def to_tf(self, fields=DEFAULT_FIELDS, *, shuffle: bool = False, seed: int = DEFAULT_SEED):
        """A ``tf.data.Dataset`` of this split (imports TensorFlow); see
        :func:`challenge.loaders.frameworks.tf_dataset`."""
        from challenge.loaders.frameworks import tf_dataset

        return tf_dataset(self, fields, shuffle=shuffle, seed=seed)

    def to_jax(self, batch_size: int = 64, fields=DEFAULT_FIELDS, **kwargs):
        """:meth:`batches` as JAX arrays (imports jax); see
        :func:`challenge.loaders.frameworks.jax_batches`."""
        from challenge.loaders.frameworks import jax_batches

        return jax_batches(self, batch_size, fields, **kwargs)


def load_release(data: str | Path, split: str) -> ReleaseSplit:
    """One split of a release, read lazily.

    Args:
        data: a release folder written by ``blendbench generate``, or the name of a release
            shipped with the kit (``"v1"``: its tables only; images need a generated folder).
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        ReleaseError: an unknown release or split, a split the release does not hold, or a
            folder of a frozen release whose test truth differs from the shipped one.
    """
    if split not in SPLITS:
        raise ReleaseError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    folder, info = resolve_release(data)
    if not info.spec.n_blends.get(split):
        raise ReleaseError(
            f"{folder / 'release.toml'}: release {info.spec.name!r} has no {split} blends"
            + (" (a shift track holds test blends only)" if info.spec.is_track else "")
            + f"; pass a release generated with {split} blends (--blends TRAIN,VAL,TEST)"
        )
    return ReleaseSplit(folder, info, split)
