"""Blends written chunk by chunk: made and compressed in tasks, written by the client in order.

A split's ``images`` (n, H, W) and ``masks`` (n, 2, H, W) datasets are cut into tasks of whole
HDF5 chunks. Each task (:func:`blend_task`, a pure function of its pair rows) materialises its
blends and compresses every HDF5 chunk exactly as the dataset's filter pipeline would (byte
shuffle, then deflate) and the per-block sums of the images' fingerprint
(``challenge.pipeline.files.Fingerprint.block_sums``). The client writes the compressed chunks
with ``write_direct_chunk``, adds the sums to the images' fingerprint and hashes the masks
(a SHA-256, which must see the bytes in order) from their decompressed chunks, in task order.
So noise, shifts, masks, gzip and the float sums run on the workers and only compressed bytes
and sums travel; the one writer copies bytes, inflates the (highly compressible) masks and
hashes them; the files and fingerprints are the same whatever the number of workers or the
chunk size, and nothing is written out of order. The
release folder itself is still written in a hidden sibling and renamed into place at the end
(``challenge.pipeline.files``), so a failed run leaves nothing half-written.

Tasks run in the command's process (1 worker) or on Dask workers
(:mod:`challenge.pipeline.workers`); the parent stamps and masks are sent to each worker once per
split.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from challenge.pipeline.blending import materialise
from challenge.pipeline.workers import Parallel, dask_client, in_order, n_threads, task_slices

if TYPE_CHECKING:
    from challenge.pipeline.files import BlockSums, Fingerprint


@dataclass(frozen=True)
class Layout:
    """How an HDF5 dataset stores its chunks: ``rows`` items per chunk along axis 0, the item
    shape and dtype, byte ``shuffle`` and the deflate ``level`` (None: uncompressed)."""

    rows: int
    item_shape: tuple[int, ...]
    dtype: str
    shuffle: bool
    level: int | None

    @classmethod
    def of(cls, dataset) -> Layout:
        """The layout of an h5py dataset chunked along axis 0 only, with at most shuffle and
        gzip as filters (what ``challenge.pipeline.files`` creates)."""
        chunks = dataset.chunks
        if chunks is None or tuple(chunks[1:]) != tuple(dataset.shape[1:]):
            raise ValueError(f"{dataset.name}: expected chunks of whole items along axis 0")
        if dataset.compression not in (None, "gzip") or dataset.fletcher32 or dataset.scaleoffset:
            raise ValueError(f"{dataset.name}: only shuffle and gzip filters are supported")
        level = dataset.compression_opts if dataset.compression == "gzip" else None
        return cls(chunks[0], tuple(dataset.shape[1:]), str(dataset.dtype),
                   bool(dataset.shuffle), level)


def encode(block: np.ndarray, layout: Layout) -> list[tuple[np.ndarray, int]]:
    """The stored bytes (uint8 arrays) of each HDF5 chunk of ``block`` (rows from a chunk
    boundary), with the filter mask to write them with.

    The last chunk is padded with zeros to full size, as HDF5 stores edge chunks. Shuffle puts
    byte k of every element together (a no-op for 1-byte types); deflate is zlib at the
    dataset's level, skipped (filter mask bit set) where it would not shrink the chunk, as HDF5
    does with an optional filter that fails.
    """
    block = np.ascontiguousarray(block, dtype=layout.dtype)
    out = []
    for start in range(0, len(block), layout.rows):
        part = block[start : start + layout.rows]
        if len(part) < layout.rows:
            pad = np.zeros((layout.rows - len(part), *layout.item_shape), dtype=layout.dtype)
            part = np.concatenate([part, pad])
        raw = part.view(np.uint8).reshape(-1, part.dtype.itemsize)
        data = (raw.T if layout.shuffle and part.dtype.itemsize > 1 else raw).tobytes()
        mask = 0
        if layout.level is not None:
            packed = zlib.compress(data, layout.level)
            if len(packed) <= len(data):
                data = packed
            else:
                mask = 1 << (1 if layout.shuffle else 0)
        # A uint8 array, not bytes: Dask pickles arrays out of band, so the compressed chunks
        # travel from a worker to the writer without being copied into the pickle stream.
        out.append((np.frombuffer(data, dtype=np.uint8), mask))
    return out


def decode(stored: list[tuple[np.ndarray, int]], layout: Layout, n: int) -> np.ndarray:
    """The first ``n`` items of the chunks that :func:`encode` made (its inverse)."""
    parts = []
    deflate_skipped = 1 << (1 if layout.shuffle else 0)
    itemsize = np.dtype(layout.dtype).itemsize
    for data, mask in stored:
        if layout.level is not None and not mask & deflate_skipped:
            data = zlib.decompress(data)
        raw = np.frombuffer(data, dtype=np.uint8)
        if layout.shuffle and itemsize > 1:
            raw = raw.reshape(itemsize, -1).T
        parts.append(np.ascontiguousarray(raw).view(layout.dtype))
    items = np.concatenate(parts) if parts else np.zeros(0, layout.dtype)
    return items.reshape(-1, *layout.item_shape)[:n]


@dataclass
class BlendChunk:
    """One task's blends, ready to write: rows ``start`` to ``start + n`` of the split, each
    dataset's stored chunks (bytes, filter mask), and the images' fingerprint sums."""

    start: int
    n: int
    image_sums: BlockSums
    stored_images: list[tuple[np.ndarray, int]]
    stored_masks: list[tuple[np.ndarray, int]]


def blend_task(
    stamps: np.ndarray,
    masks: np.ndarray,
    noise_var: np.ndarray | None,
    sigma: float,
    rows_central: np.ndarray,
    rows_companion: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    noise_seeds: np.ndarray,
    start: int,
    image_layout: Layout,
    mask_layout: Layout,
) -> BlendChunk:
    """Materialise and compress the blends of rows ``start ...`` of a split.

    ``stamps`` (n_galaxies, H, W) and ``masks`` are the parent catalogue's; the other arrays
    (n,) describe the pairs (see :func:`challenge.pipeline.blending.materialise`).
    """
    images, blend_masks = materialise(
        stamps, masks, rows_central, rows_companion, dx, dy, noise_seeds, sigma, noise_var
    )
    from challenge.pipeline.files import Fingerprint

    return BlendChunk(
        start, len(images), Fingerprint.block_sums(images), encode(images, image_layout),
        encode(blend_masks, mask_layout),
    )  # fmt: skip


def write_blends(
    images_ds,
    masks_ds,
    stamps: np.ndarray,
    masks: np.ndarray,
    noise_var: np.ndarray | None,
    sigma: float,
    rows_central: np.ndarray,
    rows_companion: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    noise_seeds: np.ndarray,
    chunk_size: int = 256,
    workers: Parallel = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[Fingerprint, Fingerprint]:
    """Make a split's blends and write them into its (empty, chunked) ``images`` and ``masks``
    HDF5 datasets; returns their fingerprints.

    Args:
        images_ds, masks_ds: h5py datasets (n, H, W) float32 and (n, 2, H, W) uint8.
        stamps, masks, noise_var: the parent catalogue (see ``ParentCatalogue``).
        sigma: sky noise, counts/px.
        rows_central, rows_companion, dx, dy, noise_seeds: (n,) the pairs.
        chunk_size: blends per task, rounded up to whole HDF5 chunks; on several workers the
            last tasks of a split are smaller (:func:`challenge.pipeline.workers.task_slices`).
            Neither changes the result.
        workers: where the tasks run (:data:`challenge.pipeline.workers.Parallel`).
        progress: called with the number of blends written after each task.
    """
    from challenge.pipeline.files import Fingerprint

    image_layout, mask_layout = Layout.of(images_ds), Layout.of(masks_ds)
    n = len(rows_central)
    rows = max(image_layout.rows, mask_layout.rows)
    if rows % image_layout.rows or rows % mask_layout.rows:
        raise ValueError("images and masks must have HDF5 chunks of nested sizes")
    fp_images, fp_masks = Fingerprint(), Fingerprint()

    def pairs_of(sl: slice) -> tuple:
        return (rows_central[sl], rows_companion[sl], dx[sl], dy[sl], noise_seeds[sl], sl.start,
                image_layout, mask_layout)

    with dask_client(workers) as client:
        cuts = task_slices(n, chunk_size, n_threads(client), rows)
        if client is None:
            done = (blend_task(stamps, masks, noise_var, sigma, *pairs_of(sl)) for sl in cuts)
        else:
            catalogue = client.scatter([stamps, masks, noise_var], broadcast=True, hash=False)
            tasks = ((*catalogue, sigma, *pairs_of(sl)) for sl in cuts)
            done = (future.result() for _, future in in_order(client, blend_task, tasks))
        for chunk in done:
            _write(images_ds, chunk.start, chunk.stored_images, image_layout)
            _write(masks_ds, chunk.start, chunk.stored_masks, mask_layout)
            fp_images.add_block_sums(chunk.image_sums)
            fp_masks.update(decode(chunk.stored_masks, mask_layout, chunk.n))
            if progress:
                progress(chunk.n)
    return fp_images, fp_masks


def _write(dataset, start: int, stored: list[tuple[np.ndarray, int]], layout: Layout) -> None:
    zeros = (0,) * len(layout.item_shape)
    for j, (data, mask) in enumerate(stored):
        dataset.id.write_direct_chunk((start + j * layout.rows, *zeros), data, mask)
