"""Entry point of the ``blendbench`` command: imports every command module, exposes ``app``."""

from __future__ import annotations

from challenge import (  # noqa: F401  (each module registers its commands)
    cli_baselines,
    cli_cnn,
    cli_demo,
    cli_peers,
    cli_release,
    cli_run,
    cli_scoring,
)
from challenge.cli_app import app

__all__ = ["app"]
