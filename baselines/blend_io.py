"""Reading a release's test blends in chunks and mapping a per-chunk method over them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

from challenge.release_files import blends_file, read_table


def test_chunks(folder: Path | str, chunk: int = 256) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (slice into the test set, images (n, H, W) float32) chunk by chunk."""
    with h5py.File(blends_file(folder, "test"), "r") as f:
        images = f["images"]
        for start in range(0, images.shape[0], chunk):
            sl = slice(start, min(start + chunk, images.shape[0]))
            yield sl, images[sl]


def test_pairs(folder: Path | str) -> Table:
    """The test pair table, in the order of the blends in test_blends.h5 (checked)."""
    pairs = read_table(folder, "pairs_test.ecsv")
    with h5py.File(blends_file(folder, "test"), "r") as f:
        ids = f["blend_id"][:]
    if not np.array_equal(ids, np.asarray(pairs["blend_id"])):
        raise ValueError("test_blends.h5 and pairs_test.ecsv list different blend ids")
    return pairs


def map_chunks(
    func: Callable[..., dict[str, np.ndarray]],
    chunks: list[tuple[Any, ...]],
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Apply ``func(*chunk)`` to every chunk (in ``workers`` processes) and concatenate.

    ``func`` returns a dict of arrays whose first axis is the chunk's blends; results come back
    in chunk order whatever the number of workers.
    """
    parts: list[dict[str, np.ndarray]] = []

    def collect(result: dict[str, np.ndarray]) -> None:
        parts.append(result)
        if progress:
            progress(len(next(iter(result.values()))))

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(func, *zip(*chunks, strict=True)):
                collect(result)
    else:
        for args in chunks:
            collect(func(*args))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
