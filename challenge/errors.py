"""The kit's exceptions.

Raise a subclass of :class:`BlendbenchError` for anything a user can fix (a bad option, a bad
file); the CLI prints its message on one line and exits with code 2. Programming errors stay
ordinary Python exceptions. Each message names the file, the field, what was expected, what was
given and the fix.
"""

from __future__ import annotations


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
