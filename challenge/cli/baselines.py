"""``blendbench baseline ...``: run a reference method on a release's test blends."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from challenge.cli.base import app, console, err_console, plain, user_errors
from challenge.contract.workspace import submission_out

baseline_app = typer.Typer(
    help="Run a reference method and write its submission folder.", no_args_is_help=True
)
app.add_typer(baseline_app, name="baseline")

T = TypeVar("T")
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


def blend_progress(description: str) -> Progress:
    """A rich progress bar over blends, on stderr."""
    return Progress(
        TextColumn(plain(description).replace("{", "{{").replace("}", "}}"), style="bold",
                   markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )


def with_progress(name: str, total: int, run: Callable[[Callable[[int], None]], T]) -> T:
    """Call ``run(advance)`` under a progress bar of ``total`` blends; returns its result."""
    if not err_console.is_terminal:  # piped or redirected: no bar, no ANSI codes
        return run(lambda k: None)
    with blend_progress(name) as bar:
        task = bar.add_task(name, total=total)
        return run(lambda k: bar.advance(task, k))


def scheduler_option(shared: str = ""):
    """``--scheduler``; ``shared`` names what a remote cluster's workers must see at the same
    paths (for methods that read or write files there)."""
    need = f" whose workers see {shared} at the same paths" if shared else ""
    return typer.Option(
        None, help="run on Dask: local:N (N worker processes here) or tcp://HOST:PORT (a running "
        f"Dask scheduler{need}); the predictions do not depend on it"
    )


def workers_option(default: int):
    return typer.Option(
        None, help=f"worker processes on this machine (default {default}; 1: this process); "
        "the same as --scheduler local:N"
    )


MAPS = typer.Option(True, "--maps/--no-maps", help="keep the segmentation maps (off: fluxes "
                    "and detections only, a smaller file)")


def keep_maps(out: Path, maps: bool) -> None:
    """Drop the maps of the submission just written in ``out`` unless ``maps``."""
    if not maps:
        from challenge.contract.submission_folder import rewrite_predictions

        rewrite_predictions(out, maps=False)


def _n_test(data: Path) -> int:
    from challenge.contract.release import resolve_release

    return resolve_release(data)[1].spec.n_blends["test"]


@baseline_app.command("sep")
@user_errors
def sep_cmd(
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    workers: int = workers_option(DEFAULT_WORKERS),
    scheduler: str = scheduler_option(),
    maps: bool = MAPS,
) -> None:
    """SExtractor (sep) cold/hot, as in the paper; records the detection case per blend."""
    out = out or submission_out(data, "sep")
    from baselines.sep_baseline import describe_cases, run_sep_baseline
    from challenge.pipeline.workers import describe, resolve_parallel

    parallel = resolve_parallel(workers, scheduler, DEFAULT_WORKERS)
    result, elapsed = with_progress(
        "sep", _n_test(data),
        lambda advance: run_sep_baseline(data, out, parallel, progress=advance),
    )
    keep_maps(out, maps)
    n = len(result["flux"])
    console.print(
        f"sep: {n} blends in {elapsed:.1f} s ({n / elapsed:.0f} blends/s, "
        f"{describe(parallel)}); "
        f"hot mode {result['hot'].mean():.1%}; detection cases "
        f"{describe_cases(result['detection'])}; wrote {out}"
    )


@baseline_app.command("oracle")
@user_errors
def oracle_cmd(
    data: Path = typer.Option(..., help="a generated synthetic release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    workers: int = workers_option(DEFAULT_WORKERS),
    scheduler: str = scheduler_option(),
    maps: bool = MAPS,
) -> None:
    """The noise-floor oracle: true noiseless neighbour subtracted, then the truth procedure."""
    out = out or submission_out(data, "oracle")
    from baselines.oracle import run_oracle
    from challenge.pipeline.workers import resolve_parallel

    parallel = resolve_parallel(workers, scheduler, DEFAULT_WORKERS)
    result, elapsed = with_progress(
        "oracle", _n_test(data), lambda advance: run_oracle(data, out, parallel, progress=advance)
    )
    keep_maps(out, maps)
    n = len(result["flux"])
    console.print(
        f"oracle: {n} blends in {elapsed:.1f} s ({n / elapsed:.0f} blends/s); wrote {out}"
    )
