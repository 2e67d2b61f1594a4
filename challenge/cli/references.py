"""``blendbench references``: rebuild the reference submissions of a release and its leaderboard."""

from __future__ import annotations

from pathlib import Path

import typer

from challenge.cli.base import app, console, user_errors


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 60:.1f} min" if value >= 60 else f"{value:.1f} s"


@app.command("references")
@user_errors
def references_cmd(
    data: Path = typer.Option(..., "--data", help="the generated release folder"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="list the steps and the time each took here, run nothing"
    ),
    force: bool = typer.Option(False, "--force", help="run every step, even those already done"),
    train: bool = typer.Option(
        False, "--train", help="v1: train the CNN references first (runs/references/) and "
        "submit those weights instead of the committed ones"
    ),
    submissions: Path | None = typer.Option(
        None, "--submissions", help="where the reference submissions go (default: the "
        "repository's submissions/)"
    ),
    boards: Path | None = typer.Option(
        None, "--leaderboards", help="where the reference leaderboards go (default: the "
        "repository's leaderboard/)"
    ),
) -> None:
    """Rebuild the reference submissions of a release, then its leaderboard (resumable)."""
    from challenge.contract.release import resolve_release
    from challenge.contract.workspace import BOARDS, REFERENCES
    from challenge.reports.references import check_weights, plan, run_plan

    folder, info = resolve_release(data)
    if not (Path(data) / "release.toml").is_file():
        from challenge.contract.errors import ReleaseError

        raise ReleaseError(f"--data {data}: give a generated release folder (the references run "
                           f"on its test blends); make it with `blendbench generate --release "
                           f"{info.spec.name} --out releases/{info.spec.name}`")
    steps = plan(info.spec.name, data, submissions=submissions or REFERENCES,
                 boards=boards or BOARDS, synthetic=info.spec.source == "synthetic",
                 maps=not info.spec.is_track, train=train)
    console.print(f"references of {info.spec.name}: {len(steps)} steps", highlight=False)
    for k, step in enumerate(steps, 1):
        state = "done" if step.done() else "to do"
        note = f"; {step.note}" if step.note else ""
        console.print(f"{k:2d}. {step.name} [{state}, took {_seconds(step.measured_s)} here"
                      f"{note}]: {step.command()}", highlight=False, markup=False,
                      soft_wrap=True)
    total = sum(s.measured_s or 0 for s in steps)
    console.print(f"recorded time of the steps: {_seconds(total)}", highlight=False)
    if dry_run:
        return
    check_weights(steps)

    def report(step, what: str, seconds: float) -> None:
        suffix = f" in {_seconds(seconds)}" if what == "done" else " (output present)"
        console.print(f"{step.name}: {what}{suffix}", highlight=False)

    run_plan(steps, force=force, report=report)
