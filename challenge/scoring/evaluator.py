"""The Python entry point for scoring: :class:`Evaluator` scores arrays in memory, and
:func:`per_galaxy_table` gives one row per galaxy, so a method's failures can be studied.

``Evaluator(release).eval(blend_id, flux)`` returns exactly the document ``blendbench score
--json`` writes (same validation, same overall / binned numbers, same bootstrap intervals);
``Evaluator.per_galaxy`` and ``blendbench score --per-galaxy FILE`` give the per-galaxy table::

    from challenge import Evaluator

    evaluator = Evaluator("v1")                 # or a generated release folder (masks -> IoU)
    print(evaluator.expected_format)            # shapes and meaning of each input
    scores = evaluator.eval(blend_id, flux)     # scores["overall"]["both"]["mape"], ...
    table = evaluator.per_galaxy(blend_id, flux)
    table[table["ape"] > 50]                    # the galaxies a method gets badly wrong
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from challenge.contract.errors import OutputError
from challenge.contract.release import DEFAULT_SEED
from challenge.contract.submission import Submission, submission_from_arrays
from challenge.scoring import metrics as M
from challenge.scoring.scores import N_BOOT, Score, bin_schemes, load_truth, score

# Table formats of the per-galaxy file, by file name ending.
TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".fit": "fits"}
ROLE_NAMES = ("central", "companion")


def per_galaxy_table(sc: Score):
    """One row per galaxy (central then companion of each blend, in the release's test order).

    Columns: ``blend_id``, ``galaxy_id`` (when the release lists it), ``role``, ``morphology``,
    ``mag`` (true, AB), ``delta_mag_pair`` (m_central - m_companion), ``distance_re`` (distance
    / R_e of this galaxy), ``flux_true`` and ``flux_pred`` (counts), ``flux_err`` (counts, when
    given), ``ape`` (|f - t| / t in %, so its mean is the MAPE), ``delta_mag`` (predicted minus
    true mag, +inf for flux <= 0), ``outlier`` (|Δmag| > 0.75), ``bin_delta_mag`` and
    ``bin_distance`` (the labels of the score's bins, "" outside), ``iou`` (when masks were
    scored; NaN where both masks are empty) and ``selected`` (only when a selection applies).

    Returns:
        an astropy ``Table`` of 2 x n_blends rows, with units, and in its meta the release,
        the method (the submission's name) and the truth kind.
    """
    from astropy.table import Table

    gal, truth = sc.galaxies, sc.truth_table
    schemes = {s.name: s for s in bin_schemes(truth)}
    cols: dict[str, Any] = {
        "blend_id": np.repeat(truth.blend_id, 2),
        **({"galaxy_id": truth.galaxy_id} if truth.galaxy_id is not None else {}),
        "role": np.tile(np.array(ROLE_NAMES), truth.n),
        "morphology": truth.morphology,
        "mag": truth.mag,
        "delta_mag_pair": np.repeat(truth.delta_mag_pair[:, None], 2, axis=1),
        "distance_re": truth.distance_re,
        "flux_true": gal.truth,
        "flux_pred": gal.flux,
        **({"flux_err": gal.flux_err} if gal.flux_err is not None else {}),
        "ape": 100 * gal.ape,
        "delta_mag": gal.dmag,
        "outlier": np.abs(gal.dmag) > M.OUTLIER_DMAG,
        "bin_delta_mag": schemes["delta_mag"].labels(),
        "bin_distance": schemes["distance"].labels(),
        **({"iou": M.iou_from_counts(*gal.counts)} if gal.counts is not None else {}),
        **({"selected": gal.selected} if not gal.selected.all() else {}),
    }
    table = Table({k: np.asarray(v).reshape(2 * truth.n) for k, v in cols.items()})
    units = {
        "mag": "mag",
        "delta_mag_pair": "mag",
        "delta_mag": "mag",
        "flux_true": "ct",
        "flux_pred": "ct",
        "flux_err": "ct",
        "ape": "%",
    }
    for name, unit in units.items():
        if name in table.colnames:
            table[name].unit = unit
    table.meta.update(release=sc.release, method=sc.submission, truth=sc.truth)
    return table


def table_format(path: str | Path) -> str:
    """The astropy format of a table file named ``path`` (``.ecsv``, ``.csv``, ``.fits``).

    Raises:
        OutputError: an unknown ending.
    """
    path = Path(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(
            f"{path}: unknown table format {path.suffix or '(no ending)'!r}; "
            f"name the file {', '.join(TABLE_FORMATS)}"
        )
    return fmt


def write_table(table, path: str | Path) -> Path:
    """Write a table as ECSV, CSV or FITS, chosen by the file's ending; atomically.

    Raises:
        OutputError: an unknown ending, or a folder that cannot be written.
    """
    path = Path(path)
    fmt = table_format(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        os.close(fd)
    except OSError as err:
        raise OutputError(
            f"{path}: cannot write there ({err.strerror}); choose another path"
        ) from None
    try:
        table.write(tmp, format=fmt, overwrite=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Evaluator:
    """Scores predictions held in memory against the test truth of a release.

    Args:
        release: a shipped release name (``"v1"``: fluxes only) or a generated release folder
            (also IoU, from its ``test_truth.h5``).
        truth: ``"sep"`` (FLUX_AUTO of the isolated galaxy, the paper's) or ``"model"``
            (noiseless model flux).
        n_boot: bootstrap resamples over blends for the 95% intervals (0: none).
        seed: bootstrap seed.

    Raises:
        ReleaseError: an unknown release or truth kind, or a folder of a frozen release whose
            test truth differs from the shipped one (the message names the file and the fix).
    """

    def __init__(
        self,
        release: str | Path = "v1",
        truth: str = "sep",
        *,
        n_boot: int = N_BOOT,
        seed: int = DEFAULT_SEED,
    ):
        self.truth = load_truth(release, truth)
        self.n_boot, self.seed = n_boot, seed

    @property
    def release(self) -> str:
        return self.truth.release

    @property
    def blend_id(self) -> np.ndarray:
        """(n_blends,) int64: the test blend ids, in the release's order."""
        return self.truth.blend_id.copy()

    @property
    def expected_format(self) -> dict[str, dict[str, Any]]:
        """What :meth:`eval` takes: for each input its shape, dtype, whether it is required
        and what it means."""
        n, size = self.truth.n, self.truth.stamp_size
        return {
            "blend_id": {
                "shape": (n,),
                "dtype": "int",
                "required": True,
                "doc": "every test blend id of the release once, in any order (Evaluator.blend_id)",
            },
            "flux": {
                "shape": (n, 2),
                "dtype": "float",
                "required": True,
                "doc": "[central, companion] flux in counts, finite; <= 0 means not detected",
            },
            "masks": {
                "shape": (n, 2, size, size),
                "dtype": "float in [0, 1] or 0/1",
                "required": False,
                "doc": "[central, companion] segmentation maps, thresholded at 0.5; give "
                "IoU (needs a generated release folder)",
            },
            "flux_err": {
                "shape": (n, 2),
                "dtype": "float",
                "required": False,
                "doc": "1-sigma flux errors in counts, > 0; give coverage, mean z, CRPS",
            },
        }

    def submission(
        self, blend_id, flux, masks=None, flux_err=None, *, name: str = "predictions"
    ) -> Submission:
        """The arrays as a checked :class:`~challenge.contract.submission.Submission`."""
        return submission_from_arrays(
            blend_id, flux, masks=masks, flux_err=flux_err, release=self.release, name=name
        )

    def score(
        self, blend_id, flux, masks=None, flux_err=None, *, name: str = "predictions"
    ) -> Score:
        """The :class:`~challenge.scoring.scores.Score` of the arrays (see :meth:`eval`)."""
        sub = self.submission(blend_id, flux, masks, flux_err, name=name)
        return score(sub, self.truth, n_boot=self.n_boot, seed=self.seed)

    def eval(
        self, blend_id, flux, masks=None, flux_err=None, *, name: str = "predictions"
    ) -> dict[str, Any]:
        """Score predictions: the document ``blendbench score --json`` writes.

        Args:
            blend_id, flux, masks, flux_err: see :attr:`expected_format`; numpy arrays or
                anything ``np.asarray`` takes (CPU tensors, lists).
            name: the method's name in the result and in error messages.

        Returns:
            ``{"release", "submission", "truth", "selection", "n_boot", "seed", "overall":
            {role: {metric: value}}, "bins": {scheme: [rows]}, "ci95": {role: {metric: [lo,
            hi]}}, "warnings"}`` with roles both / central / companion (NaN as None).

        Raises:
            SubmissionError: missing, duplicate or unknown blend ids, wrong shapes, NaN/inf.
        """
        return self.score(blend_id, flux, masks, flux_err, name=name).to_dict()

    def per_galaxy(self, blend_id, flux, masks=None, flux_err=None, *, name: str = "predictions"):
        """One row per galaxy: ids, role, truth and predicted flux, APE, Δmag, bins, IoU (an
        astropy ``Table``, see :func:`per_galaxy_table`; ``.to_pandas()`` for a DataFrame)."""
        sub = self.submission(blend_id, flux, masks, flux_err, name=name)
        return per_galaxy_table(score(sub, self.truth, n_boot=0, with_bins=False))
