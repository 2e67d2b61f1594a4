"""Thin adapters from a :class:`~challenge.loaders.release.ReleaseSplit` to PyTorch, TensorFlow
and JAX. Each imports its framework only when called, so none is needed to use the kit.

Layouts follow each framework's convention for images:

========== ====================== ====================== ==================
field      PyTorch (per item)     TensorFlow (per item)  JAX / numpy (batch)
========== ====================== ====================== ==================
images     (1, H, W) float32      (H, W, 1) float32      (n, H, W) float32
masks      (2, H, W) float32      (H, W, 2) float32      (n, 2, H, W) uint8
flux       (2,) float32           (2,) float32           (n, 2) float64*
model_flux (2,) float32           (2,) float32           (n, 2) float64*
blend_id   () int64               () int64               (n,) int64
========== ====================== ====================== ==================

Fluxes are counts ([central, companion]); masks are 0/1. (*) JAX keeps float32 unless
``jax_enable_x64`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from challenge.contract.release import DEFAULT_SEED
from challenge.loaders.release import FIELDS, ReleaseSplit


def _check_fields(fields) -> tuple[str, ...]:
    fields = tuple(fields)
    unknown = [f for f in fields if f not in FIELDS]
    if not fields or unknown:
        raise ValueError(f"fields {list(fields)}: choose one or more of {', '.join(FIELDS)}")
    return fields


def _item(name: str, value: np.ndarray, channels_last: bool) -> np.ndarray:
    """One blend's field in a framework's layout (see the module docstring)."""
    if name == "blend_id":
        return np.asarray(value, dtype=np.int64)
    value = np.asarray(value, dtype=np.float32)
    if name == "images":
        return value[..., None] if channels_last else value[None]
    if name == "masks" and channels_last:
        return np.moveaxis(value, 0, -1)
    return value


def _torch_dataset_class():
    import torch

    class TorchReleaseDataset(torch.utils.data.Dataset):
        """A split of a release as a map-style PyTorch dataset: item ``i`` is the tuple of
        ``fields`` of blend ``i`` as tensors (layouts in :mod:`challenge.loaders.frameworks`)."""

        def __init__(self, split: ReleaseSplit, fields=("images", "flux")):
            self.split, self.fields = split, _check_fields(fields)

        def __len__(self) -> int:
            return len(self.split)

        def __getitem__(self, index: int):
            rows = self.split.arrays(self.fields, int(index))
            return tuple(
                torch.from_numpy(_item(f, rows[f], channels_last=False)) for f in self.fields
            )

    TorchReleaseDataset.__qualname__ = "TorchReleaseDataset"  # how pickle finds it
    return TorchReleaseDataset


def __getattr__(name: str) -> Any:
    # The PyTorch dataset class exists once torch is imported; looking it up here lets pickle
    # find it in DataLoader worker processes.
    if name == "TorchReleaseDataset":
        cls = _torch_dataset_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_dataset(split: ReleaseSplit, fields=("images", "flux")):
    """A ``torch.utils.data.Dataset`` whose item ``i`` is ``tuple(tensor(field) for field in
    fields)`` of blend ``i``; batch it with ``torch.utils.data.DataLoader``."""
    cls = globals().get("TorchReleaseDataset") or __getattr__("TorchReleaseDataset")
    return cls(split, fields)


def tf_dataset(
    split: ReleaseSplit,
    fields=("images", "flux"),
    *,
    shuffle: bool = False,
    seed: int = DEFAULT_SEED,
):
    """A ``tf.data.Dataset`` of per-blend tuples of ``fields`` (batch it with ``.batch(n)``).

    Blends stream from the HDF5 files in blocks (:meth:`ReleaseSplit.batches`); ``shuffle``
    shuffles blocks and the blends inside them, differently on every pass over the dataset.
    """
    import tensorflow as tf

    fields = _check_fields(fields)
    size = split.info.spec.stamp_size
    shapes = {
        "images": (size, size, 1),
        "masks": (size, size, 2),
        "flux": (2,),
        "model_flux": (2,),
        "blend_id": (),
    }
    signature = tuple(
        tf.TensorSpec(shapes[f], tf.int64 if f == "blend_id" else tf.float32) for f in fields
    )
    passes = iter(range(2**62))

    def generate():
        epoch = next(passes)
        for batch in split.batches(256, fields, shuffle=shuffle, seed=seed, epoch=epoch):
            for i in range(len(batch[fields[0]])):
                yield tuple(_item(f, batch[f][i], channels_last=True) for f in fields)

    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def jax_batches(
    split: ReleaseSplit, batch_size: int = 64, fields=("images", "flux"), **kwargs
) -> Iterator[dict[str, Any]]:
    """:meth:`ReleaseSplit.batches` (same options) with every array moved to JAX."""
    import jax.numpy as jnp

    for batch in split.batches(batch_size, _check_fields(fields), **kwargs):
        yield {k: jnp.asarray(v) for k, v in batch.items()}
