"""Loaders: lazy numpy access to a release split, the framework adapters, the documented loop."""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from challenge import ReleaseError, load_release
from challenge.loaders.release import BLOCK

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_train_split_reads_lazily_what_the_files_hold(tiny_release):
    train = load_release(tiny_release, "train")
    assert len(train) == 60 and train.images.shape == (60, 128, 128)
    assert train.masks.shape == (60, 2, 128, 128) and train.masks.dtype == np.uint8
    with h5py.File(tiny_release / "train.h5", "r") as f:
        np.testing.assert_array_equal(train.images[7], f["images"][7])
        np.testing.assert_array_equal(train.images[3:9], f["images"][3:9])
        np.testing.assert_array_equal(
            train.masks[[9, 2, 2, -1]], f["masks"][[2, 9, 59]][[1, 0, 0, 2]]
        )
        np.testing.assert_allclose(train.flux, f["flux"][:])
        np.testing.assert_allclose(train.model_flux, f["model_flux"][:])
        np.testing.assert_array_equal(train.blend_id, f["blend_id"][:])
    assert np.asarray(train.images).shape == (60, 128, 128)
    assert list(train.pairs["blend_id"]) == list(train.blend_id)


def test_test_split_reads_images_and_truth_from_their_own_files(tiny_release):
    test = load_release(tiny_release, "test")
    with h5py.File(tiny_release / "test_blends.h5", "r") as f:
        np.testing.assert_array_equal(test.images[:4], f["images"][:4])
    with h5py.File(tiny_release / "test_truth.h5", "r") as f:
        np.testing.assert_array_equal(test.masks[5], f["masks"][5])
        np.testing.assert_allclose(test.flux, f["flux"][:])


def test_batches_cover_the_split_once_and_shuffle_by_seed_and_epoch(tiny_release):
    val = load_release(tiny_release, "val")
    plain = list(val.batches(7, ("blend_id", "images")))
    assert [len(b["blend_id"]) for b in plain] == [7, 7, 6]
    np.testing.assert_array_equal(np.concatenate([b["blend_id"] for b in plain]), val.blend_id)
    np.testing.assert_array_equal(plain[1]["images"], val.images[7:14])

    def order(**kw):
        return np.concatenate([b["blend_id"] for b in val.batches(8, ["blend_id"], **kw)])

    shuffled = order(shuffle=True, seed=1)
    assert sorted(shuffled) == sorted(val.blend_id) and not np.array_equal(shuffled, val.blend_id)
    np.testing.assert_array_equal(shuffled, order(shuffle=True, seed=1))
    assert not np.array_equal(shuffled, order(shuffle=True, seed=1, epoch=1))
    assert len(order(drop_last=True)) == 16
    assert BLOCK % 16 == 0  # whole HDF5 chunks per block


def test_loader_errors_say_what_is_missing(tiny_release):
    with pytest.raises(ReleaseError, match=r"train.h5: missing; .*blendbench generate"):
        load_release("v1", "train").images[0]
    assert len(load_release("v1", "test")) == 5000  # the committed tables are enough for these
    with pytest.raises(ReleaseError, match="unknown split 'tests'"):
        load_release(tiny_release, "tests")
    with pytest.raises(ReleaseError, match="no train blends .*shift track holds test blends"):
        load_release("v1-psf", "train")
    with pytest.raises(ValueError, match="unknown fields"):
        load_release(tiny_release, "val").arrays(["image"], 0)


def test_lazy_array_survives_pickling_for_worker_processes(tiny_release):
    images = load_release(tiny_release, "val").images
    first = images[0]
    copy = pickle.loads(pickle.dumps(images))
    np.testing.assert_array_equal(copy[0], first)


def test_loading_imports_no_framework(tiny_release):
    code = (
        "import sys\n"
        "from challenge import load_release\n"
        f"split = load_release({str(tiny_release)!r}, 'train')\n"
        "next(split.batches(4, ('images', 'masks', 'flux')))\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jax_batches(tiny_release):
    jnp = pytest.importorskip("jax.numpy")
    val = load_release(tiny_release, "val")
    batch = next(val.to_jax(5, ("images", "masks", "flux")))
    assert isinstance(batch["images"], type(jnp.zeros(1)))
    assert batch["images"].shape == (5, 128, 128) and batch["masks"].shape == (5, 2, 128, 128)
    np.testing.assert_allclose(np.asarray(batch["flux"]), val.flux[:5], rtol=1e-6)


def test_tensorflow_dataset(tiny_release):
    tf = pytest.importorskip("tensorflow")
    val = load_release(tiny_release, "val")
    ds = val.to_tf(("images", "masks", "flux", "blend_id"))
    images, masks, flux, ids = next(iter(ds.batch(4)))
    assert images.shape == (4, 128, 128, 1) and images.dtype == tf.float32
    assert masks.shape == (4, 128, 128, 2)
    np.testing.assert_array_equal(masks.numpy()[2, ..., 1], val.masks[2][1])
    np.testing.assert_allclose(flux.numpy(), val.flux[:4], rtol=1e-6)
    assert list(ids.numpy()) == list(val.blend_id[:4])
    assert sum(1 for _ in ds) == 20


def readme_torch_loop() -> str:
    """The documented PyTorch training loop (the python block of docs/api.md that imports
    torch)."""
    blocks = re.findall(r"```python\n(.*?)```", API_PAGE.read_text(), flags=re.S)
    return next(b for b in blocks if b.startswith("import torch"))


def test_documented_torch_loop_is_20_lines():
    assert len(readme_torch_loop().splitlines()) <= 20


def test_documented_torch_loop_trains_and_scores(tiny_release, capsys):
    pytest.importorskip("torch")
    code = readme_torch_loop()
    line = 'DATA, EPOCHS = "releases/mini", 20'
    assert line in code
    exec(code.replace(line, f"DATA, EPOCHS = {str(tiny_release)!r}, 1"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("test MAPE %:")
    assert math.isfinite(float(printed.split(":")[1]))
