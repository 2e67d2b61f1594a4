"""The CNN baselines: paper sizes, augmentation, training, resume, CLI, other Keras backends."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import h5py
import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from baselines.cnn.configs import get_config
from baselines.cnn.data import BlendDataset, dihedral, reflect
from baselines.cnn.models import build_blend2flux, build_model
from baselines.cnn.predict import WeightsError, load_trained, predict_images
from baselines.cnn.train import TrainingError, flux_ape, read_history, train_cnn
from challenge.cli import app
from challenge.contract.submission import read_submission

PAPER_COUNTS = {64: (1_605_458, 1.6), 256: (25_670_978, 25.7), 512: (102_673_026, 102.7)}


@pytest.mark.parametrize("first_filters", sorted(PAPER_COUNTS))
def test_paper_blend2flux_parameter_counts(first_filters):
    exact, millions = PAPER_COUNTS[first_filters]
    model = build_blend2flux((128, 128, 1), first_filters=first_filters)
    assert model.count_params() == exact
    assert round(model.count_params() / 1e6, 1) == millions
    keras.backend.clear_session()


def test_paper_configs_build_the_paper_sizes():
    model = build_model(get_config("blend2flux", "paper"))
    assert model.count_params() == PAPER_COUNTS[256][0]
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------
# augmentation


def test_dihedral_transforms_keep_the_centre_and_are_distinct():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(128, 128))
    seen = set()
    for k in range(8):
        t = dihedral(image, k)
        assert t[64, 64] == image[64, 64]
        np.testing.assert_array_equal(dihedral(t, k, inverse=True), image)
        seen.add(t.tobytes())
    assert len(seen) == 8
    # a mirror maps pixel (64 + d) to (64 - d); np.flip alone would centre it on 63.5
    assert reflect(image, 0)[64 + 5, 10] == image[64 - 5, 10]
    assert np.flip(image, 0)[64, 10] != image[64, 10]


def test_augmented_batches_keep_masks_fluxes_and_centre_in_order(tiny_release):
    ds = BlendDataset(
        tiny_release / "train.h5", 16, ("masks", "flux"), shuffle=True, augment=True, seed=3
    )
    ds.set_epoch(2)
    x, y = ds[0]
    idx = ds.order[:16]
    raw = ds.read(idx)
    assert x.shape == (16, 128, 128, 1) and y["masks"].shape == (16, 128, 128, 2)
    assert len(set(ds.transforms[idx].tolist())) > 1
    for j, i in enumerate(idx):
        k = int(ds.transforms[i])
        np.testing.assert_array_equal(x[j, ..., 0], dihedral(raw["images"][j], k))
        np.testing.assert_array_equal(
            y["masks"][j], np.moveaxis(dihedral(raw["masks"][j], k), 0, -1)
        )
        np.testing.assert_allclose(10 ** y["flux"][j], raw["flux"][j], rtol=1e-5)
        # the central galaxy's map stays in channel 0 and on pixel (64, 64)
        assert y["masks"][j, 64, 64, 0] == raw["masks"][j, 0, 64, 64] == 1
    # an epoch's batches depend only on (seed, epoch)
    again = BlendDataset(
        tiny_release / "train.h5", 16, ("masks", "flux"), shuffle=True, augment=True, seed=3
    )
    again.set_epoch(2)
    np.testing.assert_array_equal(again[0][0], x)
    ds.close()
    again.close()


# --------------------------------------------------------------------------------------------
# training, resume, prediction


def test_training_lowers_the_loss_and_resume_continues_exactly(tiny_release, tmp_path):
    cfg = get_config("blend2flux", "tiny")
    full = train_cnn(cfg, tiny_release, tmp_path / "full", seed=2, epochs=4)
    losses = [row["loss"] for row in full.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert full.record["parameters"] > 0 and full.record["wall_time_s"] > 0
    # the record names the release, never a folder of this machine
    assert str(tiny_release) not in json.dumps(full.record)
    assert (tmp_path / "full" / "model.keras").is_file()
    keras.backend.clear_session()
    train_cnn(cfg, tiny_release, tmp_path / "part", seed=2, epochs=4, time_budget_min=1e-6)
    state = json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())
    assert state["global_epoch"] == 1 and "time budget" in state["stopped"]
    keras.backend.clear_session()
    # a later call (new model, optimizer and dataset objects) runs epochs 2 to 4, exactly as the
    # uninterrupted run did
    resumed = train_cnn(cfg, tiny_release, tmp_path / "part", epochs=4, resume=True,
                        time_budget_min=60)  # fmt: skip
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert len(read_history(tmp_path / "part" / "history.csv")) == 4
    np.testing.assert_allclose([r["loss"] for r in resumed.history], losses, rtol=1e-5)
    keras.backend.clear_session()


@pytest.mark.parametrize("end_to_end", [True, False])
def test_flux_loss_trains_the_unet_only_end_to_end(end_to_end):
    cfg = get_config("blend2mask2flux", "tiny")
    cfg = replace(cfg, arch=replace(cfg.arch, end_to_end=end_to_end))
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    x = np.random.default_rng(1).normal(0, 0.012, (4, 128, 128, 1)).astype("float32")
    x[:, 60:69, 60:69] += 0.5
    y = {"masks": np.zeros((4, 128, 128, 2), "float32"), "flux": np.full((4, 2), 1.3, "float32")}
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss={"masks": "binary_crossentropy", "flux": flux_ape},
        loss_weights={"masks": 0.0, "flux": 1.0},  # the flux loss alone
    )

    def weights(prefix):
        return [w.numpy() for w in model.trainable_weights if w.path.startswith(prefix)]

    unet, fluxnet = weights("unet_"), weights("fluxnet_")
    assert unet and fluxnet
    model.train_on_batch(x, y)
    unet_moved = any(not np.array_equal(a, b) for a, b in zip(unet, weights("unet_"), strict=True))
    assert unet_moved == end_to_end
    assert any(not np.array_equal(a, b) for a, b in zip(fluxnet, weights("fluxnet_"), strict=True))
    keras.backend.clear_session()


def test_user_errors_name_the_file(tiny_release, tmp_path):
    with pytest.raises(TrainingError, match="train.h5"):
        train_cnn(get_config("blend2flux", "tiny"), tmp_path, tmp_path / "run")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_trained(tmp_path / "missing.keras")
    with pytest.raises(TrainingError, match="no checkpoint"):
        train_cnn(get_config("blend2flux", "tiny"), tiny_release, tmp_path / "x", resume=True)


def test_cli_train_and_baseline_write_a_valid_submission(tiny_release, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, [
        "train", "blend2mask2flux", "--config", "tiny", "--data", str(tiny_release),
        "--out", str(run), "--seed", "5", "--epochs", "2", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "parameters" in res.output
    history = read_history(run / "history.csv")
    assert [r["stage"] for r in history] == ["masks", "flux"]
    sub = tmp_path / "submissions" / "b2m2f"
    res = runner.invoke(app, [
        "baseline", "blend2mask2flux", "--weights", str(run / "model.keras"),
        "--data", str(tiny_release), "--out", str(sub), "--no-tta",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    submission = read_submission(sub)
    with h5py.File(tiny_release / "test_blends.h5") as f:
        np.testing.assert_array_equal(submission.blend_id, f["blend_id"][:])
    assert submission.flux.shape == (40, 2) and np.all(submission.flux > 0)
    assert submission.masks.shape == (40, 2, 128, 128)
    assert submission.metadata["parameters"] > 0
    assert submission.metadata["training_time_s"] > 0
    for name in ("model.keras", "history.csv", "run.json"):
        assert (sub / name).is_file()
    res = runner.invoke(
        app,
        [
            "baseline",
            "blend2flux",
            "--weights",
            str(run / "model.keras"),
            "--data",
            str(tiny_release),
            "--out",
            str(tmp_path / "s2"),
        ],
    )
    assert res.exit_code == 2 and "blend2mask2flux" in res.output
    keras.backend.clear_session()


def test_test_time_augmentation_maps_masks_back(tiny_release):
    model = build_model(get_config("blend2mask2flux", "tiny"))
    with h5py.File(tiny_release / "test_blends.h5") as f:
        images = f["images"][:4]
    flux, masks = predict_images(model, images, tta=True)
    assert flux.shape == (4, 2) and masks.shape == (4, 2, 128, 128)
    # a blend that is symmetric under all 8 transforms gives symmetric averaged maps
    sym = np.stack([dihedral(images[0], k) for k in range(8)]).mean(0)[None]
    _, m = predict_images(model, sym, tta=True)
    np.testing.assert_allclose(m[0, 0], dihedral(m[0, 0], 1), atol=1e-5)
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------
# other backends

BACKEND_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, keras
    from baselines.cnn.configs import get_config
    from baselines.cnn.models import build_blend2flux, build_model, build_unet
    from baselines.cnn.train import flux_ape
    assert keras.backend.backend() == sys.argv[1]
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(0, 0.012, (4, 128, 128, 1)).astype("float32")
    x[:, 60:69, 60:69] += 0.5
    flux = np.log10(np.full((4, 2), 10.0, "float32"))
    masks = np.zeros((4, 128, 128, 2), "float32")
    models = {
        "paper_blend2flux": (build_blend2flux(first_filters=8), flux_ape, flux),
        "blend2flux": (build_model(get_config("blend2flux", "tiny")), flux_ape, flux),
        "unet": (build_unet(depth=2, first_filters=4), "binary_crossentropy", masks),
        "blend2mask2flux": (
            build_model(get_config("blend2mask2flux", "tiny")),
            {"masks": "binary_crossentropy", "flux": flux_ape},
            {"masks": masks, "flux": flux},
        ),
    }
    for name, (model, loss, y) in models.items():
        model.compile(keras.optimizers.Adam(1e-3), loss=loss)
        first = model.train_on_batch(x, y)
        model.save(f"{sys.argv[2]}/{name}.keras")
        again = keras.models.load_model(f"{sys.argv[2]}/{name}.keras")
        a, b = model.predict_on_batch(x), again.predict_on_batch(x)
        for p, q in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
            np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-5)
        print(name, "ok", float(np.ravel(first)[0]))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_train_save_and_load_on_other_backends(backend, tiny_release, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install {backend}); Keras backend untested")
    script = tmp_path / "run_backend.py"
    script.write_text(BACKEND_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(script), backend, str(tmp_path), str(tiny_release)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" ok ") == 4
