"""Budget: `blendbench --help` answers within 1 s (the CLI imports the library lazily).

Run with ``pytest tests/benchmarks --benchmarks``. Each round is a fresh process, as a user's
command is: interpreter start, the typer skin and its command modules, the help text.
"""

from __future__ import annotations

import shutil
import subprocess
import sys


def _help() -> str:
    blendbench = shutil.which("blendbench")
    command = [blendbench] if blendbench else [sys.executable, "-m", "challenge.cli"]
    return subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout


def test_help_within_one_second(benchmark):
    out = benchmark.pedantic(_help, rounds=5, iterations=1, warmup_rounds=1)
    assert "Usage: blendbench" in out
    assert benchmark.stats["median"] <= 1.0
