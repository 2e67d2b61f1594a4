"""sep baseline throughput on 5,000 blends (budget: <= 1 min on 2 cores).

The 200 mini test blends are tiled to 5,000 so the benchmark needs no full release.
"""

from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
from astropy.table import Table

from baselines.sep_baseline import deblend_chunk


def _five_thousand(mini_release):
    with h5py.File(mini_release / "test_blends.h5") as f:
        images = f["images"][:]
    r_e = np.asarray(Table.read(mini_release / "pairs_test.ecsv")["r_e_central"])
    reps = int(np.ceil(5000 / len(images)))
    return np.tile(images, (reps, 1, 1))[:5000], np.tile(r_e, reps)[:5000]


def map_chunks(func, chunks, workers):
    """Apply ``func`` to each (images, r_e) chunk, in ``workers`` processes."""
    if workers == 1:
        return [func(*c) for c in chunks]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(func, *zip(*chunks, strict=True)))


def test_sep_baseline_5000_blends_one_core(benchmark, mini_release):
    images, r_e = _five_thousand(mini_release)
    chunks = [(images[s : s + 250], r_e[s : s + 250]) for s in range(0, 5000, 250)]
    result = benchmark.pedantic(map_chunks, args=(deblend_chunk, chunks, 1), rounds=1)
    assert sum(len(r["flux"]) for r in result) == 5000
    assert benchmark.stats["mean"] < 60


def test_sep_baseline_5000_blends_two_workers(benchmark, mini_release):
    images, r_e = _five_thousand(mini_release)
    chunks = [(images[s : s + 250], r_e[s : s + 250]) for s in range(0, 5000, 250)]
    result = benchmark.pedantic(map_chunks, args=(deblend_chunk, chunks, 2), rounds=1)
    assert sum(len(r["flux"]) for r in result) == 5000
    assert benchmark.stats["mean"] < 60
