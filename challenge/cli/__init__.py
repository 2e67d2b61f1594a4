"""The ``blendbench`` command, a thin typer skin over the library: ``app`` and its commands.

``base`` holds the typer application and the one place that turns user errors into exit code 2;
each other module registers its commands on it (``release``: generate, verify, export, info,
show; ``scoring``: score, compare, leaderboard, robustness, format; ``baselines``, ``cnn``,
``peers``: the reference methods; ``run``: any method; ``demo``: the main job). Command modules
import the library inside the commands, so ``blendbench --help`` stays fast.
"""

from __future__ import annotations

from challenge.cli import (  # noqa: F401  (each module registers its commands)
    baselines,
    cnn,
    demo,
    peers,
    references,
    release,
    run,
    scoring,
)
from challenge.cli.base import app

__all__ = ["app"]
