"""``blendbench baseline photutils|scarlet2``: the peer deblenders (optional ``peers`` extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from challenge.cli.base import console, user_errors
from challenge.cli.baselines import (
    DEFAULT_WORKERS,
    MAPS,
    _n_test,
    baseline_app,
    keep_maps,
    scheduler_option,
    with_progress,
    workers_option,
)  # fmt: skip
from challenge.contract.workspace import submission_out


@baseline_app.command("photutils")
@user_errors
def photutils_cmd(
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    workers: int = workers_option(DEFAULT_WORKERS),
    scheduler: str = scheduler_option(),
    maps: bool = MAPS,
) -> None:
    """photutils: segmentation, multi-threshold + watershed deblending, Kron fluxes."""
    out = out or submission_out(data, "photutils")
    from baselines.photutils_method import run_photutils_baseline
    from baselines.sep_baseline import describe_cases
    from challenge.pipeline.workers import describe, resolve_parallel

    parallel = resolve_parallel(workers, scheduler, DEFAULT_WORKERS)
    result, elapsed = with_progress(
        "photutils",
        _n_test(data),
        lambda advance: run_photutils_baseline(data, out, parallel, progress=advance),
    )
    keep_maps(out, maps)
    n = len(result["flux"])
    console.print(
        f"photutils: {n} blends in {elapsed:.1f} s ({n / elapsed:.0f} blends/s, "
        f"{describe(parallel)}); global-background fallback "
        f"{result['global_background'].mean():.1%}; "
        f"detection cases {describe_cases(result['detection'])}; wrote {out}"
    )


@baseline_app.command("scarlet2")
@user_errors
def scarlet2_cmd(
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    workers: int = workers_option(1),
    scheduler: str = scheduler_option("the release and the submission folder (checkpoints)"),
    resume: bool = typer.Option(
        False, "--resume", help="reuse OUT/checkpoints of an interrupted run"
    ),
    n_iter: int = typer.Option(300, help="Adam steps per blend"),
    batch_size: int = typer.Option(250, help="blends per checkpoint"),
    limit: int = typer.Option(None, help="fit only the first N test blends (timing runs)"),
    max_batches: int = typer.Option(
        None, help="stop after N new batches without writing the submission (resume later)"
    ),
    keep_checkpoints: bool = typer.Option(
        False, "--keep-checkpoints", help="keep OUT/checkpoints when done"
    ),
    maps: bool = MAPS,
) -> None:
    """scarlet2: two PSF-convolved Sérsic sources per blend, fitted in vmapped batches.

    Sources start at the sep cold/hot detections; fluxes are the model fluxes, masks the
    model fractions; every batch is checkpointed, so an interrupted run continues with
    --resume.
    """
    out = out or submission_out(data, "scarlet2")
    from baselines.scarlet_method import ScarletSettings, run_scarlet_baseline
    from baselines.sep_baseline import describe_cases
    from challenge.pipeline.workers import describe, resolve_parallel

    parallel = resolve_parallel(workers, scheduler, 1)
    total = _n_test(data) if limit is None else min(limit, _n_test(data))
    result, elapsed = with_progress(
        "scarlet2",
        total,
        lambda advance: run_scarlet_baseline(
            data,
            out,
            workers=parallel,
            resume=resume,
            batch_size=batch_size,
            settings=ScarletSettings(n_iter=n_iter),
            progress=advance,
            limit=limit,
            max_batches=max_batches,
            keep_checkpoints=keep_checkpoints,
        ),
    )
    if result is None:
        console.print(
            f"scarlet2: stopped after {max_batches} new batches ({elapsed:.1f} s); continue "
            f"with --resume (checkpoints in {out / 'checkpoints'})"
        )
        return
    keep_maps(out, maps)
    n = len(result["flux"])
    fitted = result["crop"] > 0
    console.print(
        f"scarlet2: {n} blends in {elapsed:.1f} s ({n / elapsed:.2f} blends/s, "
        f"{describe(parallel)}); failed fits "
        f"(sep fallback) {int(result['failed'].sum())}, not converged "
        f"{int((~result['converged'] & fitted).sum())}; detection cases "
        f"{describe_cases(result['detection'])}; wrote {out}"
    )
