"""Inference throughput of the compact CNN baselines on CPU (blends/s, default Keras backend).

Untrained weights: throughput does not depend on them. One round = 256 mini test blends, one
forward pass each, or the submission's 8-fold test-time augmentation (one compiled call that
transforms, predicts and averages).
"""

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from baselines.cnn.configs import get_config, load_config
from baselines.cnn.models import build_model
from baselines.cnn.predict import predict_images

N_BLENDS = 256


@pytest.mark.parametrize("tta", [False, True], ids=["single", "tta8"])
@pytest.mark.parametrize("model_name", ["blend2flux", "blend2mask2flux"])
def test_compact_inference_throughput(benchmark, mini_release, model_name, tta):
    keras.utils.set_random_seed(0)
    model = build_model(get_config(model_name, "compact"))
    with h5py.File(mini_release / "test_blends.h5") as f:
        images = np.resize(f["images"][:], (N_BLENDS, 128, 128)).astype(np.float32)
    predict_images(model, images[:64], batch_size=64, tta=tta)  # trace once
    flux, _ = benchmark.pedantic(
        predict_images, args=(model, images), kwargs={"batch_size": 64, "tta": tta}, rounds=3
    )
    assert flux.shape == (N_BLENDS, 2) and np.all(np.isfinite(flux))
    benchmark.extra_info["blends_per_s"] = N_BLENDS / benchmark.stats["mean"]
    keras.backend.clear_session()


EXPERIMENTS = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "configs"
ROBUST = str(EXPERIMENTS / "blend2flux-compact-robust.toml")


@pytest.mark.parametrize("in_memory", [True, False], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("config", ["compact", ROBUST,
                                    str(EXPERIMENTS / "blend2flux-compact-robust-deep.toml")],
                         ids=["compact", "compact-robust", "compact-robust-deep"])
def test_compact_training_throughput(benchmark, mini_release, tmp_path, config, in_memory):
    """Training images/s of blend2flux on mini's 600 train blends (steady epochs, no validation).

    ``compact`` augments with the dihedral transforms only; ``compact-robust`` re-observes every
    blend too (knots, PSF, shift, flux, noise; the segmentation maps read as a second input),
    all inside the compiled step.
    """
    from baselines.cnn.train import train_cnn

    rates = []

    def two_epochs():
        out = tmp_path / f"run{len(rates)}"
        result = train_cnn(
            load_config("blend2flux", config), mini_release, out, seed=1, epochs=3,
            in_memory=in_memory,
        )  # fmt: skip
        keras.backend.clear_session()
        rates.append(max(row["images_per_s"] for row in result.history[1:]))
        return result

    result = benchmark.pedantic(two_epochs, rounds=2)
    assert result.record["data_in_memory"] is in_memory
    benchmark.extra_info["images_per_s"] = max(rates)


def _tiled_split(src, dest, n):
    """A split file of ``n`` blends repeating ``src``'s (throughput does not need new blends)."""
    with h5py.File(src) as f, h5py.File(dest, "w") as g:
        for name in ("images", "flux", "masks"):  # masks: the robust configs' knots
            g[name] = np.resize(f[name][:], (n, *f[name].shape[1:]))
        g.attrs.update(dict(f.attrs))


@pytest.mark.skipif(
    __import__("shutil").which("nvidia-smi") is None, reason="no NVIDIA GPU (nvidia-smi absent)"
)
def test_gpu_training_throughput_and_utilisation(mini_release, tmp_path):
    """On a GPU: blend2flux compact-robust at batch 256 trains at >= 20,000 img/s, GPU >= 60% busy.

    20,000 blends held in memory (v1's train size), 4 epochs; nvidia-smi sampled every 200 ms
    during the steady epochs.
    """
    import subprocess
    import threading

    from baselines.cnn.train import train_cnn

    data = tmp_path / "data"
    data.mkdir()
    _tiled_split(mini_release / "train.h5", data / "train.h5", 20_000)
    _tiled_split(mini_release / "val.h5", data / "val.h5", 2_000)
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                samples.append(float(out.stdout.split()[0]))
            stop.wait(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    rows = []

    def start_sampling(row):
        rows.append(row)
        if row["epoch"] == 1:
            watcher.start()

    try:
        train_cnn(load_config("blend2flux", ROBUST), data, tmp_path / "run", seed=1,
                  epochs=4, batch_size=256, progress=start_sampling)  # fmt: skip
    finally:
        stop.set()
    rate = max(row["images_per_s"] for row in rows[1:])
    busy = float(np.mean(samples)) if samples else 0.0
    print(f"\nGPU training: {rate:,.0f} img/s, GPU busy {busy:.0f}% ({len(samples)} samples)")
    assert rate >= 20_000 and busy >= 60


@pytest.mark.skipif(
    __import__("shutil").which("nvidia-smi") is None, reason="no NVIDIA GPU (nvidia-smi absent)"
)
def test_gpu_inference_throughput_with_tta(mini_release):
    """On a GPU: blend2flux compact with 8-fold test-time augmentation predicts >= 5,000 blends/s
    (20,000 blends, batch 512, after one traced batch)."""
    import time

    keras.utils.set_random_seed(0)
    model = build_model(get_config("blend2flux", "compact"))
    with h5py.File(mini_release / "test_blends.h5") as f:
        images = np.resize(f["images"][:], (20_000, 128, 128)).astype(np.float32)
    predict_images(model, images[:512], batch_size=512, tta=True)  # trace once
    t0 = time.perf_counter()
    flux, _ = predict_images(model, images, batch_size=512, tta=True)
    rate = len(images) / (time.perf_counter() - t0)
    print(f"\nGPU inference, 8-fold TTA: {rate:,.0f} blends/s")
    assert np.all(np.isfinite(flux)) and rate >= 5_000
