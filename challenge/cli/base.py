"""The typer application and the one place that turns user errors into exit code 2.

Command modules (``challenge.cli.release``, ``challenge.cli.scoring``, ...) register their
commands on :data:`app`; ``challenge.cli`` imports them all. Library code raises
:class:`BlendbenchError`; only this layer prints and exits.
"""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.markup import escape

from challenge.contract.errors import BlendbenchError

app = typer.Typer(
    name="blendbench",
    help="blendbench: a frozen benchmark for the photometry of blended galaxy pairs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def user_errors(func):
    """Decorator for commands: a BlendbenchError becomes one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BlendbenchError as err:
            err_console.print(
                f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
            )
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted; nothing was written")
            sys.exit(130)

    return wrapper
