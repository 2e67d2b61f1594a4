"""Where a release's submissions and leaderboard live.

Two places hold submissions for a release named ``R``:

- the **references**, ``submissions/R/<method>/`` in the repository: the kit's reference methods,
  committed and rebuilt only by ``blendbench references``;
- the user's **workspace**, ``<release folder>/submissions/<method>/`` (for a shipped release
  scored by name, ``releases/R/submissions/``), where ``blendbench run`` and ``blendbench
  baseline`` write by default. The leaderboard goes to ``<release folder>/leaderboard/``.

So working on ``releases/mini`` never writes over the committed files of ``v1``: nothing but
``blendbench references`` writes into ``submissions/`` or ``leaderboard/`` by default, and a
folder that already holds another release's submission or leaderboard is never replaced
(:func:`check_replace`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from challenge.contract._compat import tomllib
from challenge.contract.errors import ReleaseError

REPOSITORY = Path(__file__).resolve().parents[2]
"""The repository root when the kit runs from a clone (an editable install)."""

REFERENCES = REPOSITORY / "submissions"
"""``submissions/<release>/<method>/``: the committed reference submissions."""

BOARDS = REPOSITORY / "leaderboard"
"""``leaderboard/<release>/``: the committed reference leaderboards (and ``robustness/``)."""


def release_name(data: str | Path) -> str:
    """The name of the release in a folder, or ``data`` itself for a shipped release's name."""
    from challenge.contract.release import resolve_release

    return resolve_release(data)[1].spec.name


def workspace(data: str | Path) -> Path:
    """The user's folder for a release: the release folder itself, or ``releases/NAME`` when
    ``data`` is the name of a shipped release."""
    path = Path(data)
    if (path / "release.toml").is_file():
        return path
    return Path("releases") / release_name(data)


def submissions_dir(data: str | Path) -> Path:
    """``<workspace>/submissions``: where a user's submission folders go by default."""
    return workspace(data) / "submissions"


def submission_out(data: str | Path, method: str) -> Path:
    """The default folder of one method's submission on ``data``."""
    return submissions_dir(data) / method


def leaderboard_dir(data: str | Path) -> Path:
    """``<workspace>/leaderboard``: where a user's leaderboard goes by default."""
    return workspace(data) / "leaderboard"


def references_dir(release: str) -> Path | None:
    """``submissions/<release>/`` of the repository, or None where there is none (an install
    from a wheel ships no references)."""
    path = REFERENCES / release
    return path if path.is_dir() else None


def is_reference_folder(folder: Path) -> bool:
    """Whether ``folder`` lies inside the repository's committed ``submissions/``."""
    try:
        folder.resolve().relative_to(REFERENCES.resolve())
    except ValueError:
        return False
    return True


def _declared_release(path: Path) -> str | None:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    value = doc.get("release")
    return value if isinstance(value, str) else None


def check_replace(out: Path, release: str) -> None:
    """Refuse to write release ``release``'s files into ``out`` when ``out`` holds another
    release's submission (``submission.toml``) or leaderboard (``leaderboard.csv``).

    Raises:
        ReleaseError: one line naming the folder, the release it holds and the fix.
    """
    held, what = None, "submission"
    if (out / "submission.toml").is_file():
        held = _declared_release(out / "submission.toml")
    elif (out / "leaderboard.csv").is_file():
        what = "leaderboard"
        try:
            with open(out / "leaderboard.csv", encoding="utf-8", newline="") as f:
                rows = csv.reader(f)
                header, first = next(rows, []), next(rows, [])
            if "release" in header and len(first) == len(header):
                held = first[header.index("release")]
        except (OSError, UnicodeDecodeError, csv.Error):
            held = None
    if held is not None and held != release:
        fix = Path("releases") / release / ("submissions" if what == "submission" else what)
        raise ReleaseError(f"{out}: holds the {what} of release {held!r}, not {release!r}; write "
                           f"{release}'s elsewhere (--out), e.g. under {fix}")
