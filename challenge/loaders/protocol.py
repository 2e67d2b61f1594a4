"""The method protocol: how any deblender plugs into the kit.

A *method* is a callable ``method(batch: Batch, context: Context) -> dict`` (a function, or an
object with ``__call__``; module-level so it can be sent to worker processes). It receives a batch
of test blends and returns a dict with

- ``flux``: (n, 2) float, [central, companion] in counts (<= 0 means "not detected");
- optionally ``masks``: (n, 2, H, W) in [0, 1]; ``flux_err``: (n, 2) 1σ in counts;
  ``detection``: (n,) int detection case (-1 none, 0 central only, 1 companion only, 2 both,
  3 more than two).

:func:`run_method` feeds a release's test blends through it in batches (optionally in several
processes), checks every output, times it and writes a submission folder. The reference
baselines use this same path, so adding a method never means touching the kit::

    # my_method.py
    import numpy as np

    def half_and_half(batch, context):
        total = batch.images.sum(axis=(1, 2))         # counts in the whole stamp
        return {"flux": np.stack([total / 2, total / 2], axis=1)}

    # blendbench run my_method:half_and_half --data releases/v1 --out submissions/half
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from challenge.contract.errors import BlendbenchError
from challenge.contract.release import ReleaseInfo, resolve_release
from challenge.loaders.release import load_release


class MethodError(BlendbenchError, ValueError):
    """A method cannot be imported, or returned something that breaks the protocol."""


@dataclass(frozen=True)
class Context:
    """What a method may know about the release besides the blends.

    Attributes:
        release: release name; release_dir: its folder (a method may read training data or,
            for an oracle, the truth models from it).
        stamp_size (px), pixel_scale (arcsec/px), zero_point (AB mag of 1 count),
        sky_sigma (counts/px: the sky noise of each galaxy in a blend; the blend holds two
            such fields, so its noise is sqrt(2) * sky_sigma where they overlap),
        psf: (33, 33) float32 PSF image with unit sum (None if the release has none),
        psf_fwhm (arcsec).
    """

    release: str
    release_dir: Path
    stamp_size: int
    pixel_scale: float
    zero_point: float
    sky_sigma: float
    psf_fwhm: float
    psf: np.ndarray | None = None


@dataclass(frozen=True)
class Batch:
    """A batch of test blends.

    Attributes:
        blend_id: (n,) int64; images: (n, H, W) float32 counts, central galaxy on (H//2, W//2).
        r_e_central: (n,) px, the central galaxy's catalogue half-light radius — the one piece
            of catalogue information the paper's sep rule uses to assign a lone detection;
            other methods should ignore it.
    """

    blend_id: np.ndarray
    images: np.ndarray
    r_e_central: np.ndarray


@dataclass
class RunResult:
    """Outputs of a whole run, concatenated in test-blend order, and its wall time (s)."""

    blend_id: np.ndarray
    outputs: dict[str, np.ndarray]
    seconds: float
    context: Context


def load_method(spec: str) -> Callable:
    """Import ``MODULE:CALLABLE`` (the current directory is importable)."""
    if ":" not in spec:
        raise MethodError(f"{spec!r}: expected MODULE:CALLABLE, e.g. my_method:deblend")
    module_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise MethodError(f"{spec}: cannot import module {module_name!r} ({err})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MethodError(f"{spec}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MethodError(f"{spec}: {attr!r} is not callable")
    return obj


def release_context(data: str | Path) -> Context:
    """The :class:`Context` of a generated release folder."""
    path, info = resolve_release(data)
    psf = None
    galaxies = Path(path) / "galaxies.h5"
    if galaxies.is_file():
        with h5py.File(galaxies, "r") as f:
            psf = f["psf"][:] if "psf" in f else None
    return _context(path, info, psf)


def _context(path: Path, info: ReleaseInfo, psf: np.ndarray | None) -> Context:
    s = info.spec
    return Context(
        s.name, Path(path), s.stamp_size, s.pixel_scale, s.zero_point, s.sky_sigma, s.psf_fwhm, psf
    )


def check_output(out: Any, n: int, size: int, where: str) -> dict[str, np.ndarray]:
    """Validate one batch's output against the protocol; returns it as arrays."""
    if not isinstance(out, dict) or "flux" not in out:
        raise MethodError(f"{where}: the method must return a dict with at least 'flux' (n, 2)")
    shapes = {"flux": (n, 2), "flux_err": (n, 2), "masks": (n, 2, size, size), "detection": (n,)}
    result: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if key not in shapes:
            result[key] = np.asarray(value)  # extra diagnostics travel along, unchecked
            continue
        arr = np.asarray(value)
        if arr.shape != shapes[key]:
            raise MethodError(f"{where}: '{key}' has shape {arr.shape}, expected {shapes[key]}")
        if key != "detection" and not np.all(np.isfinite(arr)):
            bad = np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[:5]
            raise MethodError(
                f"{where}: '{key}' has NaN/inf for batch rows {bad.tolist()}; "
                "return 0 flux for a galaxy the method did not find"
            )
        result[key] = arr
    return result


def _call(method: Callable, batch: Batch, context: Context) -> dict[str, np.ndarray]:
    out = method(batch, context)
    where = f"blends {int(batch.blend_id[0])}..{int(batch.blend_id[-1])}"
    return check_output(out, len(batch.blend_id), batch.images.shape[-1], where)


def iter_batches(data: str | Path, batch_size: int):
    """Yield the test blends of a generated release as :class:`Batch` es, in file order."""
    test = load_release(data, "test")
    r_e = np.asarray(test.pairs["r_e_central"], dtype=float)
    for start in range(0, len(test), batch_size):
        sl = slice(start, min(start + batch_size, len(test)))
        yield Batch(test.blend_id[sl], test.images[sl], r_e[sl])


def run_method(
    method: Callable,
    data: str | Path,
    batch_size: int = 250,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    context: Context | None = None,
) -> RunResult:
    """Run ``method`` over every test blend of a release; outputs in test-blend order.

    With ``workers > 1`` batches go to that many processes (the method must be picklable).
    """
    context = context or release_context(data)
    parts: list[dict[str, np.ndarray]] = []
    ids: list[np.ndarray] = []
    t0 = time.perf_counter()

    def collect(batch_ids, result):
        ids.append(batch_ids)
        parts.append(result)
        if progress:
            progress(len(batch_ids))

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                (b.blend_id, pool.submit(_call, method, b, context))
                for b in iter_batches(data, batch_size)
            ]
            for batch_ids, fut in futures:
                collect(batch_ids, fut.result())
    else:
        for batch in iter_batches(data, batch_size):
            collect(batch.blend_id, _call(method, batch, context))
    seconds = time.perf_counter() - t0
    keys = set(parts[0])
    for p in parts:
        if set(p) != keys:
            raise MethodError("the method returned different keys for different batches")
    outputs = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    return RunResult(np.concatenate(ids), outputs, seconds, context)
