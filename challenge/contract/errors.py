"""The kit's exceptions.

Raise a subclass of :class:`BlendbenchError` for anything a user can fix (a bad option, a bad
file, a missing optional dependency); the CLI prints its message on one line and exits with code
2. Programming errors stay ordinary Python exceptions. Each message names the file, the field,
what was expected, what was given and the fix.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class BlendbenchError(Exception):
    """A user-facing error; the CLI prints ``str(err)`` and exits with code 2."""


class ReleaseError(BlendbenchError, ValueError):
    """A release name, folder or file is unknown, unwritable, missing or corrupted."""


class SourceError(BlendbenchError, ValueError):
    """A galaxy source (catalogue, stamps, options) cannot be read or is inconsistent."""


class SubmissionError(BlendbenchError, ValueError):
    """A prediction file or its metadata breaks the submission contract.

    ``field`` names the offending dataset / column / attribute (or ``None``).
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class OutputError(BlendbenchError, ValueError):
    """An output file cannot be written as asked (unknown format, unwritable place)."""


class MissingExtraError(BlendbenchError, ImportError):
    """A feature needs an optional extra (``cnn``, ``peers``) that is not installed.

    ``extra`` names the extra; the message says how to install it.
    """

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


def install_hint(extra: str) -> str:
    """The command that installs an optional extra into a clone of the project."""
    return f"pip install -e '.[{extra}]'"


def import_extra(module: str, extra: str, needed_by: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the ``extra`` to install.

    Args:
        module: dotted module name, e.g. ``"baselines.cnn.train"`` or ``"photutils"``.
        extra: the optional extra that provides it (``"cnn"``, ``"peers"``).
        needed_by: what needs it, for the message (``"blendbench train"``, ``"the photutils
            baseline"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = getattr(err, "name", None) or module.split(".")[0]
        if missing.split(".")[0] in ("challenge", "baselines"):
            raise  # a bug in the kit, not a missing extra
        raise MissingExtraError(
            f"{needed_by} needs {missing.split('.')[0]!r}, which is not installed ({err}); "
            f"install the optional [{extra}] extra: {install_hint(extra)}",
            extra,
        ) from None
