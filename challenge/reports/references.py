"""The reference set: which methods the kit ranks as references, and the steps that rebuild them.

The references of a release ``R`` are the folders ``submissions/R/<method>/`` and their
leaderboard ``leaderboard/R/``. :func:`plan` lists, for one release, the commands that rebuild
every reference submission and then the leaderboard; :func:`run_plan` runs them in order and skips
a step whose output is already complete, so an interrupted rebuild resumes where it stopped.

The CNN references are trained on v1 only (``blendbench train``); on every release, v1 included,
their submissions are the committed v1 weights run on the release's test blends.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from challenge.contract._compat import tomllib
from challenge.contract.errors import ReleaseError
from challenge.contract.workspace import BOARDS, REFERENCES


@dataclass(frozen=True)
class Reference:
    """One reference method.

    Attributes:
        name: its folder and row name.
        role: what it is, in one line.
        baseline: the ``blendbench baseline`` sub-command that runs it.
        weights: the v1 references whose ``model.keras`` it reads (CNNs), in order.
        synthetic_only: needs the noiseless models of a synthetic release (the oracle).
    """

    name: str
    role: str
    baseline: str
    weights: tuple[str, ...] = ()
    synthetic_only: bool = False


REFERENCE_SET: tuple[Reference, ...] = (
    Reference("oracle", "the noise floor of the truth procedure: the true neighbour subtracted",
              "oracle", synthetic_only=True),
    Reference("sep", "SExtractor (sep), cold then hot detection, Kron fluxes; the paper's "
              "classical baseline", "sep"),
    Reference("photutils", "photutils segmentation and watershed deblending, Kron fluxes",
              "photutils"),
    Reference("scarlet2", "scarlet2: two PSF-convolved Sérsic models fitted per blend",
              "scarlet2"),
    Reference("blend2flux", "the paper's blend2flux CNN, compact CPU architecture",
              "blend2flux", ("blend2flux",)),
    Reference("blend2mask2flux", "the paper's blend2mask2flux (U-Net maps, then a flux net), "
              "flux loss stopped at the maps", "blend2mask2flux", ("blend2mask2flux",)),
    Reference("blend2mask2flux-end-to-end", "blend2mask2flux trained end to end, the paper's "
              "scheme (ablation)", "blend2mask2flux", ("blend2mask2flux-end-to-end",)),
    Reference("blend2flux-robust", "blend2flux trained on re-observed blends, reading each "
              "blend's noise", "blend2flux", ("blend2flux-robust",)),
    Reference("blend2mask2flux-robust", "blend2mask2flux trained on re-observed blends, "
              "reading each blend's noise", "blend2mask2flux", ("blend2mask2flux-robust",)),
    Reference("cnn-ensemble-robust", "mean of blend2flux-robust and blend2mask2flux-robust",
              "cnn-ensemble", ("blend2flux-robust", "blend2mask2flux-robust")),
)
NAMES = tuple(r.name for r in REFERENCE_SET)


@dataclass(frozen=True)
class Step:
    """One command of a rebuild.

    Attributes:
        name: what it makes (a method's submission, or ``leaderboard``).
        argv: the ``blendbench`` arguments.
        output: the file whose presence marks the step as done.
        measured_s: the seconds it took when the committed output was made (from its
            ``submission.toml``), or None where not recorded.
    """

    name: str
    argv: tuple[str, ...]
    output: Path
    measured_s: float | None = None

    def command(self) -> str:
        return " ".join(("blendbench", *self.argv))

    def done(self) -> bool:
        return self.output.is_file()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _measured(folder: Path) -> float | None:
    try:
        doc = tomllib.loads((folder / "submission.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = doc.get("inference_time_s")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def plan(release: str, data: str | Path, *, submissions: Path = REFERENCES,
         boards: Path = BOARDS, weights_from: Path | None = None,
         synthetic: bool = True, maps: bool = True) -> list[Step]:
    """The steps that rebuild the references of ``release`` from the release folder ``data``.

    Args:
        release: the release's name (``v1``, ``v1-psf``, ``mini``, ...).
        data: the generated release folder.
        submissions, boards: where the reference submissions (``<release>/<method>/``) and
            leaderboards (``<release>/``) go.
        weights_from: the folder of v1 reference submissions holding the CNNs' ``model.keras``
            (default ``submissions/v1``).
        synthetic: the release has noiseless models (False for real galaxies: no oracle).
        maps: keep the segmentation maps (False for the shift tracks: their report scores
            fluxes only, and the files stay small).
    """
    weights_dir = weights_from or submissions / "v1"
    steps = []
    for ref in REFERENCE_SET:
        if ref.synthetic_only and not synthetic:
            continue
        out = submissions / release / ref.name
        argv = ["baseline", ref.baseline, "--data", str(data), "--out", _shown(out)]
        for member in ref.weights:
            argv += ["--weights", _shown(weights_dir / member / "model.keras")]
        if ref.weights and ref.baseline != "cnn-ensemble":
            argv.append("--no-copy-weights")
        if not maps and ref.baseline != "blend2flux":  # blend2flux makes no maps
            argv.append("--no-maps")
        steps.append(Step(ref.name, tuple(argv), out / "predictions.h5", _measured(out)))
    board = boards / release
    steps.append(Step("leaderboard", ("leaderboard", "--data", str(data), "--references",
                                      _shown(submissions / release), "--references-only",
                                      "--out", _shown(board)), board / "leaderboard.csv"))
    return steps


def check_weights(steps: list[Step]) -> None:
    """Refuse a plan whose CNN steps name weights that are not there (one line)."""
    for step in steps:
        args = list(step.argv)
        for k, a in enumerate(args):
            if a == "--weights" and not Path(args[k + 1]).is_file():
                raise ReleaseError(f"{args[k + 1]}: no weights for the {step.name} reference; "
                                   "run from a clone of the repository, or train them with "
                                   "`blendbench train`")


def run_plan(steps: list[Step], *, force: bool = False,
             report: Callable[[Step, str, float], None] = lambda s, what, t: None) -> None:
    """Run the steps in order; a step whose output exists is skipped unless ``force``.

    The leaderboard step always runs when an earlier step ran. ``report(step, what, seconds)``
    is called with ``what`` = ``"skipped"`` or ``"done"``.

    Raises:
        ReleaseError: a step's command failed (its exit status and first error line).
    """
    ran = False
    for step in steps:
        if step.done() and not force and not (ran and step.name == "leaderboard"):
            report(step, "skipped", 0.0)
            continue
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "challenge.cli", *step.argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise ReleaseError(f"{step.command()}: exit {proc.returncode}"
                               + (f": {lines[-1].strip()}" if lines else ""))
        ran = True
        report(step, "done", time.perf_counter() - start)
