"""``blendbench demo``: the main job on the embedded default, end to end.

mini release (generated once, then verified) -> montages -> reference baselines on its test
blends -> leaderboard. Each step is a library call; this module only chains and prints them.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from challenge.cli.base import app, console, user_errors
from challenge.cli.baselines import with_progress
from challenge.cli.cnn import _import_cnn
from challenge.cli.release import _print_verify, run_generate
from challenge.cli.scoring import print_leaderboard
from challenge.contract.errors import MissingExtraError
from challenge.contract.release import resolve_release

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


# Trained reference CNNs committed in the project, run on the demo release when present.
CNN_WEIGHTS = {
    "blend2flux-compact": ("blend2flux", Path("submissions/blend2flux-compact/model.keras")),
    "blend2mask2flux-compact": (
        "blend2mask2flux",
        Path("submissions/blend2mask2flux-compact/model.keras"),
    ),
}


def run_reference_baselines(folder: Path, submissions: Path) -> None:
    """sep, the oracle and the committed CNNs on the release's test blends (cached)."""
    from baselines.oracle import run_oracle
    from baselines.sep_baseline import run_sep_baseline

    workers = min(2, os.cpu_count() or 1)
    for name, run in (("sep", run_sep_baseline), ("oracle", run_oracle)):
        out = submissions / name
        if (out / "predictions.h5").is_file():
            console.print(f"using cached {out}")
            continue
        _, elapsed = with_progress(
            name,
            resolve_release(folder)[1].spec.n_blends["test"],
            lambda advance, run=run, out=out: run(folder, out, workers, progress=advance),
        )
        console.print(f"{name}: wrote {out} in {elapsed:.1f} s")
    for name, (model, weights) in CNN_WEIGHTS.items():
        out = submissions / name
        if (out / "predictions.h5").is_file():
            continue
        if not weights.is_file():
            console.print(f"skipped {name}: no weights at {weights} (run `blendbench demo` from "
                          "the repository root, or train them with `blendbench train`)",
                          highlight=False)
            continue
        try:
            predict = _import_cnn("baselines.cnn.predict", f"the {name} row")
        except MissingExtraError as err:
            console.print(f"skipped {name}: {err}", highlight=False)
            continue
        _, summary = predict.write_cnn_submission(model, weights, folder, out, tta=False)
        console.print(f"{name}: wrote {out} in {summary['inference_s']:.1f} s ({weights})")


@app.command()
@user_errors
def demo(
    folder: Path = typer.Option(DEMO_DIR, help="where the mini release is cached"),
) -> None:
    """Generate the mini release, draw its montages, run the baselines, print the leaderboard."""
    from challenge.pipeline import montage
    from challenge.reports.leaderboard import build_leaderboard

    folder = demo_release(folder)
    figures = folder / "figures"
    console.print(f"wrote {montage.blend_montage(folder, figures / 'blends_test.png')}")
    console.print(f"wrote {montage.galaxy_montage(folder, figures / 'galaxies.png')}")
    submissions = folder / "submissions"
    run_reference_baselines(folder, submissions)
    out = folder / "leaderboard"
    df = build_leaderboard(folder, submissions, out)
    print_leaderboard(df, f"mini leaderboard (sep truth), written to {out}/")
