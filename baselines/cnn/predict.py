"""Predictions of a trained CNN on the test blends, and the baseline's submission folder.

``predict_images`` runs a model on raw blends (counts) in batches, optionally averaging over the
8 dihedral transforms about pixel (64, 64) (test-time augmentation: log10 fluxes averaged, masks
mapped back and averaged). The 8 transforms, the forward pass and the average are one compiled
call (:func:`tta_model`), so on an accelerator the blends cross to the device once.
``write_cnn_submission`` predicts a release's ``test_blends.h5`` and writes ``submissions/NAME``
through the method protocol (:class:`CNNMethod` fed by
``challenge.loaders.protocol.run_method``), then copies the weights (when ≤ 20 MB) and the training
history next to the predictions.
"""

from __future__ import annotations

import json
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

import baselines.cnn.models  # noqa: F401  (registers the custom layers before loading)
from baselines.cnn.augment import DihedralMean, DihedralStack
from baselines.cnn.data import check_split_file
from baselines.cnn.train import training_time  # (importing it registers the losses)
from challenge.contract.errors import BlendbenchError
from challenge.contract.submission_folder import SubmissionMetadata, write_submission
from challenge.loaders.protocol import run_method
from challenge.pipeline.workers import Parallel

MAX_WEIGHTS_BYTES = 20 * 1024**2
PAPER_LINK = (
    "Boucaud et al. 2019, MNRAS 491, 2481; architecture after github.com/aboucaud/coindeblend"
)
METHODS = {
    "blend2flux": "conv net: raw blend -> log10 fluxes of [central, companion]",
    "blend2mask2flux": "U-Net -> maps of [central, companion] -> flux net on [blend, maps]",
}


class WeightsError(BlendbenchError, ValueError):
    """A weights file is missing, unreadable or of another model."""


def load_trained(weights: Path | str, model_name: str | None = None) -> keras.Model:
    """Load a trained ``model.keras`` (written by ``train_cnn``) for inference."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"{path}: no such weights file; pass --weights the model.keras written by "
            "`blendbench train`"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # keras raises many types for a damaged or foreign file
        raise WeightsError(f"{path}: not a saved blendbench model ({err})") from None
    if model_name is not None and model.name != model_name:
        raise WeightsError(
            f"{path}: holds a {model.name} model, not {model_name}; "
            f"use `blendbench baseline {model.name}`"
        )
    return model


_TTA_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tta_model(model: keras.Model) -> keras.Model:
    """``model`` averaged over the 8 dihedral transforms about (64, 64), in one graph (cached).

    Same inputs and outputs as ``model``: log10 fluxes averaged; maps mapped back, then averaged.
    """
    if model not in _TTA_MODELS:
        image = keras.Input(model.input.shape[1:], name="blend")
        out = model(DihedralStack(name="dihedral_stack")(image))
        if isinstance(out, dict):
            out = {
                "flux": DihedralMean(name="flux")(out["flux"]),
                "masks": DihedralMean(maps=True, name="masks")(out["masks"]),
            }
        else:
            out = DihedralMean(name="flux")(out)
        _TTA_MODELS[model] = keras.Model(image, out, name=f"{model.name}_tta")
    return _TTA_MODELS[model]


def _run(model: keras.Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, 128, 128) counts -> log10 flux (n, 2), masks (n, 2, 128, 128) or None."""
    out = model.predict_on_batch(images[..., None].astype(np.float32))
    if isinstance(out, dict):
        return np.asarray(out["flux"], np.float64), np.moveaxis(np.asarray(out["masks"]), -1, 1)
    return np.asarray(out, np.float64), None


def predict_images(
    model: keras.Model, images: np.ndarray, batch_size: int = 64, tta: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fluxes (n, 2) in counts and masks (n, 2, 128, 128) in [0, 1] (or None) of raw blends.

    Args:
        model: a trained blend2flux or blend2mask2flux model.
        images: (n, 128, 128) float32 blends in counts, the central at pixel (64, 64).
        batch_size: blends per forward pass.
        tta: average over the 8 dihedral transforms about (64, 64) (8x the cost).
    """
    n = len(images)
    log_flux = np.zeros((n, 2))
    masks = None
    net = tta_model(model) if tta else model
    for start in range(0, n, batch_size):
        batch = np.asarray(images[start : start + batch_size])
        lf, m = _run(net, batch)
        log_flux[start : start + len(batch)] = lf
        if m is not None:
            if masks is None:
                masks = np.zeros((n, 2, *images.shape[1:]), np.float32)
            masks[start : start + len(batch)] = m
    return 10.0**log_flux, masks


class CNNMethod:
    """A trained CNN as a protocol method; the model is loaded once per process."""

    def __init__(
        self,
        weights: Path | str,
        model_name: str | None = None,
        batch_size: int = 64,
        tta: bool = True,
    ) -> None:
        self.weights, self.model_name = Path(weights), model_name
        self.batch_size, self.tta = batch_size, tta
        self._model: keras.Model | None = None

    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = load_trained(self.weights, self.model_name)
        return self._model

    def __getstate__(self) -> dict[str, Any]:  # send the path, not the model, to workers
        return {**self.__dict__, "_model": None}

    def __call__(self, batch, context) -> dict[str, np.ndarray]:
        flux, masks = predict_images(self.model, batch.images, self.batch_size, self.tta)
        out = {"flux": flux}
        if masks is not None:
            out["masks"] = (masks >= 0.5).astype(np.uint8)
        return out


class EnsembleMethod:
    """Trained CNNs averaged (a deep ensemble): the mean of their log10 fluxes, i.e. the
    geometric mean of their fluxes, and the mean of the maps of the members that make maps.

    Each member runs as :class:`CNNMethod` would (same batch size and test-time augmentation);
    the members may mix blend2flux and blend2mask2flux.
    """

    def __init__(self, weights: list[Path | str], batch_size: int = 64, tta: bool = True) -> None:
        if len(weights) < 2:
            raise WeightsError(
                f"an ensemble needs at least two --weights, got {len(weights)}; "
                "use `blendbench baseline blend2flux|blend2mask2flux` for one model"
            )
        self.members = [CNNMethod(w, None, batch_size, tta) for w in weights]

    def __call__(self, batch, context) -> dict[str, np.ndarray]:
        log_flux, maps = [], []
        for member in self.members:
            flux, masks = predict_images(member.model, batch.images, member.batch_size,
                                         member.tta)  # fmt: skip
            log_flux.append(np.log10(flux))
            if masks is not None:
                maps.append(masks)
        out = {"flux": 10.0 ** np.mean(log_flux, axis=0)}
        if maps:
            out["masks"] = (np.mean(maps, axis=0) >= 0.5).astype(np.uint8)
        return out


def _training_record(weights: Path) -> dict[str, Any]:
    path = weights.parent / "run.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {}


def write_cnn_submission(
    model_name: str,
    weights: Path | str,
    data: Path | str,
    out: Path | str,
    batch_size: int = 64,
    tta: bool = True,
    progress: Callable[[int], None] | None = None,
    workers: Parallel = 1,
    copy_files: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Predict the test blends of the release ``data`` and write the submission folder ``out``.

    The metadata take the parameter count from the model, and the training time, hardware and
    settings from the ``run.json`` beside the weights. ``progress`` gets the number of blends
    done after each chunk. ``workers``: where the chunks run
    (:data:`challenge.pipeline.workers.Parallel`; each worker loads the weights from their path
    once, so a remote cluster must share this file system). ``copy_files``: copy the weights
    (≤ 20 MB) and the training record beside the predictions (off for runs of weights that
    another submission already holds). Returns ``out`` and a summary dict.
    """
    weights, data, out = Path(weights), Path(data), Path(out)
    check_split_file(data / "test_blends.h5", ("blend_id",))
    method = CNNMethod(weights, model_name, batch_size, tta)
    model = method.model
    record = _training_record(weights)
    run = run_method(method, data, batch_size=512, workers=workers, progress=progress)
    blend_id, flux, masks = run.blend_id, run.outputs["flux"], run.outputs.get("masks")
    release, n, inference_s = run.context.release, len(run.blend_id), run.seconds
    settings = {
        **_model_settings(record, weights),
        "test_time_augmentation": "8 dihedral transforms" if tta else "none",
    }
    trained_on = {"hardware": str(record["hardware"])} if record.get("hardware") else {}
    meta = SubmissionMetadata(
        name=out.name,
        release=release,
        method=f"{model_name} ({METHODS[model_name]}), config {settings['config']}",
        link=PAPER_LINK,
        training_time_s=training_time(record),
        inference_time_s=round(inference_s, 2),
        parameters=int(model.count_params()),
        extra=settings,
        **trained_on,
    )
    write_submission(out, meta, blend_id, flux, masks=masks)
    copied = []
    if copy_files and weights.stat().st_size <= MAX_WEIGHTS_BYTES:
        shutil.copy2(weights, out / "model.keras")
        copied.append("model.keras")
    for name in ("history.csv", "run.json") if copy_files else ():
        if (weights.parent / name).is_file():
            shutil.copy2(weights.parent / name, out / name)
            copied.append(name)
    summary = {"n": n, "inference_s": inference_s, "copied": copied, "release": release}
    return out, summary


def write_ensemble_submission(
    weights: list[Path | str],
    data: Path | str,
    out: Path | str,
    batch_size: int = 64,
    tta: bool = True,
    progress: Callable[[int], None] | None = None,
    workers: Parallel = 1,
) -> tuple[Path, dict[str, Any]]:
    """Predict the test blends of ``data`` with an :class:`EnsembleMethod` of ``weights`` and
    write the submission folder ``out`` (predictions and ``submission.toml``, which names each
    member's weights; the weights stay where they are). Training time and parameters are the
    members' sums. Returns ``out`` and a summary dict."""
    paths, data, out = [Path(w) for w in weights], Path(data), Path(out)
    check_split_file(data / "test_blends.h5", ("blend_id",))
    method = EnsembleMethod(paths, batch_size, tta)
    models = [member.model for member in method.members]
    records = [_training_record(w) for w in paths]
    run = run_method(method, data, batch_size=512, workers=workers, progress=progress)
    members = [_model_settings(r, w) for r, w in zip(records, paths, strict=True)]
    names = [f"{m.name} {s['config']}".strip() for m, s in zip(models, members, strict=True)]
    settings = {
        "members": names,
        "weights": [s["weights"] for s in members],
        "trained_on": sorted({s["trained_on"] for s in members}),
        "keras_backend": keras.backend.backend(),
        "test_time_augmentation": "8 dihedral transforms" if tta else "none",
    }
    hardware = sorted({str(r["hardware"]) for r in records if r.get("hardware")})
    meta = SubmissionMetadata(
        name=out.name,
        release=run.context.release,
        method=f"ensemble of {len(models)} CNNs (mean log10 flux; maps: mean of the members' "
        f"maps): {' + '.join(names)}",
        link=PAPER_LINK,
        training_time_s=round(sum(training_time(r) for r in records), 1),
        inference_time_s=round(run.seconds, 2),
        parameters=sum(int(m.count_params()) for m in models),
        extra=settings,
        **({"hardware": "; ".join(hardware)} if hardware else {}),
    )
    write_submission(out, meta, run.blend_id, run.outputs["flux"],
                     masks=run.outputs.get("masks"))  # fmt: skip
    summary = {"n": len(run.blend_id), "inference_s": run.seconds, "copied": [],
               "release": run.context.release}  # fmt: skip
    return out, summary


def _model_settings(record: dict[str, Any], weights: Path) -> dict[str, Any]:
    """What a submission says about one trained model (from its ``run.json``)."""
    return {
        "config": str(record.get("config", "")),
        "seed": int(record.get("seed", -1)),
        "epochs": int(record.get("epochs", 0)),
        "best_epoch": int(record.get("best_epoch") or 0),
        "best_val_mape": float(record.get("best_val_mape") or float("nan")),
        "trained_on": str(record.get("release", "")),
        **({"fine_tuned_from": str(record["init_weights"]["path"])}
           if record.get("init_weights") else {}),
        "keras_backend": keras.backend.backend(),
        # a path relative to the repository (a committed submission's weights) names them;
        # elsewhere only the file name means anything to a reader
        "weights": weights.as_posix() if not weights.is_absolute() else weights.name,
    }
