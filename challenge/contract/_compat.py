"""Python 3.10 support: ``tomllib`` joined the standard library in 3.11; before, ``tomli`` is the
same parser from PyPI (a dependency on 3.10 only)."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["tomllib"]
