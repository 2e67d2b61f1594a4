"""``blendbench run MODULE:CALLABLE``: run any method through the protocol into a submission."""

from __future__ import annotations

from pathlib import Path

import typer

from challenge.cli.base import app, console, err_console, user_errors
from challenge.cli.baselines import with_progress
from challenge.contract.workspace import submission_out


@app.command("run")
@user_errors
def run_cmd(
    method: str = typer.Argument(
        ..., help="MODULE:CALLABLE or path/to/file.py:CALLABLE of the method (see README)"
    ),
    data: Path = typer.Option(..., help="a generated release folder"),
    out: Path | None = typer.Option(
        None, help="submission folder to write (default: RELEASE/submissions/NAME)"
    ),
    name: str = typer.Option(
        None, help="submission name (default: the --out folder's name, else the callable's)"
    ),
    workers: int = typer.Option(
        None, help="worker processes on this machine (default 1: this process); the method must "
        "be defined at module level for > 1; the same as --scheduler local:N"
    ),
    scheduler: str = typer.Option(
        None, help="run the batches on Dask: local:N (N worker processes here) or "
        "tcp://HOST:PORT (a running Dask scheduler; the method's module must be importable "
        "on its workers)"
    ),
    batch_size: int = typer.Option(250, help="blends per call of the method"),
    authors: str = typer.Option("", help="comma-separated, for submission.toml"),
    link: str = typer.Option("", help="code or paper link, for submission.toml"),
    timeout: float | None = typer.Option(
        None, "--timeout", help="seconds one call of the method (one batch) may take"
    ),
    debug: bool = typer.Option(
        False, "--debug", help="print the method's full traceback when it raises"
    ),
) -> None:
    """Feed the test blends to a method in batches, validate, time and write a submission."""
    from challenge.contract.release import resolve_release
    from challenge.contract.submission_folder import SubmissionMetadata, write_submission
    from challenge.loaders.protocol import MethodError, load_method, release_context, run_method
    from challenge.pipeline.workers import resolve_parallel

    parallel = resolve_parallel(workers, scheduler, 1)
    if out is None:
        out = submission_out(data, name or method.rsplit(":", 1)[-1].replace("_", "-"))
    out = out.absolute()  # the method may change directory
    func = load_method(method)
    context = release_context(data)
    n = resolve_release(data)[1].spec.n_blends["test"]
    try:
        result = with_progress(
            method, n,
            lambda advance: run_method(func, data, batch_size, parallel, advance, context, timeout),
        )
    except MethodError as err:
        if debug and err.details:
            err_console.print(err.details, highlight=False, soft_wrap=True)
        raise
    doc = (getattr(func, "__doc__", None) or "").strip().splitlines()
    meta = SubmissionMetadata(
        name=name or out.name,
        release=context.release,
        method=f"{method}: {doc[0]}" if doc else method,
        authors=[a.strip() for a in authors.split(",") if a.strip()],
        link=link,
        inference_time_s=round(result.seconds, 2),
        extra={
            "callable": method,
            "workers": result.workers,
            **({"scheduler": scheduler} if scheduler else {}),
            "batch_size": batch_size,
            "blends_per_s": round(len(result.blend_id) / max(result.seconds, 1e-9), 2),
        },
    )
    o = result.outputs
    write_submission(
        out,
        meta,
        result.blend_id,
        o["flux"],
        masks=o.get("masks"),
        flux_err=o.get("flux_err"),
        detection=o.get("detection"),
    )
    console.print(
        f"{method}: {len(result.blend_id)} blends in {result.seconds:.1f} s "
        f"({len(result.blend_id) / max(result.seconds, 1e-9):.1f} blends/s, "
        f"{result.workers} worker{'s' if result.workers != 1 else ''}); wrote {out}"
    )
