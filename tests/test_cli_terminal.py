"""What the CLI prints in a terminal: help at 80 columns, --version, method paths, quiet pipes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from challenge import __version__
from challenge.cli import app
from challenge.cli.baselines import with_progress
from challenge.loaders.protocol import MethodError, load_method

runner = CliRunner()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"blendbench {__version__}"


@pytest.mark.parametrize("command", [["baseline", "scarlet2"], ["baseline", "blend2flux"],
                                     ["train"], ["run"], ["score"]])
def test_help_fits_80_columns(command, columns80):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert res.exit_code == 0, res.output
    columns80(res.output)
    assert "<bool>" not in res.output  # a flag takes no value


def test_help_keeps_sentences_whole(columns80):
    res = runner.invoke(app, ["baseline", "scarlet2", "--help"], env={"COLUMNS": "80"})
    # the docstring is wrapped at 100 columns; the help reflows it instead of breaking there
    assert "masks the model fractions" in " ".join(res.output.split())
    assert not any(ln.strip() in ("masks the", "with") for ln in res.output.splitlines())
    assert "--keep-checkpoints" in res.output and "--no-keep" not in res.output


def test_run_takes_a_path_and_hints_when_a_module_is_not_importable(tmp_path, monkeypatch):
    folder = tmp_path / "some" / "folder"
    folder.mkdir(parents=True)
    (folder / "my_method_t14.py").write_text(textwrap.dedent('''
        def nearest_two(batch, context):
            return {"flux": batch.images.sum(axis=(1, 2))}
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    func = load_method("some/folder/my_method_t14.py:nearest_two")
    assert func.__name__ == "nearest_two"
    with pytest.raises(MethodError, match=r"not importable from .*path/to/absent_t14\.py:f"):
        load_method("absent_t14:f")
    with pytest.raises(MethodError, match="not a Python file"):
        load_method("some/folder/missing.py:f")


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys):
    calls = []
    assert with_progress("x", 3, lambda advance: calls.append(advance(3)) or "done") == "done"
    assert "\x1b[" not in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs the [cnn] extra")
def test_cnn_import_prints_no_tensorflow_log_lines():
    code = ("from challenge.cli.cnn import _import_cnn; "
            "_import_cnn('baselines.cnn.predict', 'test'); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    for noise in ("absl", "oneDNN", "cpu_feature_guard", "Memory patch"):
        assert noise not in res.stderr, res.stderr
