"""Training the CNN baselines: stages, schedules, time budget, checkpoints and resume.

``train_cnn`` trains blend2flux (one stage, flux) or blend2mask2flux (two stages: the U-Net alone
on the truth masks with binary cross-entropy, then both nets together with the flux loss plus
``mask_weight`` x the mask loss: end to end as the paper, or, with ``arch.end_to_end`` off, the
flux loss stopped at the maps so that the U-Net still learns from the masks alone) and writes
into ``out``:

- ``model.keras``: the best model (lowest validation loss of the last stage), for inference;
- ``history.csv``: one row per epoch (stage, losses, MAPE / IoU, learning rate, seconds,
  images/s);
- ``run.json``: the training record (config, seed, data, wall time, hardware, parameters,
  best epoch, status);
- ``checkpoint/``: the state after the last epoch (weights, optimizer variables, epoch, stage,
  schedule and early-stopping state), which ``resume=True`` continues from in a later process.
  The data order and augmentation of an epoch are a function of (seed, epoch) (see
  ``baselines.cnn.data``), so this state is also the random state of the run.

The paper's schedule (``schedule="plateau"``) halves the learning rate after ``lr_patience``
epochs without improvement of the validation loss (as keras.callbacks.ReduceLROnPlateau) and
stops after ``stop_patience`` such epochs (as keras.callbacks.EarlyStopping); both are done here
between epochs so that their state is checkpointed. The compact configs use a linear warm-up and
a cosine decay per step over the planned epochs; with a time budget the plan is set again after
each epoch to the number of epochs that fit, judged from the median duration of this process's
epochs but its first (which also compiles the step). A run always stops after the epoch during
which its time budget ran out.

Augmentation runs inside the compiled step (``baselines.cnn.augment``), on the accelerator when
there is one; the data are held in memory when they fit (``baselines.cnn.data``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import platform
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
from keras import ops

from baselines.cnn.augment import (
    AugmentSpec,
    ReObserve,
    RestoreFlux,
    RestoreMasks,
    psf_transfer,
    set_augmentation_epoch,
)  # fmt: skip
from baselines.cnn.configs import CNNConfig
from baselines.cnn.data import BlendDataset, IsolatedLight, check_split_file, isolated_light
from baselines.cnn.models import LN10, SKY_SIGMA, STAMP_SHAPE, build_model, unet_part
from challenge.contract.errors import BlendbenchError, ReleaseError

MAX_LOG_ERROR = 3.0  # dex: the MAPE loss clips |log10(pred / truth)| here (inf-safe)
Progress = Callable[[dict[str, Any]], None]


class TrainingError(BlendbenchError, ValueError):
    """A training run cannot start or resume (bad data folder, output folder, checkpoint)."""


# --------------------------------------------------------------------------------------------
# losses and metrics (functions of log10 flux; registered so saved models reload)


@keras.saving.register_keras_serializable(package="blendbench")
def flux_ape(y_true, y_pred):
    """Absolute percentage error / 100 from log10 fluxes: mean |10**(pred - true) - 1|.

    Equal to MAPE / 100 (the paper's loss) while |log10(pred / true)| < 3 dex.
    """
    d = ops.clip(y_pred - y_true, -MAX_LOG_ERROR, MAX_LOG_ERROR)
    return ops.mean(ops.abs(ops.exp(LN10 * d) - 1.0), axis=-1)


@keras.saving.register_keras_serializable(package="blendbench")
def flux_log_mae(y_true, y_pred):
    """Mean absolute log10 error (dex); x ln 10 it approximates APE for small errors."""
    return ops.mean(ops.abs(y_pred - y_true), axis=-1)


@keras.saving.register_keras_serializable(package="blendbench")
def mape(y_true, y_pred):
    """MAPE in percent from log10 fluxes (the benchmark's headline metric)."""
    return 100.0 * flux_ape(y_true, y_pred)


@keras.saving.register_keras_serializable(package="blendbench")
def mask_iou(y_true, y_pred):
    """Mean IoU of maps thresholded at 0.5, per galaxy (1 when both maps are empty)."""
    p = ops.cast(y_pred >= 0.5, "float32")
    t = ops.cast(y_true >= 0.5, "float32")
    inter = ops.sum(p * t, axis=(1, 2))
    union = ops.sum(ops.maximum(p, t), axis=(1, 2))
    iou = ops.where(union > 0, inter / ops.maximum(union, 1.0), 1.0)
    return ops.mean(iou, axis=-1)


FLUX_LOSSES = {"mape": flux_ape, "log_mae": flux_log_mae}


# --------------------------------------------------------------------------------------------
# records


def hardware() -> str:
    """CPU model and core count, the GPU if any, and the Keras backend (submission metadata)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpu = accelerator()
    return (f"{cpu} x{cores} cores" + (f", {gpu}" if gpu else "")
            + f", keras {keras.__version__} ({keras.backend.backend()})")  # fmt: skip


def accelerator() -> str:
    """The GPU the Keras backend computes on ("" on the CPU), e.g. "1x NVIDIA H100 80GB HBM3".

    Asks the backend's own module, which Keras has already imported.
    """
    import sys

    backend = keras.backend.backend()
    module = sys.modules.get(backend)
    try:
        if backend == "jax" and module is not None:
            names = [d.device_kind for d in module.devices() if d.platform != "cpu"]
        elif backend == "tensorflow" and module is not None:
            names = [
                module.config.experimental.get_device_details(d).get("device_name", d.name)
                for d in module.config.list_physical_devices("GPU")
            ]
        elif backend == "torch" and module is not None and module.cuda.is_available():
            names = [module.cuda.get_device_name(i) for i in range(module.cuda.device_count())]
        else:
            names = []
    except Exception:  # a broken driver must not stop a run from being recorded
        names = []
    return f"{len(names)}x {names[0]}" if names else ""


@dataclass
class TrainResult:
    """What a training run produced; ``record`` is the content of ``run.json``."""

    out: Path
    model_path: Path
    record: dict[str, Any]
    history: list[dict[str, Any]]


def _atomic_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


HISTORY_FIELDS = (
    "epoch", "stage", "stage_epoch", "loss", "val_loss", "mape", "val_mape", "iou", "val_iou",
    "lr", "seconds", "images_per_s",
)  # fmt: skip


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_history(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a ``history.csv`` (numbers as floats, empty cells as None)."""
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(
                {k: (v if k == "stage" else int(v) if k in ("epoch", "stage_epoch")
                     else float(v) if v not in ("", None) else None)
                 for k, v in row.items()}
            )  # fmt: skip
    return rows


def _normalise_logs(logs: dict[str, float]) -> dict[str, float]:
    """Keras log keys (``flux_mape``, ``val_masks_mask_iou`` ...) -> loss / mape / iou."""
    out = {}
    for key, value in logs.items():
        prefix = "val_" if key.startswith("val_") else ""
        if key in ("loss", "val_loss"):
            out[key] = float(value)
        elif key.endswith("mape"):
            out[prefix + "mape"] = float(value)
        elif key.endswith("iou"):
            out[prefix + "iou"] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# schedule


class _TrainClock(keras.callbacks.Callback):
    """Seconds spent on the training steps of an epoch (validation excluded)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.start


class _StepLR(keras.callbacks.Callback):
    """Sets the learning rate before every step from a function of the global step."""

    def __init__(self, lr_of_step: Callable[[int], float], first_step: int):
        super().__init__()
        self.lr_of_step = lr_of_step
        self.step = first_step

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = self.lr_of_step(self.step)
        self.step += 1


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# checkpoints


def _save_checkpoint(folder: Path, model: keras.Model, optimizer, state: dict[str, Any]):
    _save_weights(model, folder / "last.weights.h5")
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with open(folder / "optimizer.npz.tmp", "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(folder / "optimizer.npz.tmp", folder / "optimizer.npz")
    _atomic_json(folder / "state.json", state)


def _load_optimizer(folder: Path, optimizer, variables) -> None:
    optimizer.build(variables)
    with np.load(folder / "optimizer.npz") as saved:
        values = [saved[f"v{i}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise TrainingError(
            f"{folder}/optimizer.npz: {len(values)} optimizer variables, the model needs "
            f"{len(optimizer.variables)}; the checkpoint belongs to another config"
        )
    for var, value in zip(optimizer.variables, values, strict=True):
        var.assign(value)


def _release_attrs(path: Path) -> tuple[str, float]:
    """Release name and sky sigma (counts / px) recorded in a split file."""
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("release", "")), float(f.attrs.get("sky_sigma", SKY_SIGMA))


# --------------------------------------------------------------------------------------------
# training


def augment_spec(config: CNNConfig) -> AugmentSpec:
    """The training configuration's random re-observation (``baselines.cnn.augment``): the
    fields of ``TrainConfig`` that ``AugmentSpec`` names, ``augment`` for ``dihedral``."""
    tc = config.train
    values = {f.name: getattr(tc, f.name) for f in fields(AugmentSpec) if f.name != "dihedral"}
    return AugmentSpec(dihedral=tc.augment, **{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in values.items()})  # fmt: skip


def _release_psf(data: Path) -> np.ndarray:
    """The release's PSF, (h, w) float32 (``galaxies.h5`` 'psf'), for knots drawn through it."""
    path = data / "galaxies.h5"
    fix = "knot_psf 'release' needs the release's PSF: regenerate it with `blendbench generate`"
    try:
        with h5py.File(path, "r") as f:
            psf = np.asarray(f["psf"][:], dtype="float32")
        psf_transfer(psf, STAMP_SHAPE[:2])  # the checks the knots step relies on
    except (OSError, KeyError, ValueError) as err:
        raise TrainingError(f"{path} 'psf': unreadable, missing or unusable ({err}); {fix}") \
            from None
    return psf


def _isolated_light(data: Path, split: str, path: Path, limit: int | None) -> IsolatedLight:
    """The isolated galaxies of the first ``limit`` blends of a split file, for knots that share
    the light where the galaxies overlap (``knot_light_share`` "isolated") and a quieter sky."""
    with h5py.File(path, "r") as f:
        ids = np.asarray(f["blend_id"][:limit] if limit else f["blend_id"][:])
    try:
        return isolated_light(data, split, ids)
    except ReleaseError as err:
        raise TrainingError(
            f"{err} (knot_light_share 'isolated' and quiet_fraction need it)"
        ) from None


def _stage_setup(model: keras.Model, config: CNNConfig, stage: str, seed: int, psf=None):
    """(training model, loss, loss weights, metrics, dataset targets) of a stage.

    The training model is the network (``model``'s layers, shared) behind :class:`ReObserve`,
    which augments the batch inside the compiled step, and before the layers that map the
    outputs back onto the original blend. It carries the optimizer, so ``model`` itself stays
    uncompiled and its weight files hold weights only. ``psf``: the release's PSF, for knots
    drawn through it.
    """
    flux_loss = FLUX_LOSSES[config.train.loss]
    spec = augment_spec(config)
    image = keras.Input(STAMP_SHAPE, name="blend")
    if spec.needs_footprints:  # the knots need the truth segmentation maps (a training input)
        footprints = keras.Input((*STAMP_SHAPE[:2], spec.footprint_channels), name="footprints")
        inputs = {"blend": image, "footprints": footprints}
        blend, log_s, k = ReObserve(spec, seed, psf, name="reobserve")(image, footprints)
    else:
        inputs = image
        blend, log_s, k = ReObserve(spec, seed, psf, name="reobserve")(image)
    if config.model == "blend2flux":
        net = keras.Model(model.input, model.get_layer("flux").output)
        flux = RestoreFlux(name="flux")(net(blend), log_s)
        return keras.Model(inputs, flux), flux_loss, None, [mape], ("flux",)
    if stage == "masks":
        masks = RestoreMasks(name="masks")(unet_part(model)(blend), k)
        return keras.Model(inputs, masks), "binary_crossentropy", None, [mask_iou], ("masks",)
    net = keras.Model(
        model.input,
        {"masks": model.get_layer("masks").output, "flux": model.get_layer("flux").output},
    )
    out = net(blend)
    outputs = {
        "masks": RestoreMasks(name="masks")(out["masks"], k),
        "flux": RestoreFlux(name="flux")(out["flux"], log_s),
    }
    losses = {"masks": "binary_crossentropy", "flux": flux_loss}
    weights = {"masks": config.train.mask_weight, "flux": 1.0}
    metrics = {"masks": [mask_iou], "flux": [mape]}
    return keras.Model(inputs, outputs), losses, weights, metrics, ("masks", "flux")


def plan_epochs(
    max_epochs: int, done: int, left_s: float, epoch_seconds: list[float],
    planned: int | None = None,
) -> int:  # fmt: skip
    """Epochs a stage should end at, given ``left_s`` seconds of budget after ``done`` epochs.

    The duration of an epoch is the median of this process's epochs but the first, which also
    compiled the training step (the first alone when it is all there is), so the plan can grow
    again once steady epochs show it was pessimistic, but not once the previous plan
    (``planned``) has run to its end: its cosine has decayed to zero, and a longer plan would
    raise the learning rate again for an epoch of its tail. Never below ``done``, never above
    ``max_epochs``.
    """
    if planned is not None and done >= planned:
        return done
    steady = float(np.median(epoch_seconds[1:] or epoch_seconds))
    fit_more = int(max(0.0, left_s) // max(steady, 1e-3))
    return max(done, min(max_epochs, done + fit_more))


def _stage_plan(config: CNNConfig, epochs: int, budget_s: float | None) -> list[dict[str, Any]]:
    """Epochs and deadline (seconds of training elapsed since the start) of each stage."""
    if config.model == "blend2flux":
        return [{"stage": "flux", "epochs": epochs, "budget_s": budget_s}]
    frac = config.train.mask_stage_fraction
    first = max(1, round(epochs * frac))
    return [
        {"stage": "masks", "epochs": first, "budget_s": budget_s * frac if budget_s else None},
        {"stage": "flux", "epochs": max(1, epochs - first), "budget_s": budget_s},
    ]


def train_cnn(
    config: CNNConfig,
    data: Path | str,
    out: Path | str,
    seed: int = 0,
    epochs: int | None = None,
    time_budget_min: float | None = None,
    resume: bool = False,
    limit: int | None = None,
    verbose: int = 0,
    progress: Progress | None = None,
    batch_size: int | None = None,
    in_memory: bool | None = None,
    init_weights: Path | str | None = None,
) -> TrainResult:
    """Train ``config`` on the release folder ``data``; write model, history and record to ``out``.

    Args:
        config: a named configuration (``configs.get_config``).
        data: release folder holding ``train.h5`` and ``val.h5``.
        out: output folder (created; must be empty unless ``resume``).
        seed: seeds weights, data order and augmentation.
        epochs: maximum epochs (default: the config's).
        time_budget_min: stop after the epoch during which this many minutes of training
            (all stages, all resumed runs) have passed; the cosine schedule is planned to end
            within it.
        resume: continue the run checkpointed in ``out``.
        limit: use only the first ``limit`` train and val blends (quick runs).
        verbose: Keras progress bar (0 none, 1 bar, 2 one line per epoch).
        progress: called with each epoch's history row.
        batch_size: blends per step instead of the config's; the learning rate follows
            (``TrainConfig.scaled_learning_rate``). A resumed run keeps its batch size.
        in_memory: hold the train and val splits in memory (None: when they fit).
        init_weights: a ``model.keras`` of the same model and architecture to start from
            instead of random weights (fine-tuning; its path and SHA-256 go into the run
            record). A resumed run continues from its checkpoint and takes none.
    """
    data, out = Path(data), Path(out)
    train_path, val_path = data / "train.h5", data / "val.h5"
    if not data.is_dir():
        raise TrainingError(f"{data}: no such release folder; pass --data a generated release")
    for path in (train_path, val_path):
        if not path.is_file():
            raise TrainingError(
                f"{path}: missing; training needs a release with train.h5 and val.h5 "
                "(`blendbench generate --release v1 --out DIR`)"
            )
    asked = augment_spec(config)
    knots = asked.needs_footprints  # the knots read the truth maps
    needs = ("flux",) if config.model == "blend2flux" and not knots else ("masks", "flux")
    check_split_file(train_path, needs)
    check_split_file(val_path, needs)
    release, sky_sigma = _release_attrs(train_path)
    ckpt = out / "checkpoint"
    if resume and init_weights is not None:
        raise TrainingError(
            f"{ckpt}: a resumed run continues from its checkpoint; drop --init-weights"
        )
    if resume:
        if not (ckpt / "state.json").is_file():
            raise TrainingError(f"{ckpt}/state.json: no checkpoint to resume; drop --resume")
        state = json.loads((ckpt / "state.json").read_text())
        saved = CNNConfig.from_dict(state["config"])
        if (saved.model, saved.name) != (config.model, config.name):
            raise TrainingError(
                f"{ckpt}: checkpoint of {saved.model} --config {saved.name}, asked to resume "
                f"{config.model} --config {config.name}; use the same model and config"
            )
        config, seed = saved, int(state["seed"])
        if epochs is not None:
            config = config.with_epochs(epochs)
        if epochs is not None or time_budget_min is not None:
            # a new limit: plan the rest of the last stage run afresh (reopened if finished)
            state["planned_epochs"], state["stopped"] = None, ""
            state["stage_index"] = min(state["stage_index"], len(_stage_plan(config, 1, None)) - 1)
        history = read_history(out / "history.csv") if (out / "history.csv").is_file() else []
        history = history[: state["global_epoch"]]
    else:
        if out.exists() and any(out.iterdir()):
            raise TrainingError(
                f"{out}: output folder exists and is not empty; choose a new --out, or --resume"
            )
        if epochs is not None:
            config = config.with_epochs(epochs)
        if batch_size is not None:
            config = config.with_batch_size(batch_size)
        state = {
            "stage_index": 0,
            "stage_epoch": 0,
            "global_epoch": 0,
            "elapsed_s": 0.0,
            "best": None,
            "best_epoch": None,
            "wait": 0,
            "plateau_best": None,
            "plateau_wait": 0,
            "lr": config.train.scaled_learning_rate(),
            "planned_epochs": None,
            "stopped": "",
        }
        history = []
    if time_budget_min is not None:
        state["time_budget_s"] = 60.0 * float(time_budget_min)
    budget_s = state.get("time_budget_s")
    state.update(config=config.to_dict(), seed=seed, data=str(data), release=release)
    spec = augment_spec(config)  # of the run's config (a resumed run: the checkpoint's)
    footprints = spec.needs_footprints
    noiseless = spec.needs_noiseless  # the noiseless blend as a fifth channel
    psf = _release_psf(data) if spec.knot_psf == "release" else None
    isolated = {}
    if spec.needs_isolated:
        isolated = {split: _isolated_light(data, split, path, limit)
                    for split, path in (("train", train_path), ("val", val_path))}  # fmt: skip

    keras.utils.set_random_seed(seed)
    model = build_model(config, sky_sigma)
    export = build_model(config, sky_sigma)
    n_params = model.count_params()
    if init_weights is not None:
        state["init_weights"] = _load_initial_weights(model, config, Path(init_weights))
    out.mkdir(parents=True, exist_ok=True)  # only once the run can start
    record = {
        "model": config.model,
        "config": config.name,
        "seed": seed,
        "release": release,
        "parameters": n_params,
        "hardware": hardware(),
        "keras_backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "settings": config.to_dict(),
        "time_budget_s": budget_s,
        "limit": limit,
        "init_weights": state.get("init_weights"),
    }
    plan = _stage_plan(config, config.train.epochs, budget_s)
    tc = config.train
    peak_lr = tc.scaled_learning_rate()
    record.update(batch_size=tc.batch_size, peak_learning_rate=peak_lr,
                  augmentation=spec.__dict__)  # fmt: skip
    run_start = time.perf_counter()
    elapsed0 = state["elapsed_s"]

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - run_start

    for stage_index in range(state["stage_index"], len(plan)):
        stage = plan[stage_index]
        if state["stage_epoch"] > 0:  # resume inside this stage
            model.load_weights(ckpt / "last.weights.h5")
            keras.utils.set_random_seed(seed + state["global_epoch"])
        elif stage_index > 0:  # end-to-end training starts from the best pre-trained U-Net
            model.load_weights(ckpt / "pretrained.weights.h5")
        train_model, loss, loss_weights, metrics, targets = _stage_setup(
            model, config, stage["stage"], seed, psf
        )
        optimizer = keras.optimizers.Adam(learning_rate=state["lr"])
        train_model.compile(
            optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics
        )
        if state["stage_epoch"] > 0:
            _load_optimizer(ckpt, optimizer, train_model.trainable_variables)
        train_ds = BlendDataset(
            train_path, tc.batch_size, targets, shuffle=True, seed=seed, limit=limit,
            in_memory=in_memory, footprints=footprints, isolated=isolated.get("train"),
            noiseless=noiseless,
        )  # fmt: skip
        val_ds = BlendDataset(val_path, max(64, tc.batch_size), targets, limit=limit,
                              in_memory=in_memory, footprints=footprints,
                              isolated=isolated.get("val"), noiseless=noiseless)  # fmt: skip
        record["data_in_memory"] = train_ds.in_memory
        steps = len(train_ds)
        planned = state["planned_epochs"] or stage["epochs"]
        epoch_seconds: list[float] = []  # this process's epochs of this stage
        try:
            while state["stage_epoch"] < planned:
                e = state["stage_epoch"]
                callbacks = []
                if tc.schedule == "cosine":
                    warmup = tc.warmup_epochs * steps

                    def lr_of_step(step, planned=planned, warmup=warmup, steps=steps):
                        return cosine_lr(step, planned * steps, warmup, peak_lr)

                    callbacks.append(_StepLR(lr_of_step, e * steps))
                else:
                    optimizer.learning_rate = state["lr"]
                train_ds.set_epoch(state["global_epoch"])
                set_augmentation_epoch(train_model, seed, state["global_epoch"])
                clock = _TrainClock()
                t0 = time.perf_counter()
                fit = train_model.fit(
                    train_ds, epochs=1, validation_data=val_ds, verbose=verbose, shuffle=False,
                    callbacks=[*callbacks, clock],
                )  # fmt: skip
                seconds = time.perf_counter() - t0
                epoch_seconds.append(seconds)
                logs = _normalise_logs({k: v[-1] for k, v in fit.history.items()})
                row = {
                    "epoch": state["global_epoch"] + 1,
                    "stage": stage["stage"],
                    "stage_epoch": e + 1,
                    **logs,
                    "lr": float(optimizer.learning_rate.numpy()),
                    "seconds": round(seconds, 2),
                    "images_per_s": round(train_ds.n / max(clock.seconds, 1e-9), 1),
                }
                history.append(row)
                state["stage_epoch"] += 1
                state["global_epoch"] += 1
                val_loss = logs.get("val_loss", math.inf)
                if not math.isfinite(val_loss):
                    raise TrainingError(
                        f"{out}: validation loss became {val_loss} at epoch {row['epoch']}; "
                        "lower the learning rate or check the release"
                    )
                if state["best"] is None or val_loss < state["best"]:
                    state["best"], state["best_epoch"], state["wait"] = val_loss, row["epoch"], 0
                    _save_weights(model, ckpt / "best.weights.h5")
                    if stage_index == len(plan) - 1:
                        export.set_weights(model.get_weights())
                        _save_weights(export, out / "model.keras")
                else:
                    state["wait"] += 1
                if tc.schedule == "plateau":  # as keras.callbacks.ReduceLROnPlateau
                    if state["plateau_best"] is None or val_loss < state["plateau_best"] - 1e-4:
                        state["plateau_best"], state["plateau_wait"] = val_loss, 0
                    else:
                        state["plateau_wait"] += 1
                        if state["plateau_wait"] >= tc.lr_patience:
                            state["lr"] *= tc.lr_factor
                            state["plateau_wait"] = 0
                if stage["budget_s"] is not None:  # plan the epochs that still fit
                    left = stage["budget_s"] - elapsed()
                    planned = plan_epochs(
                        stage["epochs"], state["stage_epoch"], left, epoch_seconds, planned
                    )
                    state["planned_epochs"] = planned
                    if left <= 0:
                        state["stopped"] = f"time budget ({stage['stage']} stage)"
                        planned = state["stage_epoch"]
                if tc.stop_patience and state["wait"] >= tc.stop_patience:
                    state["stopped"] = f"early stopping ({stage['stage']} stage)"
                    planned = state["stage_epoch"]
                if state["stage_epoch"] >= planned:
                    state["planned_epochs"] = planned
                state["elapsed_s"] = elapsed()
                _save_checkpoint(ckpt, model, optimizer, state)
                _write_history(out / "history.csv", history)
                _atomic_json(
                    out / "run.json", {**record, **_summary(state, history), "status": "running"}
                )
                if progress:
                    progress(row)
        finally:
            train_ds.close()
            val_ds.close()
        if stage_index < len(plan) - 1:  # the next stage starts afresh from the best weights
            shutil.copy2(ckpt / "best.weights.h5", ckpt / "pretrained.weights.h5")
            state.update(
                stage_index=stage_index + 1, stage_epoch=0, best=None, best_epoch=None, wait=0,
                plateau_best=None, plateau_wait=0, lr=peak_lr, planned_epochs=None,
            )  # fmt: skip
            _atomic_json(ckpt / "state.json", state)
    state["elapsed_s"] = elapsed()
    state["stage_index"] = len(plan)
    _atomic_json(ckpt / "state.json", state)
    if not (out / "model.keras").exists():
        raise TrainingError(f"{out}: no epoch of the flux stage ran; raise --epochs")
    final = {**record, **_summary(state, history), "status": "done"}
    _atomic_json(out / "run.json", final)
    return TrainResult(out, out / "model.keras", final, history)


def _load_initial_weights(model: keras.Model, config: CNNConfig, path: Path) -> dict:
    """Set ``model``'s weights from the saved model at ``path``; its path and SHA-256, and the
    training time behind it (``wall_time_s``, from the ``run.json`` beside it, if any)."""
    from baselines.cnn.predict import load_trained

    source = load_trained(path, config.model)
    shapes = [tuple(w.shape) for w in model.weights]
    if [tuple(w.shape) for w in source.weights] != shapes:
        raise TrainingError(
            f"{path}: weights of another architecture than {config.model} --config "
            f"{config.name}; pass --init-weights a model.keras trained with the same sizes"
        )
    model.set_weights(source.get_weights())
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    info: dict[str, Any] = {"path": str(path), "sha256": digest.hexdigest()}
    try:  # the starting model's own training time, which the fine-tuned model also cost
        before = json.loads((path.parent / "run.json").read_text())
        if "wall_time_s" in before:
            info["wall_time_s"] = training_time(before)
    except (OSError, ValueError, TypeError):
        pass
    return info


def training_time(record: dict[str, Any]) -> float:
    """Seconds of training behind a model, from its run record: its run, plus the model it was
    fine-tuned from (``init_weights``)."""
    return round(float(record.get("wall_time_s", 0.0)) + float(
        (record.get("init_weights") or {}).get("wall_time_s", 0.0)), 1)


def _save_weights(model: keras.Model, path: Path) -> None:
    """Write weights atomically (Keras on TensorFlow warns about numpy's copy keyword here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tmp-" + path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if path.name.endswith(".keras"):
            model.save(tmp)
            deflate_archive(tmp)
        else:
            model.save_weights(tmp)
    os.replace(tmp, path)


def deflate_archive(path: Path) -> None:
    """Recompress a ``.keras`` archive (a zip that Keras writes uncompressed) with deflate, in
    place: the same members and bytes inside, about 11% smaller; Keras loads it as before."""
    tmp = path.with_name("deflated-" + path.name)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED,
                                                       compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    os.replace(tmp, path)


def _summary(state: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    last = [r for r in history if r["stage"] == "flux"]
    best = next((r for r in last if r["epoch"] == state.get("best_epoch")), None)
    return {
        "epochs": state["global_epoch"],
        "wall_time_s": round(state["elapsed_s"], 1),
        "best_epoch": state.get("best_epoch"),
        "best_val_loss": state.get("best"),
        "best_val_mape": best.get("val_mape") if best else None,
        "best_val_iou": best.get("val_iou") if best else None,
        "stopped": state.get("stopped", ""),
    }


def copy_run_files(run_dir: Path, dest: Path, names: tuple[str, ...]) -> list[str]:
    """Copy files of a training run folder into ``dest``; returns the names copied."""
    copied = []
    for name in names:
        src = run_dir / name
        if src.is_file():
            shutil.copy2(src, dest / name)
            copied.append(name)
    return copied
