"""Reading and validating submissions: the submitter's side of the contract (docs/contract.md).

A submission is either an HDF5 ``predictions.h5`` (``blend_id`` (N,), ``flux`` (N, 2), optional
``masks`` (N, 2, H, W) in [0, 1], optional ``flux_err`` (N, 2), optional ``detection`` (N,), attrs
``release`` and ``name``) or a flux-only table in any format astropy reads (CSV, ECSV, FITS) with
columns ``blend_id, flux_central, flux_companion[, flux_err_central, flux_err_companion]``, plus an
optional ``submission.toml`` (metadata) next to it.

:func:`read_submission` checks everything a file can be checked for on its own;
:func:`match_to_release` checks it against the release being scored (release name, the set of
blend ids, the stamp size) and returns the order that aligns it with the truth. Both raise
:class:`~challenge.contract.errors.SubmissionError` with a message naming the file, the field, the
first offending blend ids and the fix; no malformed input gets through, and none raises anything
else.

A submission is read from its own files only (:func:`own_file`, :func:`containment_problem`): a
prediction file or ``submission.toml`` must be a regular file inside the submission folder (a
symbolic link is followed only to a file inside it), and an HDF5 file may not reach other files
through external links, virtual datasets or external raw storage outside the folder, nor need
filters other than HDF5's built-in ones. Such refusals never quote the other file's path or bytes.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from challenge.contract._compat import tomllib
from challenge.contract.errors import SubmissionError
from challenge.contract.hdf5 import storage_problem
from challenge.contract.ids import id_positions

PREDICTION_NAMES = ("predictions.h5", "predictions.hdf5", "predictions.ecsv", "predictions.csv",
                    "predictions.fits", "predictions.fits.gz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
METADATA_FILE = "submission.toml"
DETECTION_CASES = {-1: "nothing detected", 0: "central only", 1: "companion only", 2: "both",
                   3: "more than two"}
MAX_LISTED = 5  # offending blend ids quoted in a message
MAX_CHUNK_BYTES = 64 * 2**20  # HDF5 decompresses a whole chunk to read any part of it
MAX_FLUX = 1e30  # counts; beyond it the metrics overflow (a galaxy of mag -45 at zero point 30)
MIN_FLUX = 1e-30  # counts; a non-zero value closer to 0 underflows flux / truth (mag ~100)
# HDF5 filter ids every h5py build decodes (deflate, shuffle, fletcher32, szip, nbit,
# scaleoffset, and h5py's own lzf); any other id needs a plugin loaded from disk
BUILTIN_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                   6: "scaleoffset", 32000: "lzf"}
MAX_LINKS = 10_000  # links walked in an HDF5 file before any of it is read
OWN_FILES = "a submission is read from its own files only"

FORMAT_HELP = """\
A submission is one prediction file (plus an optional submission.toml next to it).

HDF5 predictions.h5 (datasets; write them with gzip compression):
  blend_id    (N,)             int64    every test blend_id of the release, once, any order
  flux        (N, 2)           float    [central, companion] flux in counts; <= 0 = not detected
  masks       (N, 2, H, W)     optional float in [0, 1] (thresholded at 0.5) or uint8 0/1,
                                        H = W = the release's stamp size (128); gives IoU
  flux_err    (N, 2)           optional float > 0, 1-sigma flux errors in counts; gives
                                        calibration scores (68%/95% coverage, mean z, CRPS)
  detection   (N,)             optional int: -1 nothing found, 0 central only,
                                        1 companion only, 2 both, 3 more than two
                                        sources found (adds a
                                        "detections only" leaderboard row)
  attrs: release = "v1" (the release scored), name = "my-method"

Flux-only table (CSV, ECSV, FITS: anything astropy.table.Table.read reads):
  blend_id, flux_central, flux_companion[, flux_err_central, flux_err_companion]
  release in the table metadata (ECSV meta / FITS header RELEASE) or in submission.toml

submission.toml (in submissions/NAME/ for the leaderboard):
  name = "my-method"            release = "v1"
  authors = ["..."]             method = "one-line summary"
  link = "https://..."          hardware = "1x A100"
  training_time_s = 10800       parameters = 1600000
  inference_time_s = 42.0       (the names `blendbench run` writes; the leaderboard shows
                                 them as training time, test-set time and params)

Example (Python):
  import h5py
  with h5py.File("predictions.h5", "w") as f:
      f["blend_id"] = blend_id                      # from test_blends.h5
      f.create_dataset("flux", data=flux)           # (N, 2) counts
      f.create_dataset("masks", data=masks.astype("uint8"), compression="gzip",
                       chunks=(64, 2, 128, 128))
      f.attrs["release"] = "v1"; f.attrs["name"] = "my-method"
"""


@dataclass
class Submission:
    """A read, self-consistent submission (not yet matched to a release).

    Attributes:
        name: method name (attrs / submission.toml / folder name).
        release: the release it claims to be for, or ``None`` if it declares none.
        blend_id: (n_blends,) int64, unique.
        flux: (n_blends, 2) float64 [central, companion] counts, finite.
        masks: optional (n_blends, 2, H, W) bool, already thresholded at >= 0.5.
        flux_err: optional (n_blends, 2) float64 1-sigma errors in counts, finite and > 0.
        detection: optional (n_blends,) int8 detection case (see :data:`DETECTION_CASES`).
        path: the prediction file.
        metadata: the content of submission.toml (empty if none).
    """

    name: str
    release: str | None
    blend_id: np.ndarray
    flux: np.ndarray
    masks: np.ndarray | None = None
    flux_err: np.ndarray | None = None
    detection: np.ndarray | None = None
    path: Path = Path("predictions")
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.blend_id)
        if self.blend_id.shape != (n,) or self.flux.shape != (n, 2):
            raise ValueError(f"inconsistent shapes {self.blend_id.shape}, {self.flux.shape}")
        for name, want in (("flux_err", (n, 2)), ("detection", (n,))):
            arr = getattr(self, name)
            if arr is not None and arr.shape != want:
                raise ValueError(f"{name} has shape {arr.shape}, expected {want}")
        if self.masks is not None and self.masks.shape[:2] != (n, 2):
            raise ValueError(f"masks has shape {self.masks.shape}, expected ({n}, 2, H, W)")

    @property
    def n(self) -> int:
        return len(self.blend_id)

    def subset(self, index: np.ndarray) -> Submission:
        """The submission restricted / reordered to ``index`` (positions)."""
        take = (lambda a: None if a is None else a[index])  # noqa: E731
        return Submission(self.name, self.release, self.blend_id[index], self.flux[index],
                          take(self.masks), take(self.flux_err), take(self.detection),
                          self.path, self.metadata)


def _ids(ids, limit: int = MAX_LISTED) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def _err(path: Path, field: str | None, what: str, fix: str) -> SubmissionError:
    where = f"{path.name}: " + (f"field '{field}': " if field else "")
    return SubmissionError(f"{where}{what}; {fix}", field=field)


def _shown(name: str, limit: int = 60) -> str:
    """A name taken from a file as one short line (control characters escaped)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# a submission is its own files only


def own_file(path: Path, root: Path) -> tuple[Path, os.stat_result]:
    """The real path and status of ``path`` if it is a regular file of the submission folder.

    Args:
        path: a file of the submission (a prediction file, ``submission.toml``).
        root: the submission folder, resolved (``folder.resolve()``).

    Returns:
        ``(real, st)``: the fully resolved path to open and its :func:`os.stat` result.

    Raises:
        SubmissionError: ``path`` is missing, a symbolic link whose target is not a file inside
            ``root``, or not a regular file (a directory, FIFO, socket, device). The message
            names ``path``, never the link's target.
    """
    fix = f"copy the file itself into the submission folder ({OWN_FILES})"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _err(path, None, "no such file", "give the path of your predictions") from None
    except OSError as err:
        raise _err(path, None, f"cannot be read ({err.strerror})", fix) from None
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # a loop of links
        raise _err(path, None, "a symbolic link that cannot be followed", fix) from None
    link = stat.S_ISLNK(st.st_mode)
    if not real.is_relative_to(root):
        raise _err(path, None, "a symbolic link that points outside the submission folder"
                   if link else "outside the submission folder", fix)
    if link:
        try:
            st = os.stat(real)
        except OSError:
            raise _err(path, None, "a symbolic link to a file that does not exist", fix) from None
    if not stat.S_ISREG(st.st_mode):
        raise _err(path, None, "not a regular file (a directory, FIFO, socket or device)",
                   "write the predictions as a regular file")
    return real, st


def _file_inside(base: Path, name: str | bytes, root: Path) -> Path | None:
    """The resolved regular file an HDF5 file at ``base`` names as ``name`` (relative to
    ``base``), or None if it is missing or not inside ``root``."""
    target = Path(os.fsdecode(name))
    target = target if target.is_absolute() else base / target
    try:
        real = target.resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not real.is_relative_to(root):
        return None
    try:
        return real if stat.S_ISREG(os.stat(real).st_mode) else None
    except (OSError, ValueError):
        return None


def _plain_source(src, name: str) -> str | None:
    """Why dataset ``name`` of the open file ``src`` cannot be a virtual dataset's source, or
    None. HDF5 looks up a source's own external files in the working directory, so a source
    must hold its data itself."""
    import h5py

    ds = src.get(name)
    if not isinstance(ds, h5py.Dataset):
        return "a virtual dataset whose source dataset is missing"
    if ds.is_virtual or ds.external:
        return "a virtual dataset whose source is itself a virtual or external dataset"
    return None


def _source_problem(f, vs, root: Path, seen: set[Path]) -> str | None:
    """Why a virtual dataset's source ``vs`` (of the open file ``f``) is not the submission's
    own, or None: it must be a plain dataset of this file, or of an HDF5 file inside ``root``
    that passes :func:`containment_problem` with plain datasets only."""
    import h5py

    if vs.file_name == ".":
        return _plain_source(f, vs.dset_name)
    if "%" in vs.file_name or "%" in vs.dset_name:
        return "a virtual dataset whose source names a pattern of files"
    if os.environ.get("HDF5_VDS_PREFIX"):
        return "a virtual dataset whose source file cannot be checked (HDF5_VDS_PREFIX is set)"
    real = _file_inside(Path(f.filename).parent, vs.file_name, root)
    if real is None:
        return "a virtual dataset whose source file is missing or outside the submission folder"
    if real == Path(f.filename):
        return _plain_source(f, vs.dset_name)
    try:
        with h5py.File(real, "r") as src:
            if real not in seen:
                seen.add(real)
                if containment_problem(src, root, seen, nested=True) is not None:
                    return "a virtual dataset whose source file refers to other files"
            return _plain_source(src, vs.dset_name)
    except (OSError, ValueError, KeyError, RuntimeError):
        return "a virtual dataset whose source file is not a readable HDF5 file"


def _dataset_problem(f, ds, root: Path, seen: set[Path], nested: bool) -> str | None:
    """Why dataset ``ds`` of the open file ``f`` reads outside the submission, or None
    (``nested``: ``f`` is a virtual dataset's source file, whose datasets must be plain)."""
    if nested and (ds.is_virtual or ds.external):
        return "a virtual or external dataset in a virtual dataset's source file"
    if ds.is_virtual:
        for vs in ds.virtual_sources():
            problem = _source_problem(f, vs, root, seen)
            if problem is not None:
                return problem
    external = ds.external or ()
    if external and os.environ.get("HDF5_EXTFILE_PREFIX"):
        return "an external dataset whose raw file cannot be checked (HDF5_EXTFILE_PREFIX is set)"
    for name, _offset, _size in external:
        if _file_inside(Path(f.filename).parent, name, root) is None:
            return "an external dataset whose raw file is missing or outside the submission folder"
    dcpl = ds.id.get_create_plist()
    for i in range(dcpl.get_nfilters()):
        code = int(dcpl.get_filter(i)[0])
        if code not in BUILTIN_FILTERS:
            return f"compressed with filter {code}, not one of HDF5's built-in filters"
    return None


def containment_problem(f, root: Path, seen: set[Path] | None = None,
                        nested: bool = False) -> tuple[str | None, str, str] | None:
    """The first link or dataset of an open HDF5 file that reaches outside the submission.

    Every link is walked (external links are listed, never followed) and every dataset checked
    before any data is read. Refused: an external or user-defined link anywhere; a virtual
    dataset whose source is another file that is not an HDF5 file inside ``root`` passing the
    same checks (with plain datasets only); external raw storage in a file not inside ``root``;
    a filter not in :data:`BUILTIN_FILTERS`. Soft links are kept: they name objects of the
    same file.

    Args:
        f: an open ``h5py.File``, opened by its resolved path.
        root: the submission folder, resolved.
        seen: files already checked (virtual sources that name each other).
        nested: ``f`` is a virtual dataset's source file.

    Returns:
        ``(field, what, fix)`` for :func:`_err`, or None if the file reads nothing but itself
        and the submission's own files.
    """
    import h5py

    seen = set() if seen is None else seen
    seen.add(Path(f.filename))
    links: list[tuple[bytes, int]] = []

    def visit(name: bytes, info) -> bool | None:
        links.append((name, info.type))
        return True if len(links) > MAX_LINKS else None

    f.id.links.visit(visit, info=True)
    if len(links) > MAX_LINKS:
        return (None, f"more than {MAX_LINKS:,} links",
                "write only blend_id, flux and the optional datasets (see `blendbench format`)")
    for raw, kind in links:
        name = _shown(raw.decode("utf-8", "replace"))
        if kind == h5py.h5l.TYPE_EXTERNAL:
            return (name, "a link whose target cannot be opened (an external link, to "
                    "another file)", f"write '{name}' as a dataset in this file ({OWN_FILES})")
        if kind not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT):
            return (name, "a link whose target cannot be opened (a user-defined link)",
                    f"write '{name}' as a dataset in this file")
    datasets: list[str] = []

    def visit_object(name: bytes, info) -> None:
        if info.type == h5py.h5o.TYPE_DATASET:
            datasets.append(name.decode("utf-8", "surrogateescape"))

    h5py.h5o.visit(f.id, visit_object, info=True)
    for n in datasets:
        problem = _dataset_problem(f, _open_dataset(f, n), root, seen, nested)
        if problem is not None:
            name = _shown(n)
            fix = (f"write '{name}' with compression='gzip' (optionally shuffle, fletcher32)"
                   if problem.startswith("compressed") else
                   f"write '{name}' into this file (h5py: f['{name}'] = array), not as a "
                   f"virtual or external dataset ({OWN_FILES})")
            return name, problem, fix
    return None


# ---------------------------------------------------------------------------------------------
# submission.toml


def read_metadata(path: Path, root: Path | None = None) -> dict[str, Any]:
    """The content of a ``submission.toml`` (an empty dict if the file does not exist).

    ``root`` is the submission folder (default: the file's folder); the file must be a regular
    file inside it (see :func:`own_file`).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return {}
    real, _ = own_file(path, Path(path).parent.resolve() if root is None else root)
    try:
        doc = tomllib.loads(real.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise _err(path, None, f"not valid TOML ({err})",
                   "fix the syntax (see `blendbench format`)") from None
    if "release" in doc and not isinstance(doc["release"], str):
        raise _err(path, "release", f"expected a string, got {doc['release']!r}",
                   'write e.g. release = "v1"')
    return doc


# ---------------------------------------------------------------------------------------------
# field checks shared by both formats


def _check_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise _err(path, "blend_id", f"dtype {ids.dtype}, expected an integer type",
                   "write the blend_id values of test_blends.h5 as int64")
    if ids.ndim != 1 or ids.size == 0:
        raise _err(path, "blend_id", f"shape {ids.shape}, expected (N,) with N >= 1",
                   "write one blend_id per test blend")
    if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
        raise _err(path, "blend_id", "values beyond int64", "write the release's blend_id values")
    ids = ids.astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if uniq.size != ids.size:
        raise _err(path, "blend_id", f"duplicate blend_id {_ids(uniq[counts > 1])}",
                   "write each blend once")
    return ids


def _check_pairs(path: Path, name: str, arr: np.ndarray, ids: np.ndarray, *,
                 positive: bool = False) -> np.ndarray:
    n = ids.size
    if arr.dtype.kind not in "iuf":
        raise _err(path, name, f"dtype {arr.dtype}, expected float",
                   f"write {name} as float64 counts")
    if arr.shape != (n, 2):
        raise _err(path, name, f"shape {arr.shape}, expected ({n}, 2) to match blend_id",
                   "write one [central, companion] row per blend_id")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        fix = ("write a finite 1-sigma error" if positive else
               "write 0 (or any flux <= 0) for a galaxy you did not detect")
        raise _err(path, name, f"NaN or inf for blend_id {_ids(ids[bad])}", fix)
    bad = (np.abs(arr) > MAX_FLUX).any(axis=1)
    if bad.any():
        raise _err(path, name, f"values beyond {MAX_FLUX:g} counts (e.g. "
                   f"{float(arr[bad][np.abs(arr[bad]) > MAX_FLUX][0]):g}) for blend_id "
                   f"{_ids(ids[bad])}", f"write {name} in counts")
    tiny = (arr != 0) & (np.abs(arr) < MIN_FLUX)
    bad = tiny.any(axis=1)
    if bad.any():
        fix = ("write 1-sigma errors in counts" if positive else
               "write 0 (or any flux <= 0) for a galaxy you did not detect")
        raise _err(path, name, f"non-zero values closer to 0 than {MIN_FLUX:g} counts (e.g. "
                   f"{float(arr[tiny][0]):g}) for blend_id {_ids(ids[bad])}", fix)
    if positive:
        bad = (arr <= 0).any(axis=1)
        if bad.any():
            raise _err(path, name, f"values <= 0 for blend_id {_ids(ids[bad])}",
                       "write strictly positive 1-sigma errors (or leave flux_err out)")
    return arr


def _check_detection(path: Path, arr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        raise _err(path, "detection", f"dtype {arr.dtype}, expected an integer type",
                   "write -1 nothing, 0 central only, 1 companion only, 2 both, 3 more")
    if arr.shape != ids.shape:
        raise _err(path, "detection", f"shape {arr.shape}, expected {ids.shape}",
                   "write one detection case per blend_id")
    bad = ~np.isin(arr, list(DETECTION_CASES))
    if bad.any():
        raise _err(path, "detection", f"values outside -1..3 for blend_id {_ids(ids[bad])}",
                   "write -1 nothing, 0 central only, 1 companion only, 2 both, 3 more")
    return arr.astype(np.int8)


def _release_text(value, path: Path, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | np.bytes_):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise _err(path, field, "not UTF-8 text", 'write e.g. "v1"') from None
    if isinstance(value, np.ndarray) and value.size == 1:
        return _release_text(value.ravel()[0], path, field)
    if not isinstance(value, str | np.str_):
        raise _err(path, field, f"expected a string, got {value!r}", 'write e.g. "v1"')
    return str(value)


# ---------------------------------------------------------------------------------------------
# HDF5


def _read_masks(path: Path, ds, ids: np.ndarray) -> np.ndarray:
    """Check and threshold masks read slab by slab from an HDF5 dataset or an array in memory."""
    n = ids.size
    if ds.ndim != 4 or ds.shape[:2] != (n, 2) or ds.shape[2] != ds.shape[3] or ds.shape[2] < 1:
        raise _err(path, "masks", f"shape {ds.shape}, expected ({n}, 2, H, W) with H = W",
                   "write one [central, companion] mask pair per blend_id, stamp-sized")
    kind = ds.dtype.kind
    if kind not in "biuf":
        raise _err(path, "masks", f"dtype {ds.dtype}, expected float in [0, 1] or uint8 0/1",
                   "write masks as float32 probabilities or thresholded uint8")
    out = np.empty(ds.shape, dtype=bool)
    chunks = getattr(ds, "chunks", None)
    slab = chunks[0] if chunks else 64
    slab = max(1, min(slab * max(1, 64 // slab), n))
    buf = np.empty((slab, *ds.shape[1:]), dtype=ds.dtype)
    for start in range(0, n, slab):
        stop = min(start + slab, n)
        if isinstance(ds, np.ndarray):
            part = ds[start:stop]
        else:
            part = buf[: stop - start]
            ds.read_direct(part, np.s_[start:stop], np.s_[0: stop - start])
        if kind == "b":
            out[start:stop] = part
            continue
        if kind == "f":
            bad = ~np.isfinite(part).reshape(part.shape[0], -1).all(axis=1)
            if bad.any():
                raise _err(path, "masks", f"NaN or inf for blend_id {_ids(ids[start:stop][bad])}",
                           "write mask values in [0, 1]")
        flat = part.reshape(part.shape[0], -1)
        bad = (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
        if bad.any():
            raise _err(path, "masks", f"values outside [0, 1] for blend_id "
                       f"{_ids(ids[start:stop][bad])}",
                       "write probabilities in [0, 1] or thresholded 0/1 masks")
        if kind == "f":
            np.greater_equal(part, 0.5, out=out[start:stop])
        else:
            np.not_equal(part, 0, out=out[start:stop])
    return out


def _dataset(path: Path, f, name: str, required: bool):
    import h5py

    if f.get(name, getlink=True) is None:
        if required:
            raise _err(path, name, "missing", f"write the dataset '{name}' "
                       "(see `blendbench format`)")
        return None
    try:
        ds = _open_dataset(f, name)
    except (KeyError, OSError) as err:  # a dangling soft link
        raise _err(path, name, f"a link whose target cannot be opened ({err})",
                   f"write '{name}' as a dataset in this file") from None
    if not isinstance(ds, h5py.Dataset):
        raise _err(path, name, "is a group, expected a dataset", f"write '{name}' as an array")
    if ds.dtype.names is not None or ds.dtype.kind in "OSUV":
        raise _err(path, name, f"dtype {ds.dtype}, expected a numeric array",
                   f"write '{name}' as a plain numeric array")
    if ds.shape is None:
        raise _err(path, name, "an empty dataset (no shape)", f"write '{name}' as an array")
    if ds.chunks is not None:
        chunk_bytes = int(np.prod(ds.chunks, dtype=np.float64)) * ds.dtype.itemsize
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise _err(path, name, f"chunks {ds.chunks} of {chunk_bytes / 2**20:,.0f} MiB each, "
                       f"at most {MAX_CHUNK_BYTES // 2**20} MiB are read",
                       "write smaller chunks, e.g. chunks=(64, 2, 128, 128) for masks")
    problem = storage_problem(ds, Path(f.filename))
    if problem is not None:
        raise _err(path, name, problem, f"write '{name}' into this file (h5py: f['{name}'] = "
                   "array), not as a virtual or external dataset")
    return ds


def _open_dataset(f, name: str):
    """``f[name]``; a dataset is opened with its external and virtual-source files looked up
    next to ``f`` (HDF5 would look in the working directory too)."""
    import h5py

    try:
        kind = f.get(name, getclass=True)
    except (RuntimeError, OSError, KeyError):  # a dangling soft link: f[name] says so
        kind = None
    if kind is not h5py.Dataset:
        return f[name]
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_efile_prefix(b"${ORIGIN}")
    dapl.set_virtual_prefix(b"${ORIGIN}")
    return h5py.Dataset(h5py.h5d.open(f.id, name.encode("utf-8", "surrogateescape"), dapl))


def _declared_shape(f, name: str) -> tuple[int, ...] | None:
    try:
        return getattr(_open_dataset(f, name), "shape", None) if name in f else None
    except (KeyError, OSError, ValueError):
        return None  # a broken link: _dataset names it


def _check_declared(path: Path, f, expect: tuple[int, int] | None) -> None:
    """Refuse declared shapes the release rules out, before any data is read (a 10 KB file can
    declare terabytes)."""
    if expect is None:
        return
    n, stamp = expect
    for name, want in (("blend_id", (n,)), ("flux", (n, 2)), ("flux_err", (n, 2)),
                       ("detection", (n,))):
        shape = _declared_shape(f, name)
        if shape and len(shape) >= 1 and shape[0] > n:
            raise _err(path, name, f"declares {shape[0]:,} rows, the release has {n:,} test "
                       "blends", f"write one row per test blend, shape {want}")
    shape = _declared_shape(f, "masks")
    if shape and (len(shape) != 4 or shape[0] > n or shape[1] != 2
                  or tuple(shape[2:]) != (stamp, stamp)):
        raise _err(path, "masks", f"declares shape {shape}, the release needs (N <= {n:,}, 2, "
                   f"{stamp}, {stamp})", "write one [central, companion] mask pair per blend_id "
                   "on the stamp grid of test_blends.h5")


def _same_file(f, st: os.stat_result) -> bool:
    """Whether the open HDF5 file ``f`` is the file whose status is ``st`` (a file swapped
    after it was checked is not)."""
    try:
        handle = f.id.get_vfd_handle()
    except (OSError, ValueError, TypeError, AttributeError):
        return True  # a driver without a descriptor: the checks on the path stand
    if not isinstance(handle, int) or handle < 0:
        return True
    opened = os.fstat(handle)
    return (opened.st_dev, opened.st_ino) == (st.st_dev, st.st_ino)


def _read_hdf5(path: Path, expect: tuple[int, int] | None = None, *,
               root: Path | None = None) -> dict[str, Any]:
    import h5py

    root = path.parent.resolve() if root is None else root
    real, st = own_file(path, root)
    try:
        f = h5py.File(real, "r")
    except (OSError, ValueError) as err:
        raise _err(path, None, f"not a readable HDF5 file ({_first_line(err)})",
                   "re-write it with h5py (is it truncated or still being copied?)") from None
    with f:
        if not _same_file(f, st):
            raise _err(path, None, "changed while it was being opened",
                       "score it again once it is written")
        problem = containment_problem(f, root)
        if problem is not None:
            raise _err(path, *problem)
        _check_declared(path, f, expect)
        ids_ds = _dataset(path, f, "blend_id", True)
        ids = _check_ids(path, ids_ds[()] if ids_ds.ndim == 0 else ids_ds[:])
        out: dict[str, Any] = {"blend_id": ids}
        flux_ds = _dataset(path, f, "flux", True)
        if flux_ds.shape != (ids.size, 2):
            raise _err(path, "flux", f"shape {flux_ds.shape}, expected ({ids.size}, 2) to match "
                       "blend_id", "write one [central, companion] row per blend_id")
        out["flux"] = _check_pairs(path, "flux", flux_ds[:], ids)
        err_ds = _dataset(path, f, "flux_err", False)
        if err_ds is not None:
            if err_ds.shape != (ids.size, 2):
                raise _err(path, "flux_err", f"shape {err_ds.shape}, expected ({ids.size}, 2)",
                           "write one [central, companion] error row per blend_id")
            out["flux_err"] = _check_pairs(path, "flux_err", err_ds[:], ids, positive=True)
        det_ds = _dataset(path, f, "detection", False)
        if det_ds is not None:
            if det_ds.shape != ids.shape:
                raise _err(path, "detection", f"shape {det_ds.shape}, expected {ids.shape}",
                           "write one detection case per blend_id")
            out["detection"] = _check_detection(path, det_ds[:], ids)
        mask_ds = _dataset(path, f, "masks", False)
        if mask_ds is not None:
            out["masks"] = _read_masks(path, mask_ds, ids)
        out["release"] = _release_text(f.attrs.get("release"), path, "attrs['release']")
        name = f.attrs.get("name")
        out["name"] = None if name is None else _release_text(name, path, "attrs['name']")
    return out


# ---------------------------------------------------------------------------------------------
# tables


def _column(path: Path, table, name: str, required: bool) -> np.ndarray | None:
    if name not in table.colnames:
        if required:
            raise _err(path, name, f"missing column (columns: {', '.join(table.colnames)})",
                       "name the columns blend_id, flux_central, flux_companion")
        return None
    col = table[name]
    mask = getattr(col, "mask", None)
    if mask is not None and np.any(mask):
        rows = np.flatnonzero(np.asarray(mask))
        ids = table["blend_id"] if name != "blend_id" and "blend_id" in table.colnames else rows
        what = "empty values for " + ("blend_id " if name != "blend_id" else "rows ")
        raise _err(path, name, what + _ids(np.asarray(ids)[rows] if name != "blend_id" else rows),
                   "fill every value (write 0 for a galaxy you did not detect)")
    data = np.asarray(col)
    if data.ndim != 1:
        raise _err(path, name, f"shape {data.shape}, expected one value per row",
                   "write a scalar column")
    return data


def _first_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line (astropy's format-guessing errors run to 60 lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


TABLE_BYTES_PER_ROW = 2_000  # a table row of ids, fluxes and errors is ~150 characters
TABLE_MAX_BYTES = 64 * 2**20  # the inflated size allowed when the row count is not known
TABLE_MAX_COLUMNS = 64
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_YAML_ALIAS = re.compile(r"(^|[\s\[{,:-])[&*][^\s,\]}]")


def _inflated(real: Path, limit: int) -> tuple[bytes | None, str | None]:
    """The first ``limit + 1`` bytes of the file's content, decompressed if it is gzip, bz2 or
    xz (read as a stream: a small bomb never inflates past the limit), and the compression."""
    import bz2
    import gzip
    import lzma

    with open(real, "rb") as f:
        head = f.read(6)
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(kind, open)
    try:
        with opener(real, "rb") as f:
            return f.read(limit + 1), kind
    except (OSError, EOFError, lzma.LZMAError):
        return None, kind


def check_table_budget(path: Path, real: Path, rows: int | None) -> None:
    """Refuse a table whose size no release needs, before any parser reads it: more inflated
    bytes than ``TABLE_BYTES_PER_ROW`` per expected row (or ``TABLE_MAX_BYTES``), a header of
    more than ``TABLE_MAX_COLUMNS`` columns, YAML anchors or aliases in an ECSV header, or a
    FITS HDU whose declared data exceed the same budget.

    Raises:
        SubmissionError: one line naming the file and the limit.
    """
    limit = TABLE_MAX_BYTES if rows is None else TABLE_BYTES_PER_ROW * (rows + 16)
    if path.name.lower().endswith(FITS_SUFFIXES):
        _check_fits_budget(path, real, limit)
        return
    data, kind = _inflated(real, limit)
    if data is None:
        raise _err(path, None, f"not a readable {kind} stream", "write it uncompressed")
    if len(data) > limit:
        what = f"inflates past {limit:,} bytes" if kind else f"is over {limit:,} bytes"
        raise _err(path, None, f"{what} (more than {TABLE_BYTES_PER_ROW:,} per blend of the "
                   "release)", "write one row per test blend, with the documented columns only")
    lines = data.split(b"\n")
    header = [ln for ln in lines if ln.startswith(b"#")]
    if any(_YAML_ALIAS.search(ln[1:].decode("utf-8", "replace")) for ln in header):
        raise _err(path, None, "YAML anchors or aliases in its header",
                   "write the ECSV header without & or * references")
    first = next((ln for ln in lines if ln.strip() and not ln.startswith(b"#")), b"")
    if max(first.count(sep) for sep in (b",", b" ", b"\t")) + 1 > TABLE_MAX_COLUMNS:
        raise _err(path, None, f"more than {TABLE_MAX_COLUMNS} columns",
                   "write the columns blend_id, flux_central, flux_companion (and the optional "
                   "ones) only")


def _check_fits_budget(path: Path, real: Path, limit: int) -> None:
    import warnings

    from astropy.io import fits

    try:
        with warnings.catch_warnings(record=True), \
                fits.open(real, lazy_load_hdus=True, memmap=False) as hdul:
            warnings.simplefilter("always")
            for k, hdu in enumerate(hdul):
                if k >= 16:
                    raise _err(path, None, "more than 16 HDUs", "write one table HDU")
                header = hdu.header
                axes = [int(header.get(f"NAXIS{i}", 0)) for i in
                        range(1, int(header.get("NAXIS", 0)) + 1)]
                size = abs(int(header.get("BITPIX", 8))) // 8 * int(np.prod(axes, dtype=object))
                size += int(header.get("PCOUNT", 0))
                if size > limit or int(header.get("TFIELDS", 0)) > TABLE_MAX_COLUMNS:
                    raise _err(path, None, f"HDU {k} declares {size:,} bytes of data or "
                               f"{header.get('TFIELDS', 0)} columns (at most {limit:,} bytes "
                               f"and {TABLE_MAX_COLUMNS} columns)",
                               "write one table of one row per test blend")
    except SubmissionError:
        raise
    except Exception as err:  # noqa: BLE001  (astropy raises many types for unreadable input)
        raise _err(path, None, f"not a FITS file astropy can read ({_first_line(err)})",
                   "write a FITS binary table") from None


def _read_table(path: Path, *, root: Path | None = None,
                rows: int | None = None) -> dict[str, Any]:
    import warnings

    from astropy.table import Table

    real, _ = own_file(path, path.parent.resolve() if root is None else root)
    check_table_budget(path, real, rows)

    kwargs: dict[str, Any] = {}
    name = path.name.lower()
    if name.endswith(".csv"):
        kwargs["format"] = "ascii.csv"
        kwargs["encoding"] = "utf-8-sig"  # a byte-order mark is not part of the first column
    elif name.endswith(".ecsv"):
        kwargs["format"] = "ascii.ecsv"
    elif name.endswith(FITS_SUFFIXES):
        kwargs["format"] = "fits"
        kwargs["mask_invalid"] = False  # NaN stays NaN, reported as such
    try:
        with warnings.catch_warnings(record=True) as caught:  # astropy WARNING lines
            warnings.simplefilter("always")
            table = Table.read(real, **kwargs)
    except Exception as err:  # astropy raises many types for unreadable input
        raise _err(path, None, f"not a table astropy can read ({_first_line(err)})",
                   "write predictions.h5, or a CSV, ECSV or FITS table with columns blend_id, "
                   "flux_central, flux_companion") from None
    if not hasattr(table, "colnames"):
        raise _err(path, None, "not a table", "write a CSV, ECSV or FITS table")
    for col in list(table.colnames):
        clean = col.lstrip("\ufeff").strip()
        if clean != col and clean not in table.colnames:
            table.rename_column(col, clean)
    overflow = [str(w.message) for w in caught if "Overflow" in str(w.message)]
    if overflow:
        raise _err(path, None, f"integers out of range ({overflow[0].splitlines()[0]})",
                   "write blend_id as the release's int64 values and fluxes as floats")
    ids = _check_ids(path, _column(path, table, "blend_id", True))
    cols = [_column(path, table, c, True) for c in ("flux_central", "flux_companion")]
    out: dict[str, Any] = {"blend_id": ids}
    for c in cols:
        if c.dtype.kind not in "iuf":
            raise _err(path, "flux", f"column dtype {c.dtype}, expected float",
                       "write numeric fluxes in counts")
    out["flux"] = _check_pairs(path, "flux", np.stack(cols, axis=1), ids)
    errs = [_column(path, table, c, False) for c in ("flux_err_central", "flux_err_companion")]
    if any(e is not None for e in errs):
        if any(e is None for e in errs):
            raise _err(path, "flux_err", "only one of flux_err_central / flux_err_companion",
                       "write both error columns or neither")
        if any(e.dtype.kind not in "iuf" for e in errs):
            raise _err(path, "flux_err", "non-numeric column", "write float errors in counts")
        out["flux_err"] = _check_pairs(path, "flux_err", np.stack(errs, axis=1), ids,
                                       positive=True)
    det = _column(path, table, "detection", False)
    if det is not None:
        out["detection"] = _check_detection(path, det, ids)
    meta = {str(k).lower(): v for k, v in table.meta.items()}
    out["release"] = _release_text(meta.get("release"), path, "meta['release']")
    out["name"] = _release_text(meta.get("name"), path, "meta['name']") if "name" in meta else None
    return out


# ---------------------------------------------------------------------------------------------


def find_prediction_file(folder: Path) -> Path:
    """The prediction file of a submission folder (``predictions.h5`` first).

    Raises:
        SubmissionError: no prediction file, or the first one present is not a regular file
            of the folder (see :func:`own_file`).
    """
    folder = Path(folder)
    for name in PREDICTION_NAMES:
        if os.path.lexists(folder / name):
            own_file(folder / name, folder.resolve())
            return folder / name
    raise SubmissionError(
        f"{folder}: no prediction file; write one of {', '.join(PREDICTION_NAMES)} "
        "(see `blendbench format`)", field=None)


def read_submission(path: str | Path, *, name: str | None = None,
                    expect: tuple[int, int] | None = None) -> Submission:
    """Read and check one submission file (or a submission folder).

    Args:
        path: a prediction file (HDF5 or a table astropy reads) or a folder holding one
            (``predictions.h5`` / ``.ecsv`` / ``.csv`` / ``.fits``) and a ``submission.toml``.
        name: overrides the method name.
        expect: ``(n_blends, stamp_size)`` of the release to be scored: declared shapes beyond
            them are refused before any data is read (bounded memory for hostile files).

    Returns:
        A :class:`Submission` whose arrays passed every check that needs no release.

    Raises:
        SubmissionError: for any problem, with a message naming the file, the field, the first
            offending blend ids and the fix. Only the submission's own files are read: the
            prediction file and ``submission.toml`` must be regular files of its folder (a
            symbolic link only to a file inside it), and an HDF5 file may not reach any other
            file (see :func:`containment_problem`).
    """
    path = Path(path)
    if path.is_dir():
        folder, path = path, find_prediction_file(path)
    else:
        folder = path.parent
        if not os.path.lexists(path):
            raise SubmissionError(f"{path}: no such file; give the path of your predictions")
    root = folder.resolve()
    real, _ = own_file(path, root)
    meta = read_metadata(folder / METADATA_FILE, root)
    try:
        if path.suffix.lower() in HDF5_SUFFIXES or _is_hdf5(real):
            data = _read_hdf5(path, expect, root=root)
        else:
            data = _read_table(path, root=root, rows=None if expect is None else expect[0])
    except SubmissionError:
        raise
    except MemoryError:
        raise _err(path, None, "too large to load", "check the dataset shapes") from None
    except Exception as err:  # a corrupted file can make the readers fail in many ways
        raise _err(path, None, f"cannot be read ({_first_line(err)})",
                   "re-write the file (is it truncated or corrupted?)") from None
    release = data["release"]
    meta_release = meta.get("release")
    if release is not None and meta_release is not None and release != meta_release:
        raise _err(path, "release", f"the file says {release!r} but {METADATA_FILE} says "
                   f"{meta_release!r}", "make them agree")
    release = release if release is not None else meta_release
    sub_name = name or data.get("name") or meta.get("name") or (
        folder.name if path.stem == "predictions" else path.stem)
    return Submission(
        name=str(sub_name), release=release, blend_id=data["blend_id"], flux=data["flux"],
        masks=data.get("masks"), flux_err=data.get("flux_err"), detection=data.get("detection"),
        path=path, metadata=meta,
    )


def submission_from_arrays(blend_id, flux, *, masks=None, flux_err=None, detection=None,
                           release: str | None = None,
                           name: str = "predictions") -> Submission:
    """A :class:`Submission` from arrays in memory, checked as :func:`read_submission` checks a
    file (messages name ``name`` where they would name the file).

    Args:
        blend_id: (N,) int test blend ids; flux: (N, 2) [central, companion] counts.
        masks: optional (N, 2, H, W) in [0, 1] (thresholded at 0.5) or 0/1.
        flux_err: optional (N, 2) 1-sigma errors in counts, > 0.
        detection: optional (N,) int detection case (see :data:`DETECTION_CASES`).
        release: the release the arrays are for.

    Raises:
        SubmissionError: naming the field, the first offending blend ids and the fix.
    """
    path = Path(name)

    def plain(field: str, value) -> np.ndarray:
        """``value`` as a plain array: no masked array (whose hidden values would be scored),
        no ragged nesting."""
        if isinstance(value, np.ma.MaskedArray):
            raise _err(path, field, "a masked array (its masked values would be scored as "
                       "they are)", "fill or drop the masked entries (np.ma.filled) first")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise _err(path, field, f"not an array ({_first_line(err, 80)})",
                       "give one row per blend, all of the same length") from None
        if arr.dtype == object:
            raise _err(path, field, "ragged or mixed values (an object array)",
                       "give one row per blend, all of the same length, numbers only")
        return arr

    ids = _check_ids(path, plain("blend_id", blend_id))
    return Submission(
        name=name, release=release, blend_id=ids,
        flux=_check_pairs(path, "flux", plain("flux", flux), ids),
        masks=None if masks is None else _read_masks(path, plain("masks", masks), ids),
        flux_err=None if flux_err is None else _check_pairs(path, "flux_err",
                                                            plain("flux_err", flux_err), ids,
                                                            positive=True),
        detection=None if detection is None else _check_detection(
            path, plain("detection", detection), ids),
        path=path,
    )


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` is HDF5 (its signature at byte 0, or after a user block)."""
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except (OSError, ValueError):
        return False


def match_to_release(sub: Submission, blend_id: np.ndarray, release: str,
                     stamp_size: int | None = None) -> np.ndarray:
    """Check a submission against a release; return the order that aligns it with the truth.

    Args:
        sub: a read submission.
        blend_id: (N,) the release's test blend ids, in truth order.
        release: the release name being scored.
        stamp_size: the release's stamp size (px) for the mask shape check.

    Returns:
        (N,) positions into the submission such that ``sub.blend_id[order] == blend_id``.

    Raises:
        SubmissionError: wrong or undeclared release, missing or unknown blend ids, wrong mask size.
    """
    path = sub.path
    if sub.release is None:
        raise _err(path, "release", "no release declared",
                   f'add attrs["release"] = "{release}" (HDF5), release in the table metadata, or '
                   f'release = "{release}" in {METADATA_FILE}')
    if sub.release != release:
        raise _err(path, "release", f"predictions are for release {sub.release!r} but the data "
                   f"is release {release!r}",
                   f"score with --data {sub.release} or predict on the {release!r} test blends")
    truth_ids = np.asarray(blend_id, dtype=np.int64)
    pos, found = id_positions(sub.blend_id, truth_ids)
    if not found.all():
        raise _err(path, "blend_id", f"{int((~found).sum())} blend(s) of release {release!r} "
                   f"missing: blend_id {_ids(truth_ids[~found])}",
                   "predict every blend of test_blends.h5 (write flux 0 if nothing is detected)")
    unknown = ~np.isin(sub.blend_id, truth_ids)
    if unknown.any():
        raise _err(path, "blend_id", f"{int(unknown.sum())} blend_id(s) not in the test set of "
                   f"release {release!r}: {_ids(sub.blend_id[unknown])}",
                   "drop them (train/val blends and other releases do not count)")
    if stamp_size is not None and sub.masks is not None and sub.masks.shape[2:] != (
            stamp_size, stamp_size):
        raise _err(path, "masks", f"stamps of {sub.masks.shape[2]}x{sub.masks.shape[3]} px, "
                   f"release {release!r} has {stamp_size}x{stamp_size}",
                   "write masks on the stamp grid of test_blends.h5")
    return pos
