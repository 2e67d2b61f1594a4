"""Entry point of the ``blendbench`` command: imports every command module, exposes ``app``."""

from __future__ import annotations

from challenge import cli_baselines, cli_cnn, cli_demo, cli_release, cli_scoring  # noqa: F401
from challenge.cli_app import app

__all__ = ["app"]
