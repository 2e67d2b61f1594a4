"""Curricula: a training recipe of several stages, each a configuration run for a fixed number of
epochs from the weights of the stage before it.

A curriculum is data, a TOML file::

    name = "robust"
    model = "blend2flux"

    [[stages]]
    epochs = 29          # cosine schedule over exactly these epochs
    seed = 20190712      # weights (first stage), data order, augmentation
    name = "compact-robust"
    [stages.arch]        # ModelConfig fields (defaults where left out)
    noise_from_image = true
    [stages.train]       # TrainConfig fields
    learning_rate = 0.002

    [[stages]]
    ...

:func:`train_curriculum` runs the stages in order into ``out/stages/<k>-<name>/`` and copies the
last stage's model and history to ``out``; its ``run.json`` lists every stage. Epoch counts are
fixed, so the result does not depend on the machine's speed; a rerun skips the stages already
done and resumes the one that was interrupted.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.cnn.configs import CNNConfig, ConfigError, config_from_doc
from challenge.contract._compat import tomllib

RECIPES = Path(__file__).resolve().parent / "recipes"
"""The registered curricula: ``<model>-<name>.toml``."""


@dataclass(frozen=True)
class Stage:
    """One stage: ``config`` trained for ``epochs`` epochs with ``seed``."""

    config: CNNConfig
    epochs: int
    seed: int


@dataclass(frozen=True)
class Curriculum:
    """A named recipe of stages for one model."""

    name: str
    model: str
    stages: tuple[Stage, ...]

    @property
    def epochs(self) -> int:
        return sum(s.epochs for s in self.stages)


def registered(model: str) -> dict[str, Path]:
    """The curricula shipped for ``model``: name -> file."""
    prefix = f"{model}-"
    return {p.stem.removeprefix(prefix): p for p in sorted(RECIPES.glob(f"{prefix}*.toml"))}


def read_curriculum(path: str | Path, model: str | None = None) -> Curriculum:
    """A curriculum from its TOML file (see the module docstring).

    Raises:
        ConfigError: one line naming the file and the field.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: not a readable TOML curriculum "
                          f"({str(err).splitlines()[0]})") from None
    name, kind = doc.get("name"), doc.get("model")
    if not isinstance(name, str) or not isinstance(kind, str):
        raise ConfigError(f"{path}: a curriculum needs name = \"...\" and model = \"...\"")
    if model is not None and kind != model:
        raise ConfigError(f"{path}: a {kind} curriculum, not {model}")
    stages = doc.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{path}: no [[stages]]; give at least one")
    out = []
    for k, stage in enumerate(stages, 1):
        where = f"{path}: stage {k}"
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}: not a table")
        epochs, seed = stage.get("epochs"), stage.get("seed")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 10_000:
            raise ConfigError(f"{where}: epochs must be a whole number from 1 to 10000")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigError(f"{where}: seed must be a whole number from 0 to 2**32 - 1")
        config = config_from_doc({**stage, "model": kind}, where)
        out.append(Stage(config, epochs, seed))
    return Curriculum(name, kind, tuple(out))


def find_curriculum(model: str, name: str) -> Curriculum | None:
    """The curriculum ``name`` of ``model`` (a registered name, or a TOML file holding
    ``[[stages]]``), or None when ``name`` is a single configuration."""
    shipped = registered(model)
    if name in shipped:
        return read_curriculum(shipped[name], model)
    if name.endswith(".toml") and Path(name).is_file():
        try:
            doc = tomllib.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
            return None  # read_config gives the error
        if "stages" in doc:
            return read_curriculum(name, model)
    return None


def _done(folder: Path) -> bool:
    try:
        return json.loads((folder / "run.json").read_text())["status"] == "done"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def train_curriculum(curriculum: Curriculum, data: Path | str, out: Path | str, *,
                     resume: bool = False, limit: int | None = None,
                     batch_size: int | None = None, in_memory: bool | None = None,
                     verbose: int = 0, progress: Callable[[dict], None] | None = None,
                     announce: Callable[[int, Stage], None] = lambda k, s: None) -> Any:
    """Train every stage in order; returns the last stage's ``TrainResult``, with a ``record``
    (``out/run.json``) that lists the stages.

    Args:
        curriculum: the recipe.
        data: release folder with ``train.h5`` and ``val.h5``.
        out: run folder (new, or a run of this curriculum to resume with ``resume``).
        resume: skip the stages already done and continue the interrupted one.
        limit, batch_size, in_memory, verbose, progress: as for ``train_cnn``.
        announce: called with (stage number from 1, stage) before a stage trains.
    """
    from baselines.cnn.train import (
        TrainingError,
        TrainResult,
        read_history,
        train_cnn,
        training_time,
    )

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise TrainingError(f"{out}: not empty; give a new --out, or --resume this curriculum")
    stages_dir = out / "stages"
    previous: Path | None = None
    records = []
    for k, stage in enumerate(curriculum.stages, 1):
        folder = stages_dir / f"{k}-{stage.config.name}"
        if _done(folder):
            records.append(json.loads((folder / "run.json").read_text()))
            previous = folder / "model.keras"
            continue
        announce(k, stage)
        resuming = folder.is_dir() and any(folder.iterdir())
        result = train_cnn(
            stage.config, data, folder, seed=stage.seed, epochs=stage.epochs, resume=resuming,
            limit=limit, verbose=verbose, progress=progress, batch_size=batch_size,
            in_memory=in_memory, init_weights=None if resuming else previous,
        )  # fmt: skip
        records.append(result.record)
        previous = result.model_path
    for name in ("model.keras", "history.csv"):
        shutil.copy2(previous.parent / name, out / name)
    record = {
        "model": curriculum.model, "config": curriculum.name, "curriculum": True,
        "epochs": sum(r["epochs"] for r in records),
        "wall_time_s": round(sum(training_time(r) for r in records), 1),
        "parameters": records[-1]["parameters"], "hardware": records[-1]["hardware"],
        "keras_backend": records[-1].get("keras_backend"),
        "best_val_mape": records[-1].get("best_val_mape"),
        "best_epoch": records[-1].get("best_epoch"), "stopped": records[-1].get("stopped", ""),
        "stages": [{"name": s.config.name, "epochs": s.epochs, "seed": s.seed,
                    "epochs_run": r["epochs"], "wall_time_s": training_time(r),
                    "best_val_mape": r.get("best_val_mape")}
                   for s, r in zip(curriculum.stages, records, strict=True)],
        "status": "done",
    }
    (out / "run.json").write_text(json.dumps(record, indent=2))
    return TrainResult(out, out / "model.keras", record, read_history(out / "history.csv"))
