"""blendbench: an open benchmark for the photometry of blended galaxy pairs.

After Boucaud et al. 2019, MNRAS 491, 2481, "Photometry of high-redshift blended galaxies using
deep learning". The package follows the data flow of the benchmark, one subpackage per part, each
importing only the parts before it:

``contract`` (errors, the release spec and file layout, the submission format)
-> ``pipeline`` (sources -> catalogue -> split -> pairs -> blending -> release files)
-> ``loaders`` (lazy numpy access, PyTorch / TensorFlow / JAX adapters, the method protocol)
-> ``scoring`` (metrics, scores, the Evaluator) -> ``reports`` (leaderboard, figures, tracks)
-> ``cli`` (the ``blendbench`` command, a thin skin over all of them).

The public names below are imported from here (``from challenge import Evaluator``); each is
loaded on first use, so ``import challenge`` stays cheap::

    from challenge import Evaluator, load_release

    train = load_release("releases/v1", "train")         # lazy numpy, .to_torch(), .to_tf()
    scores = Evaluator("v1").eval(blend_id, flux)        # as `blendbench score --json`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def _quiet_interrupt_while_starting() -> Any:
    """For the ``blendbench`` command only: Ctrl-C while it is still importing prints one line
    and exits with code 130, instead of a KeyboardInterrupt traceback from deep in an import.

    Returns the handler installed (None for a library import, a worker process, or a program that
    set its own); :func:`challenge.cli.base.take_interrupts` puts Python's back once a command
    starts, so commands clean up after Ctrl-C as usual.
    """
    import os
    import signal
    import sys

    argv = list(getattr(sys, "orig_argv", sys.argv))
    command = os.path.basename(sys.argv[0]) if sys.argv else ""
    as_module = any(argv[i : i + 2] == ["-m", "challenge.cli"] for i in range(len(argv)))
    multiprocessing = sys.modules.get("multiprocessing")
    if not (command in ("blendbench", "blendbench.exe") or as_module) or (
        multiprocessing is not None and multiprocessing.parent_process() is not None
    ):
        return None

    def interrupted(signum, frame):
        os.write(2, b"interrupted while starting; nothing was done\n")
        os._exit(130)

    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None
        signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread
        return None
    return interrupted


_starting_interrupt = _quiet_interrupt_while_starting()

_EXPORTS = {
    # the contract
    "BlendbenchError": "challenge.contract.errors",
    "MissingExtraError": "challenge.contract.errors",
    "OutputError": "challenge.contract.errors",
    "ReleaseError": "challenge.contract.errors",
    "SourceError": "challenge.contract.errors",
    "SubmissionError": "challenge.contract.errors",
    "DEFAULT_SEED": "challenge.contract.release",
    "PRESETS": "challenge.contract.release",
    "ReleaseInfo": "challenge.contract.release",
    "ReleaseSpec": "challenge.contract.release",
    "preset": "challenge.contract.release",
    "resolve_release": "challenge.contract.release",
    "FORMAT_HELP": "challenge.contract.submission",
    "Submission": "challenge.contract.submission",
    "read_submission": "challenge.contract.submission",
    "submission_from_arrays": "challenge.contract.submission",
    "SubmissionMetadata": "challenge.contract.submission_folder",
    "write_submission": "challenge.contract.submission_folder",
    # the release pipeline
    "export_blends": "challenge.pipeline.files",
    "generate_release": "challenge.pipeline.files",
    "verify_release": "challenge.pipeline.files",
    # loaders and the method protocol
    "ReleaseSplit": "challenge.loaders.release",
    "load_release": "challenge.loaders.release",
    "Batch": "challenge.loaders.protocol",
    "Context": "challenge.loaders.protocol",
    "MethodError": "challenge.loaders.protocol",
    "release_context": "challenge.loaders.protocol",
    "run_method": "challenge.loaders.protocol",
    # scoring and reports
    "Evaluator": "challenge.scoring.evaluator",
    "per_galaxy_table": "challenge.scoring.evaluator",
    "Score": "challenge.scoring.scores",
    "Truth": "challenge.scoring.scores",
    "compare": "challenge.scoring.scores",
    "load_truth": "challenge.scoring.scores",
    "score": "challenge.scoring.scores",
    "build_leaderboard": "challenge.reports.leaderboard",
    "build_robustness": "challenge.reports.robustness",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'challenge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from challenge.contract.errors import (
        BlendbenchError,
        MissingExtraError,
        OutputError,
        ReleaseError,
        SourceError,
        SubmissionError,
    )
    from challenge.contract.release import (
        DEFAULT_SEED,
        PRESETS,
        ReleaseInfo,
        ReleaseSpec,
        preset,
        resolve_release,
    )
    from challenge.contract.submission import (
        FORMAT_HELP,
        Submission,
        read_submission,
        submission_from_arrays,
    )
    from challenge.contract.submission_folder import SubmissionMetadata, write_submission
    from challenge.loaders.protocol import Batch, Context, MethodError, release_context, run_method
    from challenge.loaders.release import ReleaseSplit, load_release
    from challenge.pipeline.files import export_blends, generate_release, verify_release
    from challenge.reports.leaderboard import build_leaderboard
    from challenge.reports.robustness import build_robustness
    from challenge.scoring.evaluator import Evaluator, per_galaxy_table
    from challenge.scoring.scores import Score, Truth, compare, load_truth, score
