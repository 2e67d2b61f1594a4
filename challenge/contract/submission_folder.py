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
        with h5py.File(tmp / "predictions.h5", "w") as f:
            f.attrs["release"] = meta.release
            f.attrs["name"] = meta.name
            f.create_dataset("blend_id", data=np.asarray(blend_id, dtype=np.int64))
            f.create_dataset("flux", data=np.asarray(flux, dtype=np.float64))
            if masks is not None:
                m = (np.asarray(masks) >= 0.5).astype(np.uint8)
                f.create_dataset(
                    "masks",
                    data=m,
                    chunks=(min(64, len(m)), *m.shape[1:]),
                    compression="gzip",
                    compression_opts=4,
                    shuffle=True,
                )
            if flux_err is not None:
                f.create_dataset("flux_err", data=np.asarray(flux_err, dtype=np.float64))
            if detection is not None:
                f.create_dataset("detection", data=np.asarray(detection, dtype=np.int8))
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


def drop_maps(out: Path | str) -> Path:
    """Rewrite ``out/predictions.h5`` without its ``masks`` (segmentation maps), atomically; the
    other datasets and the attributes stay as they are. Returns the file."""
    path = Path(out) / "predictions.h5"
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for name in src:
                if name != "masks":
                    dst.create_dataset(name, data=src[name][()])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
