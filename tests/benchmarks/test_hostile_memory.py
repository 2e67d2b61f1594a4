"""Budget: no file under 1 MB makes ``blendbench score`` use more than 300 MB.

Run with ``pytest tests/benchmarks --benchmarks``. Each file of a corpus of tiny hostile HDF5
files (declared shapes of gigabytes, 1e8 ids, compressed constant masks, huge chunks, virtual
datasets) and tables (a gzip bomb, 10^5 columns, billion-laughs YAML, FITS HDUs declaring
gigabytes) is scored by ``blendbench score`` in its own process against a 5,000-blend, 128 px
release with truth masks; the peak resident memory of that process is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from challenge.contract.release import MORPHOLOGIES, ReleaseInfo, ReleaseSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_table_bombs import bombs  # noqa: E402  (the table bombs of the unit tests)

N, SIZE = 5000, 128
LIMIT_MB = 300
# VmHWM: the peak resident memory of this process image (ru_maxrss would count the forking
# pytest process too); ru_maxrss where there is no /proc.
PROBE = """
import json, resource, sys
from challenge.cli import app
code = 0
try:
    app(args=sys.argv[1:], prog_name="blendbench")
except SystemExit as e:
    code = e.code
try:
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rc": code, "peak_mb": peak}))
"""


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "rel"
    root.mkdir()
    rng = np.random.default_rng(0)
    spec = ReleaseSpec(name="hostile", stamp_size=SIZE, n_blends={"train": 0, "val": 0, "test": N})
    (root / "release.toml").write_text(
        ReleaseInfo(spec=spec, counts={"test": N}, fingerprints={}).to_toml())
    ids = 10_000 + np.arange(N, dtype=np.int64)
    flux = rng.uniform(100, 1000, (N, 2))
    cols = {"blend_id": ids, "central_id": np.arange(N), "companion_id": np.arange(N),
            "dx": np.zeros(N), "dy": np.zeros(N), "mag_central": rng.uniform(19, 23, N),
            "mag_companion": rng.uniform(19, 23, N), "flux_central": flux[:, 0],
            "flux_companion": flux[:, 1], "r_e_central": np.full(N, 3.0),
            "r_e_companion": np.full(N, 3.0),
            "morph_central": np.array(MORPHOLOGIES)[np.arange(N) % 4],
            "morph_companion": np.array(MORPHOLOGIES)[np.arange(N) % 4],
            "distance_px": np.full(N, 10.0)}
    Table(cols).write(root / "pairs_test.ecsv", format="ascii.ecsv")
    with h5py.File(root / "test_truth.h5", "w") as f:
        f["blend_id"] = ids
        f.create_dataset("masks", shape=(N, 2, SIZE, SIZE), dtype="u1",
                         chunks=(16, 2, SIZE, SIZE), compression="gzip", fillvalue=1)
    return root, ids, flux


def corpus(root: Path, ids, flux) -> dict[str, Path]:
    """Tiny hostile files, by name."""
    files: dict[str, Path] = {}

    def h5(name, **datasets):
        path = root / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.attrs["release"] = "hostile"
            for key, value in datasets.items():
                if isinstance(value, dict):
                    f.create_dataset(key, **value)
                else:
                    f[key] = value
        files[name] = path

    base = {"blend_id": ids, "flux": flux}
    big = {"compression": "gzip"}
    h5("masks_200x2x2048x2048", **base, masks={"shape": (200, 2, 2048, 2048), "dtype": "f4",
                                               "chunks": (1, 1, 256, 256), **big})
    h5("ids_1e8", blend_id={"shape": (10**8,), "dtype": "i8", "chunks": (2**16,), **big},
       flux={"shape": (10**8, 2), "dtype": "f8", "chunks": (2**15, 2), **big})
    h5("flux_err_1e8_rows", **base, flux_err={"shape": (10**8, 2), "dtype": "f8",
                                              "chunks": (2**15, 2), **big})
    h5("detection_1e9", **base, detection={"shape": (10**9,), "dtype": "i1",
                                            "chunks": (2**20,), **big})
    h5("masks_constant_f4", **base, masks={"shape": (N, 2, SIZE, SIZE), "dtype": "f4",
                                           "chunks": (8, 2, SIZE, SIZE), "fillvalue": 0.7, **big})
    h5("masks_constant_f8", **base, masks={"shape": (N, 2, SIZE, SIZE), "dtype": "f8",
                                           "chunks": (4, 2, SIZE, SIZE), "fillvalue": 1.0, **big})
    h5("masks_constant_u1", **base, masks={"shape": (N, 2, SIZE, SIZE), "dtype": "u1",
                                           "chunks": (64, 2, SIZE, SIZE), "fillvalue": 1, **big})
    path = root / "masks_one_huge_chunk.h5"  # one written 1.3 GB chunk, gzip to a few hundred KB
    with h5py.File(path, "w") as f:
        f.attrs["release"] = "hostile"
        f["blend_id"], f["flux"] = ids, flux
        ds = f.create_dataset("masks", shape=(N, 2, SIZE, SIZE), dtype="u1",
                              chunks=(N // 2, 2, SIZE, SIZE), compression="gzip",
                              compression_opts=9)
        ds.write_direct(np.ones((N // 2, 2, SIZE, SIZE), "u1"), dest_sel=np.s_[: N // 2])
    files["masks_one_huge_chunk"] = path
    layout = h5py.VirtualLayout(shape=(10**8,), dtype="i8")
    layout[...] = h5py.VirtualSource("gone.h5", "x", shape=(10**8,))
    path = root / "virtual_ids_1e8.h5"
    with h5py.File(path, "w") as f:
        f.attrs["release"] = "hostile"
        f.create_virtual_dataset("blend_id", layout, fillvalue=7)
        f["flux"] = flux
    files["virtual_ids_1e8"] = path
    return files


def peak_memory(path: Path, data: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, "score", str(path), "--data", str(data),
                          "--n-boot", "0"], capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tiny_files_stay_within_the_memory_budget(release, tmp_path):
    root, ids, flux = release
    files = corpus(tmp_path, ids, flux)
    files.update({name: path for name, (path, _) in bombs(tmp_path, ids, flux, 800).items()})
    results = {}
    for name, path in files.items():
        size = path.stat().st_size
        assert size < 1_000_000, f"{name}: {size} bytes is not a tiny file"
        results[name] = {**peak_memory(path, root), "bytes": size}
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["peak_mb"]):
        print(f"{name:24s} {r['bytes']:>9,d} B  exit {r['rc']}  peak {r['peak_mb']:6.0f} MB")
    worst = max(results, key=lambda k: results[k]["peak_mb"])
    assert results[worst]["peak_mb"] <= LIMIT_MB, (worst, results[worst])
