"""`blendbench run` with misbehaving methods: every bad output, exception, hang and kill ends in one
line naming the batch (exit 2), nothing written, no worker left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from challenge.cli import app
from challenge.loaders.protocol import MethodError, check_output, load_method, run_method

runner = CliRunner()

BAD = '''
import time
import numpy as np


def _n(batch):
    return len(batch.blend_id)


def _flux(batch, dtype=float):
    return np.ones((_n(batch), 2), dtype)


def complex_flux(batch, context):
    return {"flux": _flux(batch) * (1 + 1j)}


def bool_flux(batch, context):
    return {"flux": _flux(batch, bool)}


def str_flux(batch, context):
    return {"flux": _flux(batch).astype(str)}


def object_flux(batch, context):
    return {"flux": np.array([[1.0, None]] * _n(batch), dtype=object)}


def ragged_flux(batch, context):
    return {"flux": [[1.0], [1.0, 2.0]] * _n(batch)}


def _masks(batch, value):
    return np.full((_n(batch), 2, batch.images.shape[-1], batch.images.shape[-1]), value)


def masks_seven(batch, context):
    return {"flux": _flux(batch), "masks": _masks(batch, 7.0)}


def masks_negative(batch, context):
    return {"flux": _flux(batch), "masks": _masks(batch, -3.0)}


def masks_complex(batch, context):
    return {"flux": _flux(batch), "masks": _masks(batch, 0.5 + 0j)}


def detection_258(batch, context):
    return {"flux": _flux(batch), "detection": np.full(_n(batch), 258)}


def detection_fraction(batch, context):
    return {"flux": _flux(batch), "detection": np.full(_n(batch), 1.7)}


def detection_bool(batch, context):
    return {"flux": _flux(batch), "detection": np.ones(_n(batch), bool)}


def flux_err_zero(batch, context):
    return {"flux": _flux(batch), "flux_err": np.zeros((_n(batch), 2))}


def flux_inf(batch, context):
    return {"flux": _flux(batch) * np.inf}


def flux_huge(batch, context):
    return {"flux": _flux(batch) * 1.7e308}


def scalar_extra(batch, context):
    return {"flux": _flux(batch), "score": 3.0}


def object_extra(batch, context):
    return {"flux": _flux(batch), "notes": np.array([object()] * _n(batch))}


def returns_list(batch, context):
    return [1, 2]


def raises(batch, context):
    raise RuntimeError("model weights not found")


def hangs(batch, context):
    time.sleep(3600)


def integral_float_detection(batch, context):
    return {"flux": _flux(batch), "detection": np.full(_n(batch), 2.0),
            "masks": _masks(batch, True), "extra": np.arange(_n(batch))}


def _make():
    def inner(batch, context):
        return {"flux": _flux(batch)}
    return inner


closure = _make()
'''

CASES = [
    ("complex_flux", "'flux' has dtype complex128"),
    ("bool_flux", "'flux' has dtype bool"),
    ("str_flux", "'flux' has dtype <U"),
    ("object_flux", "'flux' has dtype object"),
    ("ragged_flux", "'flux' is not an array"),
    ("masks_seven", "'masks' has values outside [0, 1] (e.g. np.float64(7.0))"),
    ("masks_negative", "'masks' has values outside [0, 1]"),
    ("masks_complex", "'masks' has dtype complex128"),
    ("detection_258", "'detection' has values outside -1..3 (e.g. np.int64(258))"),
    ("detection_fraction", "'detection' has values outside -1..3 (e.g. np.float64(1.7))"),
    ("detection_bool", "'detection' has dtype bool"),
    ("flux_err_zero", "'flux_err' has values <= 0"),
    ("flux_inf", "'flux' has NaN/inf for batch rows [0, 1, 2, 3, 4]"),
    ("flux_huge", "'flux' has values beyond 1e+30 counts"),
    ("scalar_extra", "extra key 'score' has shape ()"),
    ("object_extra", "extra key 'notes' has dtype object"),
    ("returns_list", "a dict with at least 'flux' (n, 2), got list"),
    ("raises", "the method raised RuntimeError: model weights not found"),
]


@pytest.fixture()
def bad_module(tmp_path, monkeypatch):
    (tmp_path / "bad_method.py").write_text(textwrap.dedent(BAD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "bad_method"
    sys.modules.pop("bad_method", None)


def _refused(result, out: Path) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert not out.exists()
    return errors[0]


@pytest.mark.parametrize("name, message", CASES)
def test_bad_outputs_refused_naming_batch_key_and_fix(tiny_release, bad_module, tmp_path, name,
                                                      message):
    out = tmp_path / "sub"
    line = _refused(runner.invoke(app, ["run", f"{bad_module}:{name}", "--data",
                                        str(tiny_release), "--out", str(out),
                                        "--batch-size", "16"]), out)
    assert "batch 1 (blends " in line and message in line
    assert "; return" in line or "--debug" in line  # the fix, or where the traceback is


def test_debug_prints_the_traceback(tiny_release, bad_module, tmp_path):
    result = runner.invoke(app, ["run", f"{bad_module}:raises", "--data", str(tiny_release),
                                 "--out", str(tmp_path / "s"), "--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and 'raise RuntimeError("model weights' in result.output


@pytest.mark.parametrize("workers", [1, 2])
def test_timeout_per_batch(tiny_release, bad_module, tmp_path, workers):
    t0 = time.perf_counter()
    line = _refused(runner.invoke(app, ["run", f"{bad_module}:hangs", "--data",
                                        str(tiny_release), "--out", str(tmp_path / "s"),
                                        "--timeout", "0.5", "--workers", str(workers)]),
                    tmp_path / "s")
    assert "did not return within --timeout 0.5 s" in line and "batch 1" in line
    assert time.perf_counter() - t0 < 30


def test_raise_in_worker_names_the_batch(tiny_release, bad_module, tmp_path):
    line = _refused(runner.invoke(app, ["run", f"{bad_module}:raises", "--data",
                                        str(tiny_release), "--out", str(tmp_path / "s"),
                                        "--workers", "2", "--batch-size", "16"]),
                    tmp_path / "s")
    assert "batch 1 (blends" in line and "RuntimeError: model weights not found" in line


def test_closure_with_workers_is_a_clear_message(tiny_release, bad_module, tmp_path):
    line = _refused(runner.invoke(app, ["run", f"{bad_module}:closure", "--data",
                                        str(tiny_release), "--out", str(tmp_path / "s"),
                                        "--workers", "2"]), tmp_path / "s")
    assert "cannot be sent to worker processes" in line and "--workers 1" in line
    result = runner.invoke(app, ["run", f"{bad_module}:closure", "--data", str(tiny_release),
                                 "--out", str(tmp_path / "s"), "--workers", "1"])
    assert result.exit_code == 0, result.output


def test_good_output_kinds_pass(tiny_release, bad_module):
    res = run_method(load_method(f"{bad_module}:integral_float_detection"), tiny_release,
                     batch_size=16)
    assert res.outputs["detection"].dtype == np.int8 and (res.outputs["detection"] == 2).all()
    assert res.outputs["extra"].shape == (40,)
    with pytest.raises(MethodError, match="key 3 is not a string"):
        check_output({"flux": np.ones((2, 2)), 3: 1}, 2, 8, "here")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("command, sig", [("run", signal.SIGKILL), ("run", signal.SIGTERM),
                                          ("generate", signal.SIGKILL)])
def test_no_worker_outlives_a_killed_command(tiny_release, bad_module, tmp_path, command, sig):
    args = (["run", f"{bad_module}:hangs", "--data", str(tiny_release), "--out",
             str(tmp_path / "s")] if command == "run" else
            ["generate", "--release", "v1", "--out", str(tmp_path / "rel")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "challenge.cli", *args, "--workers", "2"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while len(kids := _children(proc.pid)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(kids) >= 2, "the workers did not start"
        time.sleep(1.0)  # the batches are running
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while any(_alive(k) for k in kids) and time.time() < deadline:
            time.sleep(0.2)
        left = [k for k in kids if _alive(k)]
        for k in left:
            os.kill(k, signal.SIGKILL)
        assert not left, "worker processes outlived their command"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_prints_hostile_paths_and_names_as_typed(tiny_release, bad_module, tmp_path):
    out = tmp_path / "s[/]\x1b[31m"
    result = runner.invoke(app, ["run", f"{bad_module}:closure", "--data", str(tiny_release),
                                 "--out", str(out), "--name", "[bold]x[/]"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "wrote " in result.output
    assert "s[/]\\x1b[31m" in result.output
