"""The release's blends for Keras, and the dihedral transforms about pixel (64, 64).

:class:`BlendDataset` is a ``keras.utils.PyDataset`` over ``{train,val}.h5`` (or the test
inputs). When the split fits in memory (v1's train split: 1.3 GB as float32, plus 0.7 GB of
masks) it is read once and every batch is a gather from memory; otherwise it is read in
contiguous blocks of ``block`` blends: an epoch visits the blocks in a random order and the blends
of each block in a random order, so batches are well mixed while every HDF5 chunk is decompressed
once per epoch. The shuffling draws from ``np.random.default_rng([seed, epoch])``: an epoch's
batches depend only on (seed, epoch), which makes a resumed run see exactly the batches the
uninterrupted run would have seen (with the same block order in both modes).

For knots that share the light where two galaxies overlap, :func:`isolated_light` reads the
split's two isolated noiseless galaxies per blend (``galaxies.h5`` and ``pairs_<split>.ecsv``),
and each batch's footprints then carry each galaxy's share of every pixel's light.

Augmentation is not done here: it runs on the accelerator inside the compiled training step
(``baselines.cnn.augment``). The numpy :func:`dihedral` serves test-time augmentation.

Targets: ``flux`` as log10 counts (batch, 2) [central, companion]; ``masks`` as float32
(batch, 128, 128, 2) channels last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from challenge.contract.errors import ReleaseError
from challenge.contract.ids import id_positions
from challenge.contract.release import read_table
from challenge.pipeline.blending import shift_image

N_DIHEDRAL = 8
MIN_FLUX = 1e-3  # counts: truth fluxes are clipped here before log10


def reflect(a: np.ndarray, axis: int) -> np.ndarray:
    """Mirror ``a`` about index ``n // 2`` along ``axis`` (index i -> (n - i) mod n).

    For a 128 px stamp the central pixel 64 stays at 64 (``np.flip`` alone would move it to
    63); row / column 0 maps onto itself.
    """
    return np.roll(np.flip(a, axis=axis), 1, axis=axis)


def dihedral(a: np.ndarray, k: int, axes: tuple[int, int] = (-2, -1), inverse: bool = False):
    """One of the 8 symmetries of the square about pixel (n//2, n//2), ``k`` in 0..7.

    Bit 0: transpose the two ``axes``; bit 1: mirror along the first axis; bit 2: mirror along
    the second (applied in this order; ``inverse`` undoes them in the reverse order). Works on
    any leading / trailing dimensions, so images (n, 128, 128) and masks (n, 2, 128, 128) are
    transformed alike with the right ``axes``.
    """
    ax0, ax1 = (ax % a.ndim for ax in axes)
    steps = [
        (k & 1, lambda b: np.swapaxes(b, ax0, ax1)),
        (k & 2, lambda b: reflect(b, ax0)),
        (k & 4, lambda b: reflect(b, ax1)),
    ]
    if inverse:
        steps = steps[::-1]
    for on, step in steps:
        if on:
            a = step(a)
    return a


def check_split_file(path: Path, needs: tuple[str, ...]) -> int:
    """Number of blends in an HDF5 split file, after checking it holds the ``needs`` datasets."""
    path = Path(path)
    if not path.is_file():
        raise ReleaseError(
            f"{path}: missing; generate the release with `blendbench generate --out DIR`"
        )
    with h5py.File(path, "r") as f:
        missing = [name for name in ("images", *needs) if name not in f]
        if missing:
            raise ReleaseError(
                f"{path}: no dataset {', '.join(repr(m) for m in missing)}; "
                "regenerate the release with `blendbench generate`"
            )
        n = int(f["images"].shape[0])
    if n == 0:
        raise ReleaseError(
            f"{path}: no blends in this split; pass --data a release generated with some "
            "(--blends TRAIN,VAL,TEST)"
        )
    return n


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable; 0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class IsolatedLight:
    """The two isolated noiseless galaxies of every blend of a split, to share its light.

    A blend is its central galaxy's stamp plus its companion's shifted by (dx, dy), plus noise
    (``challenge.pipeline.blending``); these are the same noiseless stamps.

    Attributes:
        stamps: (n_galaxies, H, W) float32 noiseless galaxy images, counts (``galaxies.h5``),
            negative pixels set to 0.
        rows: (n_blends, 2) rows of ``stamps`` of [central, companion], in the split's order.
        shifts: (n_blends, 2) the companion's (dx, dy) shift, px.
    """

    stamps: np.ndarray
    rows: np.ndarray
    shifts: np.ndarray

    def shares(self, idx: np.ndarray, light: bool = False) -> np.ndarray:
        """(len(idx), H, W, 2) float32: each galaxy's share of every pixel's light, [central,
        companion], summing to 1 where either has light and 0 elsewhere; with ``light``,
        (len(idx), H, W, 3): then the two galaxies' summed light, counts (the noiseless blend)."""
        idx = np.asarray(idx)
        central = self.stamps[self.rows[idx, 0]]
        companion = np.zeros_like(central)
        for k, (r, (dx, dy)) in enumerate(zip(self.rows[idx, 1], self.shifts[idx], strict=True)):
            companion[k] = shift_image(self.stamps[r], int(dx), int(dy))
        total = central + companion
        # divided straight into the output's channels: no stacked copy (this runs every batch)
        out = np.zeros((*central.shape, 3 if light else 2), dtype=np.float32)
        np.divide(central, total, out=out[..., 0], where=total > 0)
        np.divide(companion, total, out=out[..., 1], where=total > 0)
        if light:
            out[..., 2] = total
        return out


def isolated_light(data: Path | str, split: str, blend_ids: np.ndarray) -> IsolatedLight:
    """The isolated galaxies of the blends ``blend_ids`` (the split file's order) of a release
    folder, from ``galaxies.h5`` ('galaxy_id', 'stamps') and ``pairs_<split>.ecsv``.

    Raises:
        ReleaseError: naming the file that is missing or lacks a field or a galaxy or blend.
    """
    data = Path(data)
    gal_path, pairs_path = data / "galaxies.h5", data / f"pairs_{split}.ecsv"
    fix = "regenerate the release with `blendbench generate`"
    try:
        with h5py.File(gal_path, "r") as f:
            ids = np.asarray(f["galaxy_id"][:])
            # negative pixels (FFT ringing far out) own no light: clipped once, not per batch
            stamps = np.maximum(np.asarray(f["stamps"][:], dtype=np.float32), 0.0)
    except (OSError, KeyError) as err:
        raise ReleaseError(f"{gal_path}: no noiseless 'stamps' and 'galaxy_id' ({err}); {fix}") \
            from None
    pairs = read_table(data, pairs_path.name)
    names = ("blend_id", "central_id", "companion_id", "dx", "dy")
    if not set(names) <= set(pairs.colnames):
        raise ReleaseError(f"{pairs_path}: lacks one of the columns {', '.join(names)}; {fix}")
    pair_ids, central, companion, dx, dy = (np.asarray(pairs[c]) for c in names)
    blend_ids = np.asarray(blend_ids)
    at, found = id_positions(pair_ids, blend_ids)
    if not found.all():
        raise ReleaseError(f"{pairs_path}: no pair for blend_id {int(blend_ids[~found][0])} of "
                           f"the {split} split ({int((~found).sum())} missing); {fix}")
    members = np.stack([central[at], companion[at]], axis=1)
    rows, found = id_positions(ids, members)
    if not found.all():
        raise ReleaseError(f"{gal_path}: no stamp of galaxy_id {int(members[~found][0])} "
                           f"({pairs_path.name}); {fix}")
    return IsolatedLight(stamps, rows, np.stack([dx[at], dy[at]], axis=1).astype(np.int64))


class BlendDataset(keras.utils.PyDataset):
    """Batches of raw blends (batch, 128, 128, 1) counts and their targets from a split file.

    Args:
        path: ``train.h5`` / ``val.h5`` (targets) or ``test_blends.h5`` (``targets=()``).
        batch_size: blends per batch (the last batch may be smaller).
        targets: ``("flux",)``, ``("masks",)`` or ``("masks", "flux")``; one target gives a
            plain array, several a dict keyed by output name.
        shuffle: shuffle blocks and blends within blocks each epoch.
        seed: the run's seed; with the epoch it sets the shuffling.
        block: blends read from the file at once (a multiple of the 16-blend HDF5 chunks).
        limit: use only the first ``limit`` blends (quick runs, tests).
        in_memory: hold the split in memory (None: when it takes less than half of the memory
            available now).
        footprints: also give the truth segmentation maps as an input: each batch's inputs are
            then ``{"blend": (batch, 128, 128, 1), "footprints": (batch, 128, 128, 2)}``
            (training-time knots, ``baselines.cnn.augment``).
        isolated: with ``footprints``, the split's isolated galaxies: the footprints then carry
            each galaxy's share of the light as two more channels, (batch, 128, 128, 4).
        noiseless: with ``isolated``, a fifth channel, the noiseless blend (the two isolated
            galaxies' light, counts), for a quieter sky.
        **kwargs: ``keras.utils.PyDataset`` options (workers, use_multiprocessing, ...).
    """

    def __init__(
        self,
        path: Path | str,
        batch_size: int = 32,
        targets: tuple[str, ...] = ("flux",),
        shuffle: bool = False,
        seed: int = 0,
        block: int = 512,
        limit: int | None = None,
        in_memory: bool | None = None,
        footprints: bool = False,
        isolated: IsolatedLight | None = None,
        noiseless: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.path = Path(path)
        self.footprints = bool(footprints)
        self.isolated = isolated
        self.noiseless = bool(noiseless)
        n = check_split_file(self.path, (*targets, *(("masks",) if footprints else ())))
        self.n = min(n, limit) if limit else n
        self.batch_size = int(batch_size)
        self.targets = tuple(targets)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.block = int(block)
        self._file: h5py.File | None = None
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._memory: dict[str, np.ndarray] | None = None
        if in_memory is None:
            in_memory = 2 * self.nbytes() < available_memory()
        if in_memory:
            with h5py.File(self.path, "r") as f:
                self._memory = {name: f[name][: self.n] for name in self._fields()}
        self.set_epoch(0)

    def _fields(self) -> tuple[str, ...]:
        """The datasets read from the split file."""
        extra = ("masks",) if self.footprints and "masks" not in self.targets else ()
        return ("images", *self.targets, *extra)

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    def nbytes(self) -> int:
        """Bytes the split's images and targets take in memory (as stored)."""
        with h5py.File(self.path, "r") as f:
            return sum(
                self.n * int(np.prod(f[name].shape[1:])) * f[name].dtype.itemsize
                for name in self._fields()
            )

    # ---- epoch state
    def set_epoch(self, epoch: int) -> None:
        """Fix the order of ``epoch`` (a function of (seed, epoch) only)."""
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        starts = np.arange(0, self.n, self.block)
        if self.shuffle:
            starts = rng.permutation(starts)
        order = []
        for s in starts:
            idx = np.arange(s, min(s + self.block, self.n))
            order.append(rng.permutation(idx) if self.shuffle else idx)
        self.order = np.concatenate(order) if order else np.zeros(0, np.int64)

    # ---- reading
    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def _read_block(self, start: int) -> dict[str, np.ndarray]:
        if start not in self._cache:
            f = self._h5()
            stop = min(start + self.block, self.n)
            data = {name: f[name][start:stop] for name in self._fields()}
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[start] = data
        return self._cache[start]

    def read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Raw arrays (release layout) of the blends ``idx``, in that order."""
        idx = np.asarray(idx)
        if self._memory is not None:
            return {name: arr[idx] for name, arr in self._memory.items()}
        blocks = (idx // self.block) * self.block
        out: dict[str, np.ndarray] = {}
        for b in np.unique(blocks):
            sel = np.nonzero(blocks == b)[0]
            data = self._read_block(int(b))
            for name, arr in data.items():
                if name not in out:
                    out[name] = np.empty((len(idx), *arr.shape[1:]), arr.dtype)
                out[name][sel] = arr[idx[sel] - b]
        return out

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        data = self.read(idx)
        masks = data.get("masks")
        x = data["images"][..., None].astype(np.float32)
        maps = np.moveaxis(masks, 1, -1).astype(np.float32) if masks is not None else None
        if self.footprints:
            fp = maps if self.isolated is None else np.concatenate(
                [maps, self.isolated.shares(idx, self.noiseless)], axis=-1)  # fmt: skip
            x = {"blend": x, "footprints": fp}
        if not self.targets:
            return (x,)
        y: dict[str, np.ndarray] = {}
        if "flux" in self.targets:
            y["flux"] = np.log10(np.maximum(data["flux"], MIN_FLUX)).astype(np.float32)
        if "masks" in self.targets:
            y["masks"] = maps
        return x, (y[self.targets[0]] if len(self.targets) == 1 else y)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._cache.clear()
        self._memory = None

    def __getstate__(self):  # worker processes reopen the file
        state = self.__dict__.copy()
        state["_file"], state["_cache"] = None, {}
        return state
