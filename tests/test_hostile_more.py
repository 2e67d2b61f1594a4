"""Hostile runs and values: Ctrl-C at any moment of a command, fluxes at the edges of float64,
and refusals seen on a real terminal (a subprocess: astropy's WARNING lines go to the process's
own stderr, which CliRunner does not capture)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_hostile import _table
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import SubmissionError
from challenge.contract.release import committed_dir
from challenge.contract.submission import read_submission

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _default_sigint() -> None:
    """In the child: Ctrl-C back to its default, also where this suite runs with SIGINT ignored
    (a background job), which a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand", n=12)


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_ctrl_c_while_the_command_imports_prints_one_line(tmp_path):
    # -X importtime reports each module once imported: SIGINT goes out right after the package
    # `challenge` is in, while the command modules (typer, rich, numpy...) are still loading.
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "challenge.cli", "info", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
        preexec_fn=_default_sigint,
    )
    try:
        for line in proc.stderr:
            if line.rstrip().endswith("| challenge"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = [ln for ln in (out + err).splitlines() if ln.strip() and
             not ln.startswith("import time:")]
    assert proc.returncode == 130, shown
    assert shown == ["interrupted while starting; nothing was done"]


FAKE_GENERATE = textwrap.dedent("""
    import shutil, sys, time
    from pathlib import Path
    import challenge.pipeline.files as files

    toml, out, when = sys.argv[1:4]

    def generate_release(spec, out, **kwargs):
        print("generating", flush=True)
        if when == "generating":
            time.sleep(120)
        Path(out).mkdir()
        shutil.copy(toml, Path(out) / "release.toml")
        return Path(out)

    def verify_release(folder):
        print("verifying", flush=True)
        time.sleep(120)

    files.generate_release, files.verify_release = generate_release, verify_release
    from challenge.cli import app
    app(["generate", "--release", "mini", "--out", out, "--workers", "1"],
        prog_name="blendbench")
""")


@pytest.mark.parametrize("when, expected", [
    ("generating", "interrupted; nothing was written to {out}"),
    ("verifying", "interrupted; the release {out} was written in full but not verified; check "
                  "it with `blendbench verify {out}`"),
])
def test_ctrl_c_in_generate_says_what_was_left(tmp_path, when, expected):
    out = tmp_path / "rel"
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_GENERATE, str(committed_dir("mini") / "release.toml"),
         str(out), when],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
        preexec_fn=_default_sigint,
    )
    try:
        for line in proc.stdout:
            if line.strip() == when:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == expected.format(out=out)
    assert out.is_dir() == (when == "verifying")


# ---------------------------------------------------------------------------------------------
# fluxes at the edges of float64


@pytest.mark.parametrize("value", [5e-324, 1e-310, -1e-40])
def test_fluxes_closer_to_zero_than_1e_30_are_refused(release, tmp_path, value):
    folder, ids, flux, _ = release
    tiny = flux.copy()
    tiny[4, 0] = value
    with pytest.raises(SubmissionError, match=f"non-zero values closer to 0 than 1e-30 counts "
                       f"\\(e.g. {value:g}\\) for blend_id 1012; write 0"):
        read_submission(write_h5(tmp_path / "p.h5", ids, tiny))
    err = flux.copy()
    err[1, 1] = 1e-300
    with pytest.raises(SubmissionError, match="field 'flux_err': non-zero values closer to 0"):
        read_submission(write_h5(tmp_path / "q.h5", ids, flux, flux_err=err))
    from challenge.scoring.evaluator import Evaluator

    with pytest.raises(SubmissionError, match="closer to 0 than 1e-30"):
        Evaluator(folder, n_boot=0).eval(ids, tiny)


def test_tiny_and_huge_fluxes_within_bounds_score_without_warnings(release, tmp_path):
    folder, ids, flux, _ = release
    edge = flux.copy()
    edge[0, 0], edge[1, 1], edge[2, 0] = 1e-30, 1e30, 0.0
    code = ("import sys, warnings; warnings.simplefilter('error'); "
            "from challenge.cli import app; app(sys.argv[1:], prog_name='blendbench')")
    res = subprocess.run(
        [sys.executable, "-c", code, "score", str(write_h5(tmp_path / "p.h5", ids, edge)),
         "--data", str(folder), "--n-boot", "20", "--json", str(tmp_path / "s.json")],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr
    import json

    mape = json.loads((tmp_path / "s.json").read_text())["overall"]["both"]["mape"]
    assert mape is not None and np.isfinite(mape) and mape > 1e20


# ---------------------------------------------------------------------------------------------
# refusals on a real terminal: one line, nothing from astropy before it


def _score_subprocess(path: Path, folder: Path) -> tuple[int, list[str]]:
    res = subprocess.run(
        [sys.executable, "-m", "challenge.cli", "score", str(path), "--data", str(folder),
         "--n-boot", "10"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    return res.returncode, [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]


def test_astropy_warnings_never_reach_the_terminal(release, tmp_path):
    folder, ids, flux, _ = release
    overflow = tmp_path / "overflow.csv"
    rows = [f"{b},{f[0]},{f[1]}\n" for b, f in zip(ids, flux, strict=True)]
    rows[0] = "9" * 30 + rows[0][rows[0].index(","):]
    overflow.write_text("blend_id,flux_central,flux_companion\n" + "".join(rows))
    truncated = tmp_path / "truncated.fits"
    _table(ids, flux).write(truncated)
    truncated.write_bytes(truncated.read_bytes()[:4000])
    text = tmp_path / "predictions.txt"
    text.write_text("this is not a table\n{]\n")
    for path, expected in ((overflow, "integers out of range"),
                           (truncated, "not a table astropy can read"),
                           (text, "not a table astropy can read")):
        code, lines = _score_subprocess(path, folder)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"error: {path.name}: {expected}"), lines


def test_a_csv_with_a_byte_order_mark_scores_as_without(release, tmp_path):
    folder, ids, flux, _ = release
    plain, bom = tmp_path / "plain", tmp_path / "bom"
    for sub in (plain, bom):
        sub.mkdir()
        _table(ids, 1.1 * flux).write(sub / "p.csv", format="ascii.csv")
        (sub / "submission.toml").write_text('release = "hand"\nname = "m"\n')
    (bom / "p.csv").write_bytes(b"\xef\xbb\xbf" + (bom / "p.csv").read_bytes())
    outputs = []
    for sub in (plain, bom):
        result = runner.invoke(app, ["score", str(sub / "p.csv"), "--data", str(folder),
                                     "--n-boot", "0"])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert outputs[0] == outputs[1] and "10.00" in outputs[0]
