"""The method protocol: how any deblender plugs into the kit.

A *method* is a callable ``method(batch: Batch, context: Context) -> dict`` (a function, or an
object with ``__call__``; module-level so it can be sent to worker processes). It receives a batch
of test blends and returns a dict with

- ``flux``: (n, 2) float, [central, companion] in counts (<= 0 means "not detected");
- optionally ``masks``: (n, 2, H, W) in [0, 1]; ``flux_err``: (n, 2) 1σ in counts;
  ``detection``: (n,) int detection case (-1 none, 0 central only, 1 companion only, 2 both,
  3 more than two).

:func:`run_method` feeds a release's test blends through it in batches (optionally on Dask
workers: several processes here, or a cluster), checks every output, times it and writes a
submission folder. The reference baselines use this same path, so adding a method never means
touching the kit::

    # my_method.py
    import numpy as np

    def half_and_half(batch, context):
        total = batch.images.sum(axis=(1, 2))         # counts in the whole stamp
        return {"flux": np.stack([total / 2, total / 2], axis=1)}

    # blendbench run my_method:half_and_half --data releases/v1 --out submissions/half
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from challenge.contract.errors import BlendbenchError
from challenge.contract.release import ReleaseInfo, blends_file, resolve_release
from challenge.contract.submission import MAX_FLUX
from challenge.loaders.release import load_release
from challenge.pipeline.workers import Parallel, dask_client, first_line, in_order, n_threads


class MethodError(BlendbenchError, ValueError):
    """A method cannot be imported, raised, timed out, or returned something that breaks the
    protocol.

    ``details`` holds the method's own traceback when it raised (shown by ``run --debug``).
    """

    def __init__(self, message: str, details: str | None = None):
        super().__init__(message)
        self.details = details

    def __reduce__(self):  # keep ``details`` across worker processes
        return (type(self), (str(self), self.details))


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
    """Outputs of a whole run, concatenated in test-blend order; the wall time (s) of its
    batches (a cluster's start not included) and the number of workers that ran them."""

    blend_id: np.ndarray
    outputs: dict[str, np.ndarray]
    seconds: float
    context: Context
    workers: int = 1  # worker threads that ran the batches (1: in-process)


def load_method(spec: str) -> Callable:
    """Import ``MODULE:CALLABLE`` or ``path/to/file.py:CALLABLE``.

    The current directory is importable; a ``.py`` path puts its folder first on ``sys.path`` and
    imports the file by its stem, so worker processes can import it again by name.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise MethodError(
            f"{spec!r}: expected MODULE:CALLABLE or path/to/file.py:CALLABLE, "
            "e.g. my_method:deblend"
        )
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        file = Path(module_name).expanduser().resolve()
        if file.suffix != ".py" or not file.is_file():
            raise MethodError(f"{spec}: {module_name} is not a Python file (expected a .py path)")
        if str(file.parent) not in sys.path:
            sys.path.insert(0, str(file.parent))
        module_name = file.stem
    elif os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == module_name.split(".")[0]:
            hint = (f"; {module_name!r} is not importable from {os.getcwd()}: run from the folder "
                    f"that holds {module_name.split('.')[0]}.py, or pass its path "
                    f"(path/to/{module_name.split('.')[-1]}.py:{attr})")
        raise MethodError(f"{spec}: cannot import module {module_name!r} ({err}){hint}") from None
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


_FIX = {
    "flux": "return float counts, 0 (or <= 0) for a galaxy the method did not find",
    "flux_err": "return float 1-sigma errors in counts, > 0",
    "masks": "return float probabilities in [0, 1] or 0/1 masks (uint8 or bool)",
    "detection": "return integers -1 (none), 0 (central only), 1 (companion only), 2 (both) "
                 "or 3 (more than two)",
}


def _rows(mask: np.ndarray, n: int) -> list[int]:
    return np.flatnonzero(mask.reshape(n, -1).any(axis=1))[:5].tolist()


def _check_array(key: str, value: Any, want: tuple[int, ...], where: str) -> np.ndarray:
    """One protocol output checked before any conversion (no wrapping, no silent casts)."""
    n = want[0]
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise MethodError(f"{where}: '{key}' is not an array ({type(err).__name__}: {err}); "
                          f"{_FIX[key]}") from None
    kinds = {"flux": "iuf", "flux_err": "iuf", "masks": "biuf", "detection": "iuf"}[key]
    if arr.dtype.kind not in kinds:
        raise MethodError(f"{where}: '{key}' has dtype {arr.dtype}, expected "
                          f"{'integer' if key == 'detection' else 'real numbers'}; {_FIX[key]}")
    if arr.shape != want:
        raise MethodError(f"{where}: '{key}' has shape {arr.shape}, expected {want}; "
                          f"{_FIX[key]}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise MethodError(f"{where}: '{key}' has NaN/inf for batch rows {_rows(bad, n)}; "
                              f"{_FIX[key]}")
    if key in ("flux", "flux_err") and (np.abs(arr) > MAX_FLUX).any():
        raise MethodError(f"{where}: '{key}' has values beyond {MAX_FLUX:g} counts for batch "
                          f"rows {_rows(np.abs(arr) > MAX_FLUX, n)}; {_FIX[key]}")
    if key == "flux_err" and (arr <= 0).any():
        raise MethodError(f"{where}: 'flux_err' has values <= 0 for batch rows "
                          f"{_rows(arr <= 0, n)}; {_FIX[key]}")
    if key == "masks" and arr.dtype.kind != "b":
        bad = (arr < 0) | (arr > 1)
        if bad.any():
            raise MethodError(f"{where}: 'masks' has values outside [0, 1] (e.g. "
                              f"{arr[bad].ravel()[0]!r}) for batch rows {_rows(bad, n)}; "
                              f"{_FIX[key]}")
    if key == "detection":
        bad = ~np.isin(arr, [-1, 0, 1, 2, 3])  # on the values as returned: 258 does not wrap
        if bad.any():
            raise MethodError(f"{where}: 'detection' has values outside -1..3 (e.g. "
                              f"{arr[bad].ravel()[0]!r}) for batch rows {_rows(bad, n)}; "
                              f"{_FIX[key]}")
        arr = arr.astype(np.int8)
    return arr


def check_output(out: Any, n: int, size: int, where: str) -> dict[str, np.ndarray]:
    """Validate one batch's output against the protocol; returns it as arrays.

    Every key is checked before anything is converted: ``flux`` / ``flux_err`` (n, 2) real and
    finite (``flux_err`` > 0), ``masks`` (n, 2, size, size) in [0, 1], ``detection`` (n,) in
    -1..3 (integral values), extra keys arrays of n rows (they travel to the caller unchecked).

    Raises:
        MethodError: naming ``where`` (the batch), the key, what was returned and the fix.
    """
    if not isinstance(out, dict) or "flux" not in out:
        raise MethodError(f"{where}: the method must return a dict with at least 'flux' (n, 2), "
                          f"got {type(out).__name__}; return {{'flux': array of shape ({n}, 2)}}")
    shapes = {"flux": (n, 2), "flux_err": (n, 2), "masks": (n, 2, size, size), "detection": (n,)}
    result: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if not isinstance(key, str):
            raise MethodError(f"{where}: key {key!r} is not a string; name outputs with strings")
        if key in shapes:
            result[key] = _check_array(key, value, shapes[key], where)
            continue
        try:
            arr = np.asarray(value)
        except Exception as err:
            arr = None
            why = f"{type(err).__name__}: {err}"
        else:
            why = (f"shape {arr.shape}" if arr.ndim == 0 or arr.shape[0] != n
                   else f"dtype {arr.dtype}" if arr.dtype.kind in "OV" else None)
        if why is not None:
            raise MethodError(f"{where}: extra key '{key}' has {why}, expected an array of "
                              f"{n} rows (one per blend) of numbers or text; return it per "
                              "blend, or drop it")
        result[key] = arr
    return result


MAX_TIMEOUT_S = 86_400 * 7  # a week per batch: beyond, the timer cannot be set everywhere


class _Timeout(BaseException):
    """The method's time is up: a BaseException, so that a method catching ``Exception`` (a
    retry loop) cannot swallow it; the timer fires again every half second until the call
    ends."""


_FIRED: list[bool] = [False]  # whether the current call's timer went off


def _alarm(signum, frame):
    _FIRED[0] = True
    raise _Timeout


def _in_thread(method: Callable, batch: Batch, context: Context, timeout: float) -> Any:
    """``method(batch, context)`` in a thread of its own, abandoned after ``timeout`` s.

    For calls outside the main thread (Dask workers run tasks in threads), where SIGALRM cannot
    interrupt them: on time out :class:`_Timeout` is raised here and the call is asked to stop
    (an exception raised in its thread at its next Python instruction); a LocalCluster's worker
    is then killed with its cluster anyway.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["out"] = method(batch, context)
        except BaseException as err:  # noqa: BLE001 - handed back to the caller's thread
            box["err"] = err
            box["tb"] = traceback.format_exc()

    thread = threading.Thread(target=target, name="blendbench-method", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(SystemExit))
        raise _Timeout
    if "err" in box:
        err = box["err"]
        err.blendbench_traceback = box["tb"]
        raise err
    return box["out"]


def _call(method: Callable, batch: Batch, context: Context, number: int = 0,
          timeout: float | None = None) -> dict[str, np.ndarray]:
    """Call the method on one batch (batch ``number``, counted from 1), under ``timeout`` s.

    In the main thread the timeout is a SIGALRM timer; elsewhere (a Dask worker's thread) the
    method runs in a thread of its own that is abandoned when the time is up.
    """
    where = (f"batch {number} (blends {int(batch.blend_id[0])}..{int(batch.blend_id[-1])})"
             if number else f"blends {int(batch.blend_id[0])}..{int(batch.blend_id[-1])}")
    main = threading.current_thread() is threading.main_thread()
    timed = bool(timeout) and main and hasattr(signal, "setitimer")
    if timed:
        previous = signal.signal(signal.SIGALRM, _alarm)
        _FIRED[0] = False
        signal.setitimer(signal.ITIMER_REAL, timeout, 0.5)  # re-armed until the call ends
    try:
        if timeout and not timed:
            out = _in_thread(method, batch, context, timeout)
        else:
            out = method(batch, context)
    except _Timeout:
        raise MethodError(f"{where}: the method did not return within --timeout {timeout:g} s; "
                          "raise --timeout or make the method faster") from None
    except SystemExit as err:
        raise MethodError(f"{where}: the method called sys.exit({err.code!r}); return its "
                          "outputs instead of exiting") from None
    except Exception as err:
        raise MethodError(f"{where}: the method raised {type(err).__name__}: {err} "
                          "(run with --debug for the traceback)",
                          details=getattr(err, "blendbench_traceback", None)
                          or traceback.format_exc()) from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if timed and _FIRED[0]:  # the method caught the timeout and went on
        raise MethodError(f"{where}: the method did not return within --timeout {timeout:g} s "
                          "(it caught the timeout); raise --timeout or make the method faster")
    return check_output(out, len(batch.blend_id), batch.images.shape[-1], where)


def batch_rows(n: int, batch_size: int):
    """(batch number from 1, start, stop) of the test blends' batches, in file order."""
    for k, start in enumerate(range(0, n, batch_size), 1):
        yield k, start, min(start + batch_size, n)


def iter_batches(data: str | Path, batch_size: int):
    """Yield the test blends of a generated release as :class:`Batch` es, in file order."""
    test = load_release(data, "test")
    r_e = np.asarray(test.pairs["r_e_central"], dtype=float)
    for _, start, stop in batch_rows(len(test), batch_size):
        yield Batch(test.blend_id[start:stop], test.images[start:stop], r_e[start:stop])


def file_signature(path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None where it cannot be read; run on
    each worker to learn whether the workers see the command's files."""
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _call_on_rows(method, path: str, start: int, stop: int, blend_id, r_e, context, k: int,
                  timeout):  # fmt: skip
    """:func:`_call` on test blends ``start:stop``, read by the worker from ``path`` itself."""
    with h5py.File(path, "r") as f:
        images = f["images"][start:stop]
    return _call(method, Batch(blend_id, images, r_e), context, k, timeout)


def workers_see(client, path: str | Path) -> bool:
    """Whether every worker of ``client`` reads the same file at ``path`` as this process (a
    LocalCluster, or a cluster on a shared file system): then the workers read their blends
    themselves instead of receiving them from this process."""
    here = file_signature(str(path))
    if here is None:
        return False
    try:
        seen = client.run(file_signature, str(path))
    except Exception:  # noqa: BLE001 - a worker that cannot answer: send the blends instead
        return False
    return bool(seen) and all(tuple(sig or ()) == here for sig in seen.values())


def run_method(
    method: Callable,
    data: str | Path,
    batch_size: int = 250,
    workers: Parallel = 1,
    progress: Callable[[int], None] | None = None,
    context: Context | None = None,
    timeout: float | None = None,
) -> RunResult:
    """Run ``method`` over every test blend of a release; outputs in test-blend order.

    ``workers``: where the batches run (:data:`challenge.pipeline.workers.Parallel`): 1 in this
    process; N or ``"local:N"`` worker processes of a Dask LocalCluster, none of which outlives
    the call; ``"tcp://HOST:PORT"`` a running Dask cluster (the method's module must be
    importable there). The outputs do not depend on it. Workers that see the release's
    ``test_blends.h5`` (a LocalCluster, or a shared file system) read their batches from it;
    otherwise batches are read here and sent as they are needed. Either way memory stays bounded
    whatever the size of the test set. ``timeout``: seconds one call of the method may take.

    Raises:
        MethodError: the method is not picklable for workers, raised (``details`` holds its
            traceback), timed out, or returned something that breaks the protocol; the message
            names the batch.
    """
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_S:
        raise MethodError(f"--timeout {timeout}: give a number of seconds per batch from 0 to "
                          f"{MAX_TIMEOUT_S:,}")
    if batch_size < 1:
        raise MethodError(f"--batch-size {batch_size}: give a number of blends >= 1")
    if workers is not None and workers != 1:
        _check_picklable(method)  # before any worker starts
    context = context or release_context(data)
    parts: list[dict[str, np.ndarray]] = []
    ids: list[np.ndarray] = []
    n_workers = 1

    def collect(batch_ids, result):
        ids.append(batch_ids)
        parts.append(result)
        if progress:
            progress(len(batch_ids))

    with dask_client(workers) as client:
        t0 = time.perf_counter()
        if client is None:
            for k, batch in enumerate(iter_batches(data, batch_size), 1):
                collect(batch.blend_id, _call(method, batch, context, k, timeout))
        else:
            n_workers = n_threads(client)
            method_f, context_f = client.scatter([method, context], broadcast=True, hash=False)
            blend_ids: dict[int, np.ndarray] = {}

            test = load_release(data, "test")
            path = blends_file(test.folder, "test")
            read_there = workers_see(client, path)
            r_e = np.asarray(test.pairs["r_e_central"], dtype=float)

            def tasks():
                for k, start, stop in batch_rows(len(test), batch_size):
                    blend_ids[k] = test.blend_id[start:stop]
                    if read_there:
                        rows = (str(path), start, stop, blend_ids[k], r_e[start:stop])
                    else:  # sent straight to a worker, not through the scheduler with the task
                        batch = Batch(blend_ids[k], test.images[start:stop], r_e[start:stop])
                        rows = (client.scatter(batch, hash=False),)
                    yield method_f, *rows, context_f, k, timeout

            call = _call_on_rows if read_there else _call
            for (*_, k, _), future in in_order(client, call, tasks()):
                batch_ids = blend_ids.pop(k)
                try:
                    result = future.result()
                except MethodError:
                    raise
                except Exception as err:  # a worker died, or the output did not pickle
                    raise MethodError(
                        f"batch {k} (blends {int(batch_ids[0])}..{int(batch_ids[-1])}): the "
                        f"worker failed ({first_line(err)}); run with --workers 1 to see the "
                        "method's own error",
                        details="".join(traceback.format_exception(err))) from None
                collect(batch_ids, result)
        seconds = time.perf_counter() - t0
    if not parts:
        raise MethodError(f"{data}: the release holds no test blends; nothing to run")
    keys = set(parts[0])
    for k, p in enumerate(parts, 1):
        if set(p) != keys:
            raise MethodError(f"batch {k}: the method returned keys {sorted(p)}, batch 1 "
                              f"returned {sorted(keys)}; return the same keys for every batch")
    outputs = {}
    for key in keys:
        try:
            outputs[key] = np.concatenate([p[key] for p in parts])
        except ValueError as err:
            raise MethodError(f"'{key}': the batches' arrays do not stack ({err}); return the "
                              "same shape per blend in every batch") from None
    return RunResult(np.concatenate(ids), outputs, seconds, context, n_workers)


def _check_picklable(method: Callable) -> None:
    """Worker processes import the method by name: it must pickle by reference."""
    try:
        pickle.dumps(method)
    except Exception as err:
        raise MethodError(
            f"{getattr(method, '__qualname__', method)!r} cannot be sent to worker processes "
            f"({type(err).__name__}: {err}); define the method at module level (not inside "
            "a function or as a lambda), or run with --workers 1") from None
