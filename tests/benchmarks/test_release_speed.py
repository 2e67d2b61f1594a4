"""Release generation speed and memory (budget for v1: <= 5 min, <= 2 GB on 2 cores).

Run with ``python -m pytest tests/benchmarks --benchmarks``. ``test_generate_v1`` builds the whole
v1 release (about 1.7 GB on disk, 1.5-2 min) into a temporary folder.
"""

import resource
import time

import numpy as np
from astropy.table import Table

from challenge.contract.release import preset
from challenge.pipeline.blending import materialise
from challenge.pipeline.catalogue import isolated_galaxy, slot_morphologies
from challenge.pipeline.files import generate_release


def test_render_and_measure_one_galaxy(benchmark):
    spec = preset("v1")
    morphs = slot_morphologies(spec)
    ids = iter(range(10**6))

    def one():
        i = next(ids) % len(morphs)
        return isolated_galaxy(spec, i, morphs[i])

    benchmark.pedantic(one, rounds=100, iterations=1)


def test_materialise_256_blends(benchmark, tiny_release):
    import h5py

    with h5py.File(tiny_release / "galaxies.h5") as f:
        stamps, masks = f["stamps"][:], f["masks"][:]
    pairs = Table.read(tiny_release / "pairs_train.ecsv")
    rng = np.random.default_rng(0)
    n = 256
    rows_c, rows_k = rng.integers(0, len(stamps), n), rng.integers(0, len(stamps), n)
    dx = np.resize(np.asarray(pairs["dx"]), n)
    dy = np.resize(np.asarray(pairs["dy"]), n)
    seeds = np.arange(n)
    benchmark(materialise, stamps, masks, rows_c, rows_k, dx, dy, seeds, 0.012)


def test_generate_v1(benchmark, tmp_path):
    def run():
        out = tmp_path / f"v1-{time.monotonic_ns()}"
        generate_release(preset("v1"), out, workers=2)
        return out

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    size = sum(p.stat().st_size for p in out.iterdir())
    peak_mb = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    benchmark.extra_info.update({"size_mb": size / 2**20, "peak_rss_mb": peak_mb})
    print(
        f"\nv1: {benchmark.stats['mean']:.1f} s, {size / 2**20:.0f} MiB, peak RSS {peak_mb:.0f} MB"
    )
    assert benchmark.stats["mean"] < 300, "over the 5-minute budget"
    assert peak_mb < 2048, "over the 2 GB budget"


def test_generate_every_shift_track(benchmark, tmp_path):
    """Each v1 shift track (2,000 test blends) within the 1-minute budget on 2 cores."""
    from challenge.contract.release import TRACK_SHIFTS

    times = {}

    def run():
        for name in TRACK_SHIFTS:
            t0 = time.perf_counter()
            generate_release(preset(name), tmp_path / f"{name}-{time.monotonic_ns()}", workers=2)
            times[name] = time.perf_counter() - t0

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"{k}_s": v for k, v in times.items()})
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in times.items()))
    assert max(times.values()) < 60, "a track over the 1-minute budget"
