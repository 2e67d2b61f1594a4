"""``blendbench demo``: the main job on the embedded default, end to end.

mini release (generated once, then verified) -> montages -> its leaderboard: the reference
submissions of ``submissions/mini/`` beside the user's own in ``releases/mini/submissions/``.
Each step is a library call; this module only chains and prints them.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from challenge.cli.base import app, console, user_errors
from challenge.cli.release import _print_verify, run_generate
from challenge.cli.scoring import print_leaderboard

DEMO_DIR = Path("releases") / "mini"


def demo_release(folder: Path = DEMO_DIR) -> Path:
    """The mini release, generated once and reused (verified when reused)."""
    if (folder / "release.toml").is_file():
        console.print(f"using cached {folder}")
        _print_verify(folder)
        return folder
    run_generate("mini", folder, workers=min(2, os.cpu_count() or 1), chunk_size=256)
    console.print(f"generated {folder}")
    return folder


@app.command()
@user_errors
def demo(
    folder: Path = typer.Option(DEMO_DIR, help="where the mini release is cached"),
) -> None:
    """Generate the mini release, draw its montages, print its leaderboard with the references."""
    from challenge.contract.workspace import references_dir
    from challenge.pipeline import montage
    from challenge.reports.leaderboard import build_leaderboard

    folder = demo_release(folder)
    figures = folder / "figures"
    console.print(f"wrote {montage.blend_montage(folder, figures / 'blends_test.png')}")
    console.print(f"wrote {montage.galaxy_montage(folder, figures / 'galaxies.png')}")
    references = references_dir("mini")
    submissions = folder / "submissions"
    if references is None:
        console.print("no reference submissions for mini here (they come with the repository); "
                      "ranking only your own", highlight=False)
        submissions.mkdir(parents=True, exist_ok=True)
    out = folder / "leaderboard"
    df = build_leaderboard(folder, submissions, out, references_dir=references)
    print_leaderboard(df, f"mini leaderboard (sep truth), written to {out}/")
    console.print(f"next: put your method's submission in {submissions}/ (e.g. `blendbench run "
                  f"my_method.py:predict --data {folder}`) and run `blendbench leaderboard "
                  f"--data {folder}`", highlight=False)
