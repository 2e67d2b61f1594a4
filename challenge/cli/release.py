"""Release commands: generate, verify, export, info, show, demo."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from challenge.cli.base import app, console, err_console, styled, user_errors
from challenge.contract.errors import ReleaseError
from challenge.contract.release import (
    CUSTOM_SOURCES,
    PRESETS,
    SOURCES,
    ReleaseInfo,
    ReleaseSpec,
    preset,
)

DEMO_DIR = Path("releases") / "mini"
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
N_PAPER_GALAXIES = sum(PRESETS["v1"].morphology_counts.values())  # 1,919


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description:>10}", style="bold", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )


def run_generate(
    release: str | ReleaseSpec, out: Path, workers: int | str, chunk_size: int
) -> Path:
    """Generate a release (preset name or spec) with a progress bar; returns the folder.

    ``workers``: N processes on this machine (1: this process), or a ``--scheduler`` value
    (``local:N``, ``tcp://HOST:PORT``)."""
    from challenge.pipeline.files import generate_release, remove_stale_partials

    spec = preset(release) if isinstance(release, str) else release
    removed = remove_stale_partials(out)
    if removed:
        console.print(
            f"removed {len(removed)} unfinished release folder(s) left by killed runs: "
            + ", ".join(str(p) for p in removed)
        )
    from challenge.pipeline.workers import dask_client

    with dask_client(workers) as client, _progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, advance: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.advance(tasks[stage], advance)

        return generate_release(
            spec, out, chunk_size=chunk_size, workers=client or 1, progress=on_progress
        )


def _print_verify(folder: Path) -> None:
    from challenge.pipeline.files import verify_release

    report = verify_release(folder)
    if not report.ok:
        raise ReleaseError(f"{folder}: verification failed: " + "; ".join(report.problems))
    console.print(
        styled("verified", "green", f"{folder}: {len(report.checked)} arrays and tables match")
    )


def _parse_blends(text: str) -> dict[str, int]:
    try:
        train, val, test = (int(v) for v in text.split(","))
    except ValueError:
        raise ReleaseError(
            f"--blends {text!r}: expected three integers TRAIN,VAL,TEST, e.g. 2000,500,1000"
        ) from None
    if min(train, val, test) < 0 or train + val + test == 0:
        raise ReleaseError(
            f"--blends {text!r}: expected counts >= 0 with at least one blend, e.g. 2000,500,1000 "
            "(0 leaves a split empty: 20000,5000,0 makes a training-only release)"
        )
    return {"train": train, "val": val, "test": test}


def _check_custom_name(name: str) -> None:
    if name in PRESETS:
        raise ReleaseError(
            f"--name {name}: the name of a frozen release (verify would compare with it); "
            "choose another name for a custom release"
        )


def _synthetic_spec(
    name, blends, galaxies, max_galaxies, seed, input, pixel_scale, zero_point, psf, sky_sigma,
    max_delta_mag, test_fraction,
) -> ReleaseSpec:
    """The spec of a custom synthetic release from the generate options."""
    from challenge.pipeline.sources.synthetic import paper_mix

    if input is not None:
        raise ReleaseError(
            f"--input {input}: --source synthetic draws its galaxies (GalSim models); drop "
            "--input, or choose --source fits-stamps / candels-npy / cosmos for your own stamps"
        )
    instrument = {"--pixel-scale": pixel_scale, "--zero-point": zero_point, "--psf": psf}
    given = [k for k, v in instrument.items() if v is not None]
    if given:
        raise ReleaseError(
            f"{given[0]}: the instrument options apply to --source fits-stamps; synthetic "
            "releases use v1's grid, zero point and PSF (drop the option)"
        )
    n = N_PAPER_GALAXIES if galaxies is None else galaxies
    if max_galaxies:
        n = min(n, max_galaxies)
    if n < 4:
        option = "--galaxies" if galaxies is not None and galaxies == n else "--max-galaxies"
        raise ReleaseError(
            f"{option} {n}: a release needs at least 4 galaxies (2 per split); give more"
        )
    _check_custom_name(name or "synthetic")
    fields = {
        "seed": seed,
        "sky_sigma": sky_sigma,
        "max_delta_mag": max_delta_mag,
        "test_fraction": test_fraction,
    }
    if sky_sigma is not None and not sky_sigma > 0:
        raise ReleaseError(f"--sky-sigma {sky_sigma}: expected a noise level > 0 (counts/px)")
    return ReleaseSpec(
        name=name or "synthetic",
        source="synthetic",
        morphology_counts=paper_mix(n),
        n_blends=_parse_blends(blends),
        **{k: v for k, v in fields.items() if v is not None},
    )


@app.command()
@user_errors
def generate(
    out: Path = typer.Option(..., help="new (or empty) folder to write the release into"),
    release: str = typer.Option(
        "v1",
        help="release preset: v1, mini, cosmos-example, or a shift track of v1 "
        "(v1-psf, v1-psf-broad, v1-noise, v1-noise-low, v1-faint, v1-clumpy, v1-close)",
    ),
    source: str = typer.Option(
        None, help=f"build a custom release from a galaxy source: {', '.join(SOURCES)}"
    ),
    input: Path = typer.Option(
        None,
        "--input",
        help="input folder of the source (COSMOS download, candels-npy "
        "archive, FITS stamps); default for cosmos: $BLENDBENCH_COSMOS_DIR or the example",
    ),
    name: str = typer.Option(None, help="name of a custom release (default: the source's)"),
    blends: str = typer.Option("2000,500,1000", help="custom release: TRAIN,VAL,TEST blends"),
    max_galaxies: int = typer.Option(0, help="custom release: use at most N input galaxies"),
    seed: int = typer.Option(None, help="custom release: seed (default: the kit's)"),
    pixel_scale: float = typer.Option(
        None, help="fits-stamps: pixel scale of the stamps (arcsec/px); resampled to 0.06"
    ),
    zero_point: float = typer.Option(
        None, help="fits-stamps: AB zero point of the stamps' counts; rescaled to 25.96"
    ),
    psf: str = typer.Option(
        None, help="fits-stamps: PSF of the stamps, a FITS image file or a Gaussian FWHM (arcsec)"
    ),
    sky_sigma: float = typer.Option(
        None,
        help="custom release: sky noise of the blends (counts/px at ZP 25.96, default 0.012); "
        "raised to the noisiest stamp's",
    ),
    max_delta_mag: float = typer.Option(
        None, help="custom release: largest |Δm| of a pair (default 2.0)"
    ),
    test_fraction: float = typer.Option(
        None, help="custom release: fraction of the galaxies kept for test (default 0.2)"
    ),
    galaxies: int = typer.Option(
        None, help=f"--source synthetic: parent galaxies, in the paper's morphology mix "
        f"(default {N_PAPER_GALAXIES:,})"
    ),
    workers: int = typer.Option(
        None, help=f"worker processes on this machine (default {DEFAULT_WORKERS}; 1: this "
        "process only); the same as --scheduler local:N"
    ),
    scheduler: str = typer.Option(
        None, help="run on Dask: local:N (N worker processes here) or tcp://HOST:PORT (a running "
        "Dask scheduler, e.g. from dask-jobqueue); the release does not depend on it"
    ),
    chunk_size: int = typer.Option(256, help="blends per task (memory vs. speed)"),
) -> None:
    """Generate a release folder (same release name -> same benchmark on any machine).

    Presets are frozen (`--release v1`); `--source synthetic --blends 100000,10000,10000`
    makes a custom release of GalSim galaxies of any size; `--source candels-npy --input DIR`
    (or cosmos, fits-stamps) builds one from your own galaxies with the same pipeline.
    """
    from challenge.pipeline.workers import resolve_parallel

    t0 = time.perf_counter()
    parallel = resolve_parallel(workers, scheduler, DEFAULT_WORKERS)
    if chunk_size < 1:
        raise ReleaseError(f"--chunk-size {chunk_size}: expected a number of blends >= 1")
    spec: str | ReleaseSpec = release
    custom = {
        "--pixel-scale": pixel_scale,
        "--zero-point": zero_point,
        "--psf": psf,
        "--sky-sigma": sky_sigma,
        "--max-delta-mag": max_delta_mag,
        "--test-fraction": test_fraction,
        "--galaxies": galaxies,
    }
    if source is None:
        given = [k for k, v in custom.items() if v is not None]
        if given:
            raise ReleaseError(
                f"{given[0]} applies to a custom release; add --source SOURCE --input DIR, or "
                f"drop it to generate the frozen {release!r}"
            )
    elif source not in SOURCES:
        raise ReleaseError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")
    elif test_fraction is not None and not 0 < test_fraction < 1:
        raise ReleaseError(f"--test-fraction {test_fraction}: expected a number in (0, 1)")
    elif max_delta_mag is not None and not max_delta_mag > 0:
        raise ReleaseError(f"--max-delta-mag {max_delta_mag}: expected a number > 0")
    elif source == "synthetic":
        spec = _synthetic_spec(
            name, blends, galaxies, max_galaxies, seed, input, pixel_scale, zero_point, psf,
            sky_sigma, max_delta_mag, test_fraction,
        )
    else:
        if galaxies is not None:
            raise ReleaseError(
                f"--galaxies applies to --source synthetic; {source} takes its galaxies from the "
                "input (cap them with --max-galaxies N)"
            )
        _check_custom_name(name or source)
        if input is None and source == "cosmos":
            input = (
                Path(os.environ["BLENDBENCH_COSMOS_DIR"])
                if os.environ.get("BLENDBENCH_COSMOS_DIR")
                else None
            )
        if input is None and source != "cosmos":
            raise ReleaseError(f"--source {source} needs an input folder: add --input DIR")
        extra = {
            key: value
            for key, value in (
                ("seed", seed),
                ("max_delta_mag", max_delta_mag),
                ("test_fraction", test_fraction),
            )
            if value is not None
        }
        from challenge.pipeline.sources.instrument import custom_spec

        spec = custom_spec(
            source,
            input,
            pixel_scale=pixel_scale,
            zero_point=zero_point,
            psf=psf,
            sky_sigma=sky_sigma,
            name=name or source,
            n_blends=_parse_blends(blends),
            max_galaxies=max_galaxies,
            **extra,
        )
    from challenge.pipeline.files import release_notes

    try:
        folder = run_generate(spec, out, parallel, chunk_size)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(out)) from None
    try:
        console.print(f"wrote {folder} in {time.perf_counter() - t0:.1f} s")
        for line in release_notes(ReleaseInfo.read(folder / "release.toml")):
            console.print(f"note: {line}", highlight=False)
        _print_verify(folder)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(folder)) from None


def _interrupted(out: Path) -> str:
    """What an interrupted ``generate`` leaves: the whole release, or nothing."""
    if (Path(out) / "release.toml").is_file():  # the release was renamed into place
        return (f"the release {out} was written in full but not verified; check it with "
                f"`blendbench verify {out}`")
    return f"nothing was written to {out}"


@app.command()
@user_errors
def verify(folder: Path = typer.Argument(..., help="a generated release folder")) -> None:
    """Recompute every dataset's fingerprint, check every file attribute, and compare tables and
    fingerprints with the frozen release (one changed pixel of half the sky noise is seen)."""
    _print_verify(folder)


@app.command()
@user_errors
def export(
    folder: Path = typer.Argument(..., help="a generated release folder"),
    split: str = typer.Option("test", help="train, val or test"),
    format: str = typer.Option("h5", "--format", help="h5, fits or npy"),
    out: Path = typer.Option(None, help="output folder (default: FOLDER/export)"),
) -> None:
    """Export a split's blend images as HDF5, a FITS cube or .npy."""
    from challenge.pipeline.files import export_blends

    for path in export_blends(folder, split, format, out):
        console.print(f"wrote {path}")


@app.command()
@user_errors
def info(folder: Path = typer.Argument(..., help="a generated release folder")) -> None:
    """Summarise a release: spec, counts, galaxies per morphology, files."""
    from challenge.pipeline.files import release_notes, release_summary

    summary = release_summary(folder)
    spec = summary["info"].spec
    console.print(
        styled(
            spec.name, "bold",
            f"v{spec.version}  source={spec.source}  seed={spec.seed}  "
            f'{spec.stamp_size}x{spec.stamp_size} px at {spec.pixel_scale}"/px  '
            f"ZP={spec.zero_point}  sky σ={spec.sky_sigma} ct/px",
        )
    )
    counts = summary["info"].counts
    names = {"galaxies": "galaxies", "test_galaxies": "test galaxies", "blends_train":
             "train blends", "blends_val": "validation blends", "blends_test": "test blends"}
    console.print(
        "counts: " + ", ".join(f"{v:,} {names.get(k, k.replace('_', ' '))}"
                               for k, v in counts.items()),
        highlight=False,
    )
    n_redrawn = summary["info"].n_redrawn
    if n_redrawn:
        console.print(
            f"{n_redrawn:,} galaxies redrawn: the truth procedure did not detect the first "
            "draw of their slot, so the next draw took its place",
            highlight=False,
        )
    if spec.is_track:
        from challenge.contract.release import TRACK_SHIFTS, read_table

        what = TRACK_SHIFTS[spec.name][0] if spec.name in TRACK_SHIFTS else "custom shift"
        galaxies = read_table(folder, "galaxies.ecsv")
        redrawn = [str(g) for g in galaxies["galaxy_id"][galaxies["redrawn"]]]
        console.print(
            f"shift track of {spec.base}: {what}; its first {spec.n_blends['test']:,} test "
            f"blends and their galaxies; redrawn (undetected under the shift): "
            f"{', '.join(redrawn) or 'none'}",
            highlight=False,
        )
    if spec.source in CUSTOM_SOURCES:
        psf = {"model": f"model {spec.psf_model}", "gaussian": "Gaussian", "file": spec.psf_file}
        console.print(
            f"galaxies: {spec.mag_min:g}–{spec.mag_max:g} mag  PSF: {psf[spec.psf_kind]}, "
            f'FWHM {spec.psf_fwhm:g}"',
            highlight=False,
        )
    for line in release_notes(summary["info"]):
        console.print(f"note: {line}", highlight=False)
    table = RichTable(
        "morphology", "n", "test", "median mag", "median R_e (px)", "median sep/model flux"
    )
    for row in summary["per_morphology"].itertuples():
        table.add_row(
            row.morphology,
            str(row.n),
            str(row.test),
            f"{row.mag_median:.2f}",
            f"{row.r_e_median_px:.2f}",
            f"{row.sep_over_model:.3f}",
        )
    console.print(table)
    console.print(
        f"on disk: {summary['size_bytes'] / 2**20:.1f} MiB in {len(summary['files'])} files"
    )


@app.command()
@user_errors
def show(
    folder: Path = typer.Argument(..., help="a generated release folder"),
    out: Path = typer.Option(None, help="folder for the PNGs (default: FOLDER/figures)"),
    split: str = typer.Option("test", help="split whose blends to show"),
) -> None:
    """Write PNG montages: blends by Δmag and distance, isolated galaxies per morphology."""
    from challenge.pipeline import montage

    out = out or folder / "figures"
    console.print(f"wrote {montage.blend_montage(folder, out / f'blends_{split}.png', split)}")
    console.print(f"wrote {montage.galaxy_montage(folder, out / 'galaxies.png')}")
