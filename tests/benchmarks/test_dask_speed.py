"""Scaling out on Dask: blends per second against workers, and a large custom release.

Run with ``python -m pytest tests/benchmarks/test_dask_speed.py --benchmarks -s``. Each test
prints its figures and records them in ``benchmark.extra_info``:

- generation (6,500 blends) and ``run`` (sep, 5,000 test blends) with 1 worker (this
  process), a 1-worker and a 2-worker LocalCluster; each setting first makes and runs a
  small warm-up release (imports, GalSim's profile tables), and the clusters are started
  before the clock starts (start and warm-up times are printed too). Each setting is timed
  ``ROUNDS`` times and its median kept (one run on these cores varies by about 10%).
  Parallel efficiency at 2 workers is
  T(1 worker, in-process) / (2 T(2 workers));
- ``run`` with photutils (about 6 times slower per blend than sep), the same three ways: how
  Dask's per-task cost weighs on a slower method;
- the machine's own ceiling: the in-process generation and sep run, alone and as two copies at
  once in two processes (no Dask). Their ratio is the best efficiency 2 workers can reach on
  these cores when the work itself is perfectly split;
- a custom synthetic release of ``BLENDBENCH_BENCH_BLENDS`` blends (default 100,000: 80% train,
  10% val, 10% test; 1,919 galaxies) on ``local:2``: wall time, peak memory of the command's
  process and of each worker process, size on disk.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from challenge.contract.release import ReleaseSpec
from challenge.loaders.release import load_release
from challenge.pipeline.files import generate_release
from challenge.pipeline.sources.synthetic import paper_mix

BENCH = ReleaseSpec(
    name="bench",
    seed=5,
    morphology_counts=paper_mix(200),
    n_blends={"train": 4_000, "val": 500, "test": 2_000},
)
N_BLENDS = sum(BENCH.n_blends.values())
# The sep run is timed on v1's number of test blends: at 1.3 ms a blend, 2,000 blends take about
# 1.5 s on two workers, and one run on these cores varies by more than 10%.
RUN_BENCH = ReleaseSpec(
    name="bench-run",
    seed=7,
    morphology_counts=paper_mix(200),
    n_blends={"train": 16, "val": 16, "test": 5_000},
)
# Made first on each setting, untimed: imports and GalSim's profile tables in every process.
WARM_UP = ReleaseSpec(
    name="warm", seed=6, morphology_counts=paper_mix(40),
    n_blends={"train": 64, "val": 16, "test": 32},
)
TIMES: dict[str, dict[str, float]] = {}
ROUNDS = 3  # timed runs per setting; the median is kept


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_up(workers, folder) -> float:
    """Seconds to make and run on the small warm-up release with ``workers``."""
    from baselines.sep_baseline import sep_method
    from challenge.loaders.protocol import run_method

    t0 = time.perf_counter()
    generate_release(WARM_UP, folder, workers=workers)
    run_method(sep_method, folder, 16, workers)
    return time.perf_counter() - t0


def _clusters(folder):
    """(n, client) of a warmed-up LocalCluster of n = 1, then 2 worker processes, as the
    kit starts them (``--scheduler local:N``)."""
    from challenge.pipeline.workers import dask_client

    for n in (1, 2):
        t0 = time.perf_counter()
        with dask_client(f"local:{n}") as client:
            started = time.perf_counter() - t0
            warm = _warm_up(client, folder / f"warm-{n}-{time.monotonic_ns()}")
            TIMES[f"local:{n} start"] = {"cluster_start_s": started, "warm_up_s": warm}
            yield n, client


def _median_of_rounds(timed: Callable[[int], dict[str, float]], key: str) -> dict[str, float]:
    """The figures of the median (by ``key``) of ``ROUNDS`` calls of ``timed(round)``."""
    runs = sorted((timed(k) for k in range(ROUNDS)), key=lambda r: r[key])
    return runs[len(runs) // 2]


def _generation(out, workers) -> dict[str, float]:
    """Median figures of ``ROUNDS`` generations of the benchmark release with ``workers``."""
    return _median_of_rounds(lambda k: _timed_generation(out / f"round-{k}", workers), "total_s")


def _timed_generation(out, workers) -> dict[str, float]:
    marks: dict[str, float] = {}

    def progress(stage, advance, total):
        marks.setdefault(stage, time.perf_counter())

    t0 = time.perf_counter()
    generate_release(BENCH, out, workers=workers, progress=progress)
    t1 = time.perf_counter()
    blends = t1 - marks["train"]
    return {"total_s": t1 - t0, "galaxies_s": marks["train"] - t0, "blends_s": blends,
            "blends_per_s": N_BLENDS / blends}


@pytest.fixture(scope="module")
def bench_release(tmp_path_factory):
    """The benchmark release, made in this process (its timing is the 1-worker reference)."""
    folder = tmp_path_factory.mktemp("bench")
    TIMES["in-process start"] = {"warm_up_s": _warm_up(1, folder / "warm")}
    TIMES["generate in-process"] = _generation(folder / "one", 1)
    return folder / "one" / "round-0"


@pytest.fixture(scope="module")
def run_release(tmp_path_factory):
    """A release of 5,000 test blends (v1's test size) for timing ``run`` with sep."""
    return generate_release(RUN_BENCH, tmp_path_factory.mktemp("bench-run") / "release")


def _efficiency(one: float, two: float) -> float:
    return one / (2 * two)


def test_generate_blends_per_s_vs_workers(benchmark, bench_release, tmp_path):
    for n, client in _clusters(tmp_path):
        if n == 2:
            TIMES["generate local:2"] = benchmark.pedantic(
                _generation, args=(tmp_path / "two", client), rounds=1, iterations=1
            )
        else:
            TIMES["generate local:1"] = _generation(tmp_path / "one", client)
    one, two = TIMES["generate in-process"], TIMES["generate local:2"]
    figures = {
        **{f"{k} {m}": v[m] for k, v in TIMES.items() if k.startswith("generate")
           for m in ("total_s", "galaxies_s", "blends_per_s")},
        "efficiency_2_workers_total": _efficiency(one["total_s"], two["total_s"]),
        "efficiency_2_workers_blends": _efficiency(one["blends_s"], two["blends_s"]),
        **{f"{k} {m}": v for k, d in TIMES.items() if k.endswith("start") for m, v in d.items()},
    }
    benchmark.extra_info.update(figures)
    print()
    for key, value in figures.items():
        print(f"  {key}: {value:.3f}")


def _run_vs_workers(benchmark, method, label: str, release, batch_size: int, tmp_path,
                    warm_up: bool) -> None:
    """Blends/s of ``run_method(method)`` in-process, on local:1 and local:2 (the last one
    timed by ``benchmark``), and the efficiency at 2 workers; ``warm_up``: one untimed run
    first in each setting."""
    from challenge.loaders.protocol import run_method

    def timed(workers=1):
        if warm_up:
            run_method(method, release, batch_size, workers)
        return statistics.median(run_method(method, release, batch_size, workers).seconds
                                 for _ in range(ROUNDS))  # fmt: skip

    seconds = {"in-process": timed()}
    for n, client in _clusters(tmp_path):
        if n == 2:
            seconds["local:2"] = benchmark.pedantic(timed, args=(client,), rounds=1,
                                                    iterations=1)  # fmt: skip
        else:
            seconds[f"local:{n}"] = timed(client)
    n_test = load_release(release, "test").blend_id.size
    figures = {
        **{f"run {label} {k} blends_per_s": n_test / s for k, s in seconds.items()},
        "efficiency_2_workers": _efficiency(seconds["in-process"], seconds["local:2"]),
    }
    benchmark.extra_info.update(figures)
    print()
    for key, value in figures.items():
        print(f"  {key}: {value:.3f}")


def test_run_blends_per_s_vs_workers(benchmark, run_release, tmp_path):
    from baselines.sep_baseline import sep_method

    _run_vs_workers(benchmark, sep_method, "sep", run_release, 250, tmp_path, warm_up=False)


def test_run_slower_method_blends_per_s_vs_workers(benchmark, bench_release, tmp_path):
    pytest.importorskip("photutils")
    from baselines.photutils_method import photutils_method

    _run_vs_workers(benchmark, photutils_method, "photutils", bench_release, 50, tmp_path,
                    warm_up=True)  # fmt: skip


# One copy of the in-process work, in its own interpreter: imports and warms up, says "ready",
# waits for a line on stdin, then prints the seconds of the timed work.
_COPY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from baselines.sep_baseline import sep_method
    from challenge.contract.release import ReleaseSpec
    from challenge.loaders.protocol import run_method
    from challenge.pipeline.files import generate_release
    from challenge.pipeline.sources.synthetic import paper_mix

    folder, release = Path(sys.argv[1]), Path(sys.argv[2])
    spec = ReleaseSpec(**eval(sys.argv[3]), morphology_counts=paper_mix(int(sys.argv[4])))
    warm = ReleaseSpec(name="warm", seed=6, morphology_counts=paper_mix(40),
                       n_blends={"train": 64, "val": 16, "test": 32})
    generate_release(warm, folder / "warm")
    run_method(sep_method, folder / "warm", 16)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    generate_release(spec, folder / "made")
    t1 = time.perf_counter()
    run_method(sep_method, release, 250)
    print(t1 - t0, time.perf_counter() - t1, flush=True)
""")


def _copies(k: int, bench_release, tmp_path) -> list[tuple[float, float]]:
    """(generate s, run s) of ``k`` copies of the in-process work started at the same moment."""
    spec = repr({"name": BENCH.name, "seed": BENCH.seed, "n_blends": BENCH.n_blends})
    n_galaxies = sum(BENCH.morphology_counts.values())
    procs = []
    for i in range(k):
        folder = tmp_path / f"copy-{k}-{i}"
        folder.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _COPY, str(folder), str(bench_release), spec, str(n_galaxies)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))  # fmt: skip
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        gen_s, run_s = (float(v) for v in p.stdout.readline().split())
        p.wait(timeout=60)
        out.append((gen_s, run_s))
    return out


def test_two_cores_ceiling(benchmark, bench_release, tmp_path):
    alone = _copies(1, bench_release, tmp_path)[0]
    together = benchmark.pedantic(_copies, args=(2, bench_release, tmp_path), rounds=1,
                                  iterations=1)  # fmt: skip
    figures = {
        "generate alone_s": alone[0],
        "generate two_at_once_s": max(t[0] for t in together),
        "run sep alone_s": alone[1],
        "run sep two_at_once_s": max(t[1] for t in together),
    }
    figures["ceiling_generate"] = alone[0] / figures["generate two_at_once_s"]
    figures["ceiling_run_sep"] = alone[1] / figures["run sep two_at_once_s"]
    benchmark.extra_info.update(figures)
    print()
    for key, value in figures.items():
        print(f"  {key}: {value:.3f}")


def test_large_custom_release(benchmark, tmp_path):
    from challenge.pipeline.workers import dask_client

    n = int(os.environ.get("BLENDBENCH_BENCH_BLENDS", "100000"))
    spec = ReleaseSpec(
        name="large",
        seed=9,
        morphology_counts=paper_mix(1919),
        n_blends={"train": n - 2 * (n // 10), "val": n // 10, "test": n // 10},
    )
    out = tmp_path / "large"
    with dask_client("local:2") as client:
        benchmark.pedantic(generate_release, args=(spec, out, 256, client), rounds=1,
                           iterations=1)
        workers_mb = sorted(
            rss / 1024 for rss in client.run(
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values()
        )
    size_gb = sum(p.stat().st_size for p in out.iterdir()) / 2**30
    figures = {
        "blends": n,
        "wall_s": benchmark.stats["mean"],
        "blends_per_s": n / benchmark.stats["mean"],
        "client_peak_rss_mb": _peak_rss_mb(),
        "worker_peak_rss_mb": workers_mb,
        "size_gib": size_gb,
    }
    benchmark.extra_info.update(figures)
    print(f"\n  {figures}")
    shutil.rmtree(out)
