"""Sphinx configuration of the blendbench documentation.

The pages are Markdown (MyST); the API pages are drawn from the Google-style docstrings of the
package by autodoc and napoleon. Build with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the checkout, installed or not

import challenge  # noqa: E402

project = "blendbench"
author = "blendbench contributors"
copyright = "blendbench contributors; after Boucaud et al. 2019, MNRAS 491, 2481"
version = release = challenge.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# Only the Markdown pages are documents: the figures are included by the pages, the script
# that screenshots the HTML leaderboard is code, robust-cnns.md is included by experiments.md.
exclude_patterns = ["_build", "**/_build", "leaderboard_screenshot.py", "robust-cnns.md",
                    "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_default_options = {"members": True, "show-inheritance": True}
# Defaults as written (``submissions=REFERENCES``), not as the paths of the building machine.
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"blendbench {release}"
html_static_path: list[str] = []

# --- docstrings as the pages show them -------------------------------------------------------

# |x| in prose (an absolute value) would be a reStructuredText substitution reference.
_BARS = re.compile(r"(?<![\w\\|])\|(?=\S)([^|`]*?\S)\|(?![\w|])")
_LITERAL = re.compile(r"(``.+?``)")


def _escape_bars(text: str) -> str:
    parts = _LITERAL.split(text)
    return "".join(p if k % 2 else _BARS.sub(r"\\|\1\\|", p) for k, p in enumerate(parts))


def _docstring(app, what, name, obj, options, lines) -> None:
    """Keep |x| in the package's docstrings as text (outside literal blocks and inline
    literals)."""
    block_indent = None  # the indentation of the paragraph that opened a literal block
    opened = False
    for k, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and line.strip() and indent <= block_indent:
            block_indent = None
        if opened and line.strip():
            opened = False
        if block_indent is None:
            line = _escape_bars(line)
            if line.rstrip().endswith("::"):
                block_indent, opened = indent, True
        lines[k] = line


def setup(app):
    app.connect("autodoc-process-docstring", _docstring, priority=600)  # after napoleon
