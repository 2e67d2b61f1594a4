"""The README's first-method walkthrough, run as a newcomer runs it, in a fresh clone.

It must rank the new method beside the mini references and leave every tracked file as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from challenge.reports.references import NAMES

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your first method on mini in five minutes"


def walkthrough() -> tuple[str, list[str]]:
    """The section's Python file and its ``blendbench`` commands, as the README gives them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    shell = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(code) == 1 and shell, "the walkthrough needs one Python block and a bash block"
    commands = [line.split("#", 1)[0].strip() for block in shell for line in block.splitlines()]
    return code[0], [c for c in commands if c.startswith("blendbench ")]


def test_the_readme_walkthrough_ranks_a_method_and_changes_no_tracked_file(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a clone of the repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    code, commands = walkthrough()
    assert [c.split()[1] for c in commands] == ["demo", "run", "leaderboard"]
    (clone / "my_method.py").write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(clone), "MPLBACKEND": "Agg"}
    for command in commands:
        argv = [sys.executable, "-m", "challenge.cli", *command.split()[1:]]
        proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    board = pd.read_csv(clone / "releases" / "mini" / "leaderboard" / "leaderboard.csv")
    mine = board[board["name"] == "nearest-two"]
    assert len(mine) == 1 and not mine["reference"].item()
    assert set(NAMES) <= set(board.loc[board["reference"], "name"])
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"tracked files changed:\n{status}"
