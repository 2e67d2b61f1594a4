"""Inference throughput of the compact CNN baselines on CPU (blends/s, default Keras backend).

Untrained weights: throughput does not depend on them. One round = 256 mini test blends, one
forward pass each (the submission's 8-fold test-time augmentation costs 8x this).
"""

import h5py
import keras
import numpy as np
import pytest

from baselines.cnn.configs import get_config
from baselines.cnn.models import build_model
from baselines.cnn.predict import predict_images

N_BLENDS = 256


@pytest.mark.parametrize("model_name", ["blend2flux", "blend2mask2flux"])
def test_compact_inference_throughput(benchmark, mini_release, model_name):
    keras.utils.set_random_seed(0)
    model = build_model(get_config(model_name, "compact"))
    with h5py.File(mini_release / "test_blends.h5") as f:
        images = np.resize(f["images"][:], (N_BLENDS, 128, 128)).astype(np.float32)
    predict_images(model, images[:64], batch_size=64, tta=False)  # trace once
    flux, _ = benchmark.pedantic(
        predict_images, args=(model, images), kwargs={"batch_size": 64, "tta": False}, rounds=3
    )
    assert flux.shape == (N_BLENDS, 2) and np.all(np.isfinite(flux))
    benchmark.extra_info["blends_per_s"] = N_BLENDS / benchmark.stats["mean"]
    keras.backend.clear_session()
