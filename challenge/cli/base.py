"""The typer application and the one place that turns user errors into exit code 2.

Command modules (``challenge.cli.release``, ``challenge.cli.scoring``, ...) register their
commands on :data:`app`; ``challenge.cli`` imports them all. Library code raises
:class:`BlendbenchError`; only this layer prints and exits.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys

import typer
from rich.console import Console
from rich.text import Text

from challenge.contract.errors import BlendbenchError

app = typer.Typer(
    name="blendbench",
    help="blendbench: a frozen benchmark for the photometry of blended galaxy pairs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# C0 controls but tab and newline, DEL, C1 controls (ESC starts ANSI sequences, CR rewrites lines)
_CONTROL = re.compile(  # ... and the invisible format ones that reorder text (bidi, zero-width)
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def plain(text: object) -> str:
    """``str(text)`` with every control character shown as an escape (``\\x1b``), never sent raw."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], str(text))


class PlainConsole(Console):
    """A rich console that prints every string as plain text.

    Text from users (submission names, release attributes, column names, paths) reaches the
    terminal as typed: no rich markup (``foo[/]``, ``[central, companion]``), no emoji codes, no
    raw control characters (ANSI escapes are shown as ``\\x1b``). Styles are given as ``style=``
    or with :func:`styled`, never as markup.
    """

    def render_str(self, text: str, **kwargs) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(plain(text), **kwargs)


def styled(label: str, style: str, message: object) -> Text:
    """``label`` in ``style``, a space and ``message`` as plain text (control characters shown)."""
    return Text.assemble((plain(label), style), " ", plain(message))


console = PlainConsole(soft_wrap=True, markup=False, emoji=False)
err_console = PlainConsole(stderr=True, markup=False, emoji=False)


def take_interrupts() -> None:
    """Give Ctrl-C back to Python (KeyboardInterrupt) once a command starts: while the command
    was importing, ``challenge`` answered it with one line and exit code 130."""
    import signal

    import challenge

    handler = getattr(challenge, "_starting_interrupt", None)
    if handler is not None and signal.getsignal(signal.SIGINT) is handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def user_errors(func):
    """Decorator for commands: a BlendbenchError becomes one line on stderr and exit code 2;
    Ctrl-C one line (``interrupted``, and what the command left when it says so: raise
    ``KeyboardInterrupt("nothing was written to OUT")``) and exit code 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        take_interrupts()
        try:
            return func(*args, **kwargs)
        except BlendbenchError as err:
            err_console.print(styled("error:", "bold red", err), highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt as err:
            detail = str(err.args[0]) if err.args else ""
            err_console.print(f"interrupted; {detail}" if detail else "interrupted",
                              highlight=False, soft_wrap=True)
            sys.exit(130)

    wrapper.__doc__ = unwrap_help(func.__doc__)
    return wrapper


def unwrap_help(doc: str | None) -> str | None:
    """A docstring as help text: its hard-wrapped lines joined into paragraphs.

    typer's rich help keeps every single line break, so a docstring wrapped at 100 columns was cut
    mid-sentence at 80. Blank lines still separate paragraphs; lines starting a list item
    (``-``, ``*``, ``•``) stay on their own line.
    """
    if not doc:
        return doc
    paragraphs = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in para.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ", "• ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _version(value: bool) -> None:
    if value:
        from challenge import __version__

        typer.echo(f"blendbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """blendbench: a frozen benchmark for the photometry of blended galaxy pairs."""
    take_interrupts()


def _no_bool_metavar() -> None:
    """Flags (``--resume``, ``--help``) take no value: show no ``<bool>`` type in the help."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - typer moved it
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_no_bool_metavar()
