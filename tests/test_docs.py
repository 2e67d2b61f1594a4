"""The documentation site builds without a warning (the command of docs/conf.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[test]')")
    pytest.importorskip("myst_parser",
                        reason="myst-parser is not installed (pip install -e '.[test]')")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"sphinx exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    for page in ("index.html", "contract.html"):
        assert (out / page).is_file(), f"{page} was not built"
