"""Checks on HDF5 datasets before any of their data is read.

A virtual dataset (VDS) or a dataset with external storage keeps its values in other files; when
those are missing or unreadable, HDF5 silently returns the fill value (zeros) instead of failing.
:func:`storage_problem` says so first, so that readers refuse such a dataset with one line.
"""

from __future__ import annotations

import os
from pathlib import Path


def _source_readable(file_path: Path, source: str, dataset: str | None) -> bool:
    import h5py

    if source == ".":
        candidates = [file_path]
    else:
        prefix = os.environ.get("HDF5_VDS_PREFIX")
        candidates = [Path(prefix) / source] if prefix else []
        candidates += [file_path.parent / source, Path(source)]
    for cand in candidates:
        if not cand.is_file() or not os.access(cand, os.R_OK):
            continue
        if dataset is None:
            return True
        try:
            with h5py.File(cand, "r") as f:
                return dataset in f
        except (OSError, ValueError):
            return False
    return False


def storage_problem(ds, file_path: str | Path) -> str | None:
    """Why the data of HDF5 dataset ``ds`` (of file ``file_path``) cannot be trusted, or None.

    A virtual dataset whose source file or dataset is missing or unreadable, or an external
    dataset whose raw file is missing, unreadable or shorter than declared.
    """
    file_path = Path(file_path)
    if ds.is_virtual:
        for vs in ds.virtual_sources():
            if not _source_readable(file_path, vs.file_name, vs.dset_name):
                return (f"virtual dataset whose source {vs.file_name}:{vs.dset_name} is missing "
                        "or unreadable")
    for name, offset, size in ds.external or ():
        raw = Path(name.decode() if isinstance(name, bytes) else name)
        raw = raw if raw.is_absolute() else file_path.parent / raw
        if not raw.is_file() or not os.access(raw, os.R_OK):
            return f"external dataset whose raw file {raw.name} is missing or unreadable"
        if size != 0xFFFFFFFFFFFFFFFF and raw.stat().st_size < offset + size:  # H5F_UNLIMITED
            return f"external dataset whose raw file {raw.name} is shorter than declared"
    return None
