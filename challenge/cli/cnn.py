"""``blendbench train`` and ``blendbench baseline blend2flux | blend2mask2flux`` (Keras CNNs).

Keras and TensorFlow come with the optional ``cnn`` extra; without them these commands exit with
code 2 and say how to install it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from challenge.cli.base import app, console, err_console, user_errors
from challenge.cli.baselines import (
    MAPS,
    baseline_app,
    keep_maps,
    scheduler_option,
    with_progress,
    workers_option,
)
from challenge.contract.errors import import_extra
from challenge.contract.release import DEFAULT_SEED
from challenge.contract.workspace import submission_out

MODEL_HELP = "blend2flux or blend2mask2flux"


def _import_cnn(module: str, needed_by: str):
    """``import_extra(module, "cnn", ...)`` without TensorFlow's start-up log lines.

    TF_CPP_MIN_LOG_LEVEL=2 silences its info and warning logs (cpu_feature_guard); the absl and
    oneDNN lines are written by native code before that is read, so the file descriptor 2 is sent
    to /dev/null while TensorFlow loads (Python errors still propagate as exceptions).
    """
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return import_extra(module, "cnn", needed_by)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                return import_extra(module, "cnn", needed_by)
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _check_model(model: str) -> str:
    from baselines.cnn.configs import MODELS, ConfigError

    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}: choose one of {', '.join(MODELS)}")
    return model


@app.command("train")
@user_errors
def train_cmd(
    model: str = typer.Argument(..., help=MODEL_HELP),
    config: str = typer.Option(
        "compact",
        help="compact (2 CPU cores), compact-end-to-end (blend2mask2flux), robust (a "
        "curriculum of stages), paper (GPU sizes), tiny (tests), or a FILE.toml",
    ),
    data: Path = typer.Option(..., help="release folder with train.h5 and val.h5"),
    out: Path = typer.Option(..., help="run folder (model.keras, history.csv, run.json)"),
    seed: int | None = typer.Option(
        None, help=f"seeds weights, data order, augmentation (default {DEFAULT_SEED}); for a "
        "curriculum, added to each stage's seed (default 0: the recipe's)"
    ),
    epochs: int | None = typer.Option(None, help="maximum epochs (default: the config's)"),
    time_budget: float | None = typer.Option(
        None, "--time-budget", help="minutes; stops after the epoch that exceeds it"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the run checkpointed in --out"),
    limit: int | None = typer.Option(None, help="use only the first N train/val blends"),
    batch_size: int | None = typer.Option(
        None,
        help="blends per step (default: the config's); the learning rate scales by "
        "sqrt(batch / 32)",
    ),
    in_memory: bool | None = typer.Option(
        None,
        "--in-memory/--stream",
        help="hold the splits in memory, or read them block by block (default: in memory "
        "when they fit)",
    ),
    init_weights: Path | None = typer.Option(
        None, "--init-weights", help="start from this model.keras (same model and sizes) "
        "instead of random weights: fine-tuning"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no per-step progress bar"),
) -> None:
    """Train a CNN baseline on a release; checkpoints every epoch (resume with --resume)."""
    from baselines.cnn.configs import ConfigError, load_config
    from baselines.cnn.curriculum import find_curriculum

    curriculum = find_curriculum(_check_model(model), config)
    if curriculum is not None:
        given = [flag for flag, value in (("--epochs", epochs), ("--time-budget", time_budget),
                                          ("--init-weights", init_weights)) if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)}: the curriculum {config!r} fixes each "
                              "stage's epochs and starting weights; train one stage's config "
                              "alone to change them")
    else:
        cfg = load_config(model, config)
    train_mod = _import_cnn("baselines.cnn.train", "blendbench train")

    def on_epoch(row: dict) -> None:
        parts = [f"epoch {row['epoch']:>3} ({row['stage']})", f"loss {row['loss']:.4f}"]
        parts.append(f"val_loss {row.get('val_loss', float('nan')):.4f}")
        if row.get("val_mape") is not None:
            parts.append(f"val MAPE {row['val_mape']:.2f}%")
        if row.get("val_iou") is not None:
            parts.append(f"val IoU {row['val_iou']:.3f}")
        parts.append(f"lr {row['lr']:.2e}, {row['seconds']:.0f} s, {row['images_per_s']:.0f} img/s")
        err_console.print(" | ".join(parts), highlight=False)

    verbose = 1 if not quiet and console.is_terminal and err_console.is_terminal else 0
    if curriculum is not None:
        from dataclasses import replace

        from baselines.cnn.curriculum import train_curriculum

        if seed:
            curriculum = replace(curriculum, stages=tuple(
                replace(st, seed=st.seed + seed) for st in curriculum.stages))

        def announce(k, stage) -> None:
            err_console.print(f"stage {k}/{len(curriculum.stages)}: {stage.config.name}, "
                              f"{stage.epochs} epochs, seed {stage.seed}", highlight=False)

        result = train_curriculum(curriculum, data, out, resume=resume, limit=limit,
                                  batch_size=batch_size, in_memory=in_memory, verbose=verbose,
                                  progress=on_epoch, announce=announce)
        cfg = curriculum
    else:
        result = train_mod.train_cnn(
            cfg, data, out, seed=DEFAULT_SEED if seed is None else seed, epochs=epochs,
            time_budget_min=time_budget, resume=resume, limit=limit, batch_size=batch_size,
            in_memory=in_memory, init_weights=init_weights, verbose=verbose,
            progress=on_epoch,
        )  # fmt: skip
    rec = result.record
    mape = rec.get("best_val_mape")
    console.print(
        f"{model} --config {cfg.name}: {rec['parameters']:,} parameters, {rec['epochs']} epochs "
        f"in {rec['wall_time_s'] / 60:.1f} min"
        + (f", best val MAPE {mape:.2f}% (epoch {rec['best_epoch']})" if mape else "")
        + (f", stopped: {rec['stopped']}" if rec["stopped"] else "")
        + f"; wrote {result.model_path}"
    )


COPY_WEIGHTS = typer.Option(
    True, "--copy-weights/--no-copy-weights", help="copy the weights and the training record "
    "into OUT (off: a run of weights that another submission holds, e.g. a track)"
)


def _run_cnn_baseline(name: str, data: Path, tta: bool, workers: int | None,
                      scheduler: str | None, write, maps: bool = True) -> None:  # fmt: skip
    """Run ``write(predict_module, progress, parallel) -> (out, summary)`` with a progress bar
    over the release's test blends and report its speed."""
    from challenge.contract.release import resolve_release
    from challenge.pipeline.workers import describe, resolve_parallel

    parallel = resolve_parallel(workers, scheduler, 1)
    predict = _import_cnn("baselines.cnn.predict", f"blendbench baseline {name}")
    n = resolve_release(data)[1].spec.n_blends["test"]
    out, summary = with_progress(name, n, lambda advance: write(predict, advance, parallel))
    keep_maps(out, maps)
    console.print(
        f"{name}: {summary['n']} blends in {summary['inference_s']:.1f} s "
        f"({summary['n'] / summary['inference_s']:.0f} blends/s, {describe(parallel)}"
        + (", 8-fold test-time augmentation" if tta else "")
        + f"); wrote {out} (+ {', '.join(summary['copied']) or 'no training files'})"
    )


def _baseline(model: str, weights: Path, data: Path, out: Path, batch_size: int, tta: bool,
              workers: int | None, scheduler: str | None, copy: bool,
              maps: bool = True):  # fmt: skip
    _run_cnn_baseline(model, data, tta, workers, scheduler, lambda predict, advance, parallel:
                      predict.write_cnn_submission(model, weights, data, out, batch_size, tta,
                                                   progress=advance, workers=parallel,
                                                   copy_files=copy), maps)  # fmt: skip


@baseline_app.command("blend2flux")
@user_errors
def blend2flux_cmd(
    weights: Path = typer.Option(..., help="model.keras written by `blendbench train`"),
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    batch_size: int = typer.Option(64, help="blends per forward pass"),
    tta: bool = typer.Option(True, help="average over the 8 dihedral transforms"),
    workers: int = workers_option(1),
    scheduler: str = scheduler_option("the weights and the release"),
    copy: bool = COPY_WEIGHTS,
) -> None:
    """blend2flux (Boucaud et al. 2019): a conv net from the blend to the two fluxes."""
    out = out or submission_out(data, "blend2flux")
    _baseline("blend2flux", weights, data, out, batch_size, tta, workers, scheduler, copy)


@baseline_app.command("blend2mask2flux")
@user_errors
def blend2mask2flux_cmd(
    weights: Path = typer.Option(..., help="model.keras written by `blendbench train`"),
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    batch_size: int = typer.Option(64, help="blends per forward pass"),
    tta: bool = typer.Option(True, help="average over the 8 dihedral transforms"),
    workers: int = workers_option(1),
    scheduler: str = scheduler_option("the weights and the release"),
    copy: bool = COPY_WEIGHTS,
    maps: bool = MAPS,
) -> None:
    """blend2mask2flux (Boucaud et al. 2019): U-Net maps, then a flux net; writes masks too."""
    out = out or submission_out(data, "blend2mask2flux")
    _baseline("blend2mask2flux", weights, data, out, batch_size, tta, workers, scheduler, copy,
              maps)


@baseline_app.command("cnn-ensemble")
@user_errors
def cnn_ensemble_cmd(
    weights: list[Path] = typer.Option(
        ..., help="model.keras of each member (give it twice or more; blend2flux and "
        "blend2mask2flux may mix)"
    ),
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    batch_size: int = typer.Option(64, help="blends per forward pass"),
    tta: bool = typer.Option(True, help="average each member over the 8 dihedral transforms"),
    workers: int = workers_option(1),
    scheduler: str = scheduler_option("the weights and the release"),
    maps: bool = MAPS,
) -> None:
    """Trained CNNs averaged (mean log10 flux; maps from the members that make them)."""
    out = out or submission_out(data, "cnn-ensemble")
    _run_cnn_baseline("cnn-ensemble", data, tta, workers, scheduler,
                      lambda predict, advance, parallel: predict.write_ensemble_submission(
                          weights, data, out, batch_size, tta, progress=advance,
                          workers=parallel), maps)  # fmt: skip
