"""Dask: custom synthetic releases, and the same release and predictions on any cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.release import ReleaseInfo, ReleaseSpec
from challenge.pipeline.files import generate_release
from challenge.pipeline.sources.synthetic import PAPER_MIX, paper_mix
from challenge.pipeline.workers import (
    ClusterError,
    parse_scheduler,
    resolve_parallel,
    task_slices,
)

runner = CliRunner()
H5_FILES = ("galaxies.h5", "train.h5", "val.h5", "test_blends.h5", "test_truth.h5")


@pytest.fixture(scope="module")
def cluster():
    """A Dask client of a 2-worker LocalCluster (processes, one thread each)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=":0") as local, Client(local) as client:
        yield client


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# ------------------------------------------------------------------------------------------
# custom synthetic releases


def test_paper_mix_is_exact_and_scales():
    assert paper_mix(1919) == PAPER_MIX == {"bulge": 352, "disc": 433, "bulge+disc": 702,
                                            "irregular": 432}
    for n in (4, 5, 37, 400, 100_000):
        mix = paper_mix(n)
        assert sum(mix.values()) == n
        for m, count in mix.items():  # each within one galaxy of its exact share
            assert abs(count - n * PAPER_MIX[m] / 1919) < 1


def test_custom_synthetic_release_from_the_cli(tmp_path):
    out = tmp_path / "syn"
    result = runner.invoke(app, ["generate", "--source", "synthetic", "--blends", "30,10,10",
                                 "--galaxies", "24", "--seed", "3", "--workers", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    info = ReleaseInfo.read(out / "release.toml")
    assert info.spec.source == "synthetic" and info.spec.name == "synthetic"
    assert info.spec.morphology_counts == paper_mix(24)
    assert info.spec.n_blends == {"train": 30, "val": 10, "test": 10}
    galaxies = Table.read(out / "galaxies.ecsv")
    assert 20 <= len(galaxies) <= 24  # galaxies without a partner in their split are left out
    with h5py.File(out / "train.h5") as f:
        assert f["images"].shape == (30, 128, 128) and f["masks"].shape == (30, 2, 128, 128)


def test_max_galaxies_caps_a_synthetic_release(tmp_path):
    out = tmp_path / "capped"
    result = runner.invoke(app, ["generate", "--source", "synthetic", "--blends", "20,5,10",
                                 "--max-galaxies", "16", "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ReleaseInfo.read(out / "release.toml").spec.morphology_counts == paper_mix(16)


@pytest.mark.parametrize("args, message", [
    (["--source", "synthetic", "--galaxies", "3"], "--galaxies 3: a release needs at least 4"),
    (["--source", "synthetic", "--max-galaxies", "2"], "--max-galaxies 2: a release needs"),
    (["--source", "synthetic", "--input", "."], "--source synthetic draws its galaxies"),
    (["--source", "synthetic", "--psf", "0.2"], "--psf: the instrument options apply"),
    (["--source", "synthetic", "--name", "v1"], "--name v1: the name of a frozen release"),
    (["--source", "synthetic", "--blends", "10,-1,10"], "--blends '10,-1,10': expected counts"),
    (["--source", "synthetic", "--blends", "0,0,0"], "--blends '0,0,0': expected counts >= 0"),
    (["--source", "synthetic", "--test-fraction", "2"], "--test-fraction 2.0: expected"),
    (["--galaxies", "40"], "--galaxies applies to a custom release"),
    (["--source", "cosmos", "--galaxies", "40"], "--galaxies applies to --source synthetic"),
    (["--scheduler", "local:0"], "--scheduler 'local:0': expected local:N"),
    (["--scheduler", "http://x:1"], "or tcp://HOST:PORT"),
    (["--workers", "2", "--scheduler", "local:2"], "give one of them"),
    (["--workers", "0"], "--workers 0: expected"),
    (["--chunk-size", "0"], "--chunk-size 0: expected"),
])
def test_bad_generate_options_are_one_line(tmp_path, args, message):
    out = tmp_path / "never"
    line = _one_error_line(runner.invoke(app, ["generate", "--out", str(out), *args]))
    assert message in line
    assert not out.exists()


def test_unreachable_scheduler_is_one_line(tmp_path, monkeypatch):
    import challenge.pipeline.workers as workers

    monkeypatch.setattr(workers, "CONNECT_TIMEOUT_S", 1)
    line = _one_error_line(runner.invoke(app, [
        "generate", "--release", "mini", "--scheduler", "tcp://127.0.0.1:9", "--out",
        str(tmp_path / "never")]))
    assert "tcp://127.0.0.1:9: no Dask scheduler answered" in line and "local:N" in line


def test_scheduler_forms():
    assert parse_scheduler("local:3") == 3
    assert parse_scheduler("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert resolve_parallel(None, None, 2) == 2
    assert resolve_parallel(None, "local:1", 2) == "local:1"
    with pytest.raises(ClusterError, match="local:N"):
        parse_scheduler("tcp://nohost")


@pytest.mark.parametrize("n, largest, threads, unit", [
    (4000, 256, 2, 16), (6500, 256, 8, 16), (200, 32, 2, 1), (500, 256, 2, 16), (7, 256, 2, 16),
    (4000, 256, 1, 16), (0, 32, 2, 1),
])
def test_tasks_shrink_towards_the_end_and_cover_every_item(n, largest, threads, unit):
    slices = task_slices(n, largest, threads, unit)
    starts, stops = [sl.start for sl in slices], [sl.stop for sl in slices]
    assert starts == ([0] + stops[:-1] if slices else [])  # in order, end to end
    sizes = [sl.stop - sl.start for sl in slices]
    assert sum(sizes) == n and all(s > 0 for s in sizes)
    assert all(s <= largest and s % unit == 0 for s in sizes[:-1])  # whole HDF5 chunks
    if threads == 1:
        assert sizes[:-1] == [largest] * (len(sizes) - 1)
    elif n >= 4 * threads * largest:
        # Full-size tasks while there is plenty left, none larger than what remains per thread.
        assert sizes[0] == largest and sizes[-1] < largest
        assert sorted(sizes, reverse=True) == sizes


def test_compressed_chunks_travel_out_of_band_straight_from_the_workers():
    import pickle

    import dask

    from challenge.pipeline.chunks import Layout, encode
    from challenge.pipeline.workers import dask_client

    images = np.random.default_rng(0).normal(size=(48, 32, 32)).astype(np.float32)
    stored = encode(images, Layout(16, (32, 32), "float32", True, 1))
    buffers: list = []
    stream = pickle.dumps(stored, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 3 and len(stream) < 1_000  # the bytes are not copied into the stream
    with dask_client("local:2") as client:
        assert client.direct_to_workers  # not relayed by the scheduler (pickle protocol 4)
        profiling = client.run(lambda: dask.config.get("distributed.worker.profile.enabled"))
        assert list(profiling.values()) == [False, False]


# ------------------------------------------------------------------------------------------
# the same release and predictions on any cluster


def _same_release(a: Path, b: Path) -> None:
    prints_a = ReleaseInfo.read(a / "release.toml").fingerprints
    prints_b = ReleaseInfo.read(b / "release.toml").fingerprints
    assert prints_a == prints_b
    for name in ("galaxies.ecsv", "pairs_train.ecsv", "pairs_val.ecsv", "pairs_test.ecsv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    for name in H5_FILES:
        with h5py.File(a / name) as fa, h5py.File(b / name) as fb:
            assert set(fa) == set(fb)
            for key in fa:
                assert np.array_equal(fa[key][()], fb[key][()]), (name, key)


def test_release_on_a_cluster_is_the_single_process_release(tiny_release, tiny_spec, cluster,
                                                             tmp_path):
    for chunk in (7, 40):  # tasks of 16 and 48 blends
        again = generate_release(tiny_spec, tmp_path / f"dask-{chunk}", chunk_size=chunk,
                                 workers=cluster)
        _same_release(tiny_release, again)
    # The writer copies the workers' compressed chunks: the same stored bytes, chunk by chunk.
    for name, key in (("train.h5", "images"), ("train.h5", "masks"),
                      ("test_blends.h5", "images"), ("test_truth.h5", "masks")):
        with h5py.File(tiny_release / name) as fa, h5py.File(again / name) as fb:
            a, b = fa[key], fb[key]
            assert a.chunks == b.chunks and a.compression == b.compression == "gzip"
            for start in range(0, a.shape[0], a.chunks[0]):
                offset = (start,) + (0,) * (a.ndim - 1)
                assert a.id.read_direct_chunk(offset) == b.id.read_direct_chunk(offset)


def test_a_killed_worker_is_replaced_and_its_tasks_rerun(tiny_release, tiny_spec, cluster,
                                                         tmp_path):
    killed = []

    def kill_a_worker(stage, advance, total):
        if stage == "train" and advance and not killed:
            pid = next(iter(cluster.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    again = generate_release(tiny_spec, tmp_path / "killed", chunk_size=16, workers=cluster,
                             progress=kill_a_worker)
    assert killed
    _same_release(tiny_release, again)
    cluster.wait_for_workers(2, timeout=60)


def test_a_failed_generation_on_a_cluster_leaves_nothing(tiny_spec, cluster, tmp_path):
    def fail(stage, advance, total):
        if stage == "val" and advance:
            raise RuntimeError("disk on fire")

    out = tmp_path / "rel"
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate_release(tiny_spec, out, chunk_size=16, workers=cluster, progress=fail)
    assert not out.exists()
    assert not list(tmp_path.glob(".rel.partial-*"))


def test_custom_synthetic_release_on_a_local_cluster(tmp_path):
    spec = ReleaseSpec(name="small", seed=11, morphology_counts=paper_mix(16),
                       n_blends={"train": 40, "val": 8, "test": 20})
    a = generate_release(spec, tmp_path / "one", chunk_size=16, workers=1)
    b = generate_release(spec, tmp_path / "two", chunk_size=32, workers="local:2")
    _same_release(a, b)


def test_run_on_a_cluster_gives_the_single_process_predictions(tiny_release, cluster):
    from baselines.sep_baseline import sep_method
    from challenge.loaders.protocol import run_method

    one = run_method(sep_method, tiny_release, batch_size=40)
    for batch_size in (7, 16):
        many = run_method(sep_method, tiny_release, batch_size=batch_size, workers=cluster)
        assert many.workers == 2
        assert np.array_equal(one.blend_id, many.blend_id)
        assert set(one.outputs) == set(many.outputs)
        for key in one.outputs:
            assert np.array_equal(one.outputs[key], many.outputs[key]), key


def test_workers_that_cannot_see_the_file_are_sent_the_blends(tiny_release, cluster,
                                                              monkeypatch):  # fmt: skip
    from baselines.sep_baseline import sep_method
    from challenge.contract.release import blends_file
    from challenge.loaders import protocol

    # a LocalCluster's workers read the test blends themselves ...
    assert protocol.workers_see(cluster, blends_file(tiny_release, "test"))
    assert not protocol.workers_see(cluster, tiny_release / "no-such-file.h5")
    one = protocol.run_method(sep_method, tiny_release, batch_size=40)
    # ... a cluster on another file system is sent them, with the same result
    monkeypatch.setattr(protocol, "workers_see", lambda client, path: False)
    sent = protocol.run_method(sep_method, tiny_release, batch_size=13, workers=cluster)
    for key in one.outputs:
        assert np.array_equal(one.outputs[key], sent.outputs[key]), key


def test_a_training_only_release_has_an_empty_test_split(tmp_path):
    from challenge.pipeline.files import verify_release

    spec = ReleaseSpec(name="train-only", seed=3, morphology_counts=paper_mix(60),
                       n_blends={"train": 40, "val": 16, "test": 0})  # fmt: skip
    generate_release(spec, tmp_path / "r")
    assert verify_release(tmp_path / "r").ok
    with h5py.File(tmp_path / "r" / "test_blends.h5") as f:
        assert f["images"].shape == (0, 128, 128)
    with h5py.File(tmp_path / "r" / "train.h5") as f:
        assert f["images"].shape == (40, 128, 128) and f["masks"].shape == (40, 2, 128, 128)
    line = _one_error_line(runner.invoke(app, ["baseline", "sep", "--data", str(tmp_path / "r"),
                                               "--out", str(tmp_path / "sep")]))  # fmt: skip
    assert "has no test blends" in line and not (tmp_path / "sep").exists()


def test_cli_makes_one_sided_releases_and_methods_refuse_the_empty_split(tmp_path):
    out = tmp_path / "test-only"
    made = runner.invoke(app, ["generate", "--source", "synthetic", "--blends", "0,0,12",
                               "--galaxies", "40", "--out", str(out)])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert ReleaseInfo.read(out / "release.toml").spec.n_blends == {"train": 0, "val": 0,
                                                                     "test": 12}
    line = _one_error_line(runner.invoke(app, [
        "train", "blend2flux", "--config", "tiny", "--data", str(out), "--out",
        str(tmp_path / "run")]))  # fmt: skip
    assert f"{out / 'train.h5'}: no blends in this split" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, message", [
    ("n_blends", {"train": 5, "val": -1, "test": 5}, "must be >= 0"),
    ("sky_sigma", 0.0, "sky_sigma and max_delta_mag > 0"),
    ("psf_kind", "file", "a file only with 'file'"),
])  # fmt: skip
def test_impossible_specs_are_refused(field, value, message):
    from challenge.contract.errors import ReleaseError

    with pytest.raises(ReleaseError, match=message):
        ReleaseSpec(name="bad", **{field: value})


def test_baseline_scarlet2_and_cnn_take_a_scheduler(tiny_release, tmp_path):
    from challenge.contract.submission import read_submission

    both = runner.invoke(app, ["baseline", "scarlet2", "--data", str(tiny_release), "--out",
                               str(tmp_path / "s"), "--workers", "2", "--scheduler", "local:2"])
    assert "give one of them" in _one_error_line(both)
    weights = Path(__file__).resolve().parents[1] / "submissions" / "v1" / "blend2flux"
    if not (weights / "model.keras").is_file():
        pytest.skip("the committed blend2flux weights are not in this checkout")
    flux = {}
    for name, extra in (("one", []), ("two", ["--scheduler", "local:2"])):
        result = runner.invoke(app, ["baseline", "blend2flux", "--weights",
                                     str(weights / "model.keras"), "--data", str(tiny_release),
                                     "--out", str(tmp_path / name), "--no-tta", *extra])
        assert result.exit_code == 0, result.output
        flux[name] = read_submission(tmp_path / name).flux
    assert "2 workers" in result.output
    np.testing.assert_allclose(flux["one"], flux["two"], rtol=1e-5)


def test_run_cli_on_a_local_scheduler(tiny_release, tmp_path):
    from challenge.contract.submission import read_submission

    out_one, out_two = tmp_path / "one", tmp_path / "two"
    for out, extra in ((out_one, []), (out_two, ["--scheduler", "local:2"])):
        result = runner.invoke(app, ["run", "baselines.sep_baseline:sep_method", "--data",
                                     str(tiny_release), "--out", str(out), "--batch-size", "9",
                                     *extra])
        assert result.exit_code == 0, result.output
    assert "2 workers" in result.output
    assert np.array_equal(read_submission(out_one).flux, read_submission(out_two).flux)
    assert 'scheduler = "local:2"' in (out_two / "submission.toml").read_text()


def test_baseline_sep_with_scheduler(tiny_release, tmp_path):
    result = runner.invoke(app, ["baseline", "sep", "--data", str(tiny_release), "--out",
                                 str(tmp_path / "sep"), "--scheduler", "local:2"])
    assert result.exit_code == 0, result.output
    assert "2 workers" in result.output


# ------------------------------------------------------------------------------------------
# no worker outlives its command


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_generate_on_a_local_scheduler(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "challenge.cli", "generate", "--source", "synthetic",
         "--galaxies", "400", "--blends", "4000,100,100", "--scheduler", "local:2", "--out",
         str(tmp_path / "rel")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while len(kids := _children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(kids) >= 2, "the workers did not start"
        time.sleep(2.0)  # the workers are rendering
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while any(_alive(k) for k in kids) and time.time() < deadline:
            time.sleep(0.2)
        left = [k for k in kids if _alive(k)]
        for k in left:
            os.kill(k, signal.SIGKILL)
        assert not left, "worker processes outlived their command"
        assert not (tmp_path / "rel").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
