"""Writing predictions as a submission folder (predictions.h5 + submission.toml).

The folder is written to a temporary sibling and renamed into place, so a crashed run never
leaves a half-written submission.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import tomli_w

from challenge.contract.workspace import check_replace


@dataclass
class SubmissionMetadata:
    """``submission.toml``: who made the predictions, how, on what, at what cost."""

    name: str
    release: str
    method: str
    authors: str | list[str] = "blendbench reference baselines"
    link: str = ""
    hardware: str = field(default_factory=lambda: f"{platform.machine()} CPU x{os.cpu_count()}")
    training_time_s: float = 0.0
    inference_time_s: float = 0.0
    parameters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "extra"}
        if self.extra:
            doc["settings"] = self.extra
        return doc


def write_predictions(path: Path, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``predictions.h5`` at ``path``: the attributes and the arrays (``blend_id``,
    ``flux``, ``masks`` as uint8 0/1, ``flux_err``, ``detection``), each gzip-compressed (level
    9, byte-shuffled: binary maps shrink about 2x against level 4, ids about 10x). The one place
    the kit writes prediction files."""
    dtypes = {"blend_id": np.int64, "flux": np.float64, "masks": np.uint8,
              "flux_err": np.float64, "detection": np.int8}
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, value in arrays.items():
            data = np.asarray(value, dtype=dtypes.get(name))
            chunks = (min(64, len(data)), *data.shape[1:]) if name == "masks" else True
            f.create_dataset(name, data=data, chunks=chunks, compression="gzip",
                             compression_opts=9, shuffle=True)


def write_submission(
    out: Path | str,
    meta: SubmissionMetadata,
    blend_id: np.ndarray,
    flux: np.ndarray,
    masks: np.ndarray | None = None,
    flux_err: np.ndarray | None = None,
    detection: np.ndarray | None = None,
) -> Path:
    """Write ``out/predictions.h5`` and ``out/submission.toml`` atomically; returns ``out``.

    A folder that holds another release's submission is refused (:func:`check_replace`).

    Args:
        blend_id: (n,) int64 test blend ids.
        flux: (n, 2) float64 [central, companion] in counts (<= 0 means "not detected").
        masks: optional (n, 2, H, W) segmentation maps; stored thresholded as uint8 0/1.
        flux_err: optional (n, 2) 1-sigma flux errors in counts.
        detection: optional (n,) int8 detection case (0 central only, 1 companion only, 2 both,
            3 more than two), for methods that detect sources.
    """
    out = Path(out)
    check_replace(out, meta.release)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        arrays = {"blend_id": blend_id, "flux": flux, "masks": None if masks is None else
                  np.asarray(masks) >= 0.5, "flux_err": flux_err, "detection": detection}
        write_predictions(tmp / "predictions.h5", {"release": meta.release, "name": meta.name},
                          {k: v for k, v in arrays.items() if v is not None})
        (tmp / "submission.toml").write_text(tomli_w.dumps(meta.to_dict()))
        if out.exists():
            # Replace only the files we own; keep anything else (weights, history) in place.
            for name in ("predictions.h5", "submission.toml"):
                os.replace(tmp / name, out / name)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def rewrite_predictions(out: Path | str, maps: bool = True) -> Path:
    """Rewrite ``out/predictions.h5`` as :func:`write_predictions` writes it, without its
    ``masks`` unless ``maps``, atomically; the arrays and attributes keep their values. Returns
    the file."""
    path = Path(out) / "predictions.h5"
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with h5py.File(path, "r") as src:
            attrs = dict(src.attrs)
            arrays = {name: src[name][()] for name in src if maps or name != "masks"}
        write_predictions(tmp, attrs, arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
