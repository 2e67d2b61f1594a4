"""The reference set: which methods the kit ranks as references, and the steps that rebuild them.

The references of a release ``R`` are the folders ``submissions/R/<method>/`` and their
leaderboard ``leaderboard/R/``. :func:`plan` lists, for one release, the commands that rebuild
every reference submission and then the leaderboard; :func:`run_plan` runs them in order and skips
a step whose output is already complete, so an interrupted rebuild resumes where it stopped.

The CNN references are trained on v1 only (``blendbench train``); on every release, v1 included,
their submissions are the committed v1 weights run on the release's test blends.
"""

from __future__ import annotations

import json
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
        config: the ``blendbench train`` config (or curriculum) that trains it on v1 (CNNs).
    """

    name: str
    role: str
    baseline: str
    weights: tuple[str, ...] = ()
    synthetic_only: bool = False
    config: str = ""


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
              "blend2flux", ("blend2flux",), config="compact"),
    Reference("blend2mask2flux", "the paper's blend2mask2flux (U-Net maps, then a flux net), "
              "flux loss stopped at the maps", "blend2mask2flux", ("blend2mask2flux",),
              config="compact"),
    Reference("blend2mask2flux-end-to-end", "blend2mask2flux trained end to end, the paper's "
              "scheme (ablation)", "blend2mask2flux", ("blend2mask2flux-end-to-end",),
              config="compact-end-to-end"),
    Reference("blend2flux-robust", "blend2flux trained on re-observed blends, reading each "
              "blend's noise", "blend2flux", ("blend2flux-robust",), config="robust"),
    Reference("blend2mask2flux-robust", "blend2mask2flux trained on re-observed blends, "
              "reading each blend's noise", "blend2mask2flux", ("blend2mask2flux-robust",),
              config="robust"),
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
        note: what to know about that time (a training step's epochs).
    """

    name: str
    argv: tuple[str, ...]
    output: Path
    measured_s: float | None = None
    note: str = ""

    def command(self) -> str:
        return " ".join(("blendbench", *self.argv))

    def done(self) -> bool:
        if self.output.name == "run.json":  # a training run: done when its record says so
            try:
                return json.loads(self.output.read_text())["status"] == "done"
            except (OSError, ValueError, KeyError, TypeError):
                return False
        return self.output.is_file()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _measured(folder: Path, key: str = "inference_time_s") -> float | None:
    try:
        doc = tomllib.loads((folder / "submission.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = doc.get(key)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _epochs_note(model: str, config: str) -> str:
    """The epochs a training step runs, against the time recorded for the committed weights
    (which were trained with time budgets, so for fewer epochs where a budget ran out)."""
    from baselines.cnn.configs import get_config
    from baselines.cnn.curriculum import find_curriculum

    recipe = find_curriculum(model, config)
    epochs = recipe.epochs if recipe else get_config(model, config).train.epochs
    return (f"{epochs} epochs; the time is that of the committed weights, trained with a time "
            "budget")


def plan(release: str, data: str | Path, *, submissions: Path = REFERENCES,
         boards: Path = BOARDS, weights_from: Path | None = None,
         synthetic: bool = True, maps: bool = True, train: bool = False,
         runs: Path = Path("runs") / "references") -> list[Step]:
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
        train: train the CNN references on ``data`` first (``blendbench train``, into
            ``runs/<method>/``) and run those weights, copied into their submissions, instead
            of the committed ones (v1 only: the CNNs are trained on v1).
    """
    if train and release != "v1":
        raise ReleaseError(f"{release}: the CNN references are trained on v1 only; rebuild "
                           "v1 with --train, then the other releases without it")
    weights_dir = weights_from or submissions / "v1"
    steps = []
    if train:
        weights_dir = runs
        for ref in REFERENCE_SET:
            if ref.config:
                model = ref.baseline
                steps.append(Step(f"train {ref.name}", (
                    "train", model, "--config", ref.config, "--data", str(data), "--out",
                    _shown(runs / ref.name), "--quiet"), runs / ref.name / "run.json",
                    _measured(submissions / release / ref.name, "training_time_s"),
                    _epochs_note(model, ref.config)))
    for ref in REFERENCE_SET:
        if ref.synthetic_only and not synthetic:
            continue
        out = submissions / release / ref.name
        argv = ["baseline", ref.baseline, "--data", str(data), "--out", _shown(out)]
        for member in ref.weights:
            argv += ["--weights", _shown(weights_dir / member / "model.keras")]
        if ref.weights and ref.baseline != "cnn-ensemble" and not train:
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
        argv = list(step.argv)
        run_dir = step.output.parent
        if argv[0] == "train" and run_dir.is_dir() and any(run_dir.iterdir()):
            argv.append("--resume")  # an interrupted training run continues
        proc = subprocess.run([sys.executable, "-m", "challenge.cli", *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise ReleaseError(f"{step.command()}: exit {proc.returncode}"
                               + (f": {lines[-1].strip()}" if lines else ""))
        ran = True
        report(step, "done", time.perf_counter() - start)
