"""The sep baseline: SExtractor as run in the paper (Boucaud et al. 2019, Sect. 3.3).

Per blend: background subtraction, extraction in *cold* mode (5σ, minarea 10, deblend_cont 0.01,
64 thresholds); if cold finds fewer than two sources, *hot* mode (4σ, 6, 1e-4, 64). The central
is the detection nearest the stamp centre, the companion the brightest (largest FLUX_AUTO) other
detection. A single detection goes to the central when it lies within 0.5 R_e,central of the
centre (R_e from the pair table, as the paper used its catalogue radius), else to the companion;
an undetected galaxy gets flux 0. Fluxes are FLUX_AUTO from the same photometry module as the
truth; masks are the sep segments.

Detection case per blend: -1 nothing found, 0 central only, 1 companion only, 2 exactly two
sources, 3 more than two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from challenge.pipeline.photometry import COLD, HOT, detect

NO_DETECTION, CENTRAL_ONLY, COMPANION_ONLY, BOTH, MORE = -1, 0, 1, 2, 3


DETECTION_CASES = {
    NO_DETECTION: "none",
    CENTRAL_ONLY: "central-only",
    COMPANION_ONLY: "companion-only",
    BOTH: "two",
    MORE: "more",
}


def detection_case_counts(detection: np.ndarray) -> dict[str, int]:
    """How many blends fall in each detection case, keyed by the case code as a string."""
    detection = np.asarray(detection)
    return {str(k): int(np.sum(detection == k)) for k in DETECTION_CASES}


def describe_cases(detection: np.ndarray) -> str:
    """One line for a terminal: ``none=11 central-only=426 ...``."""
    counts = detection_case_counts(detection)
    return " ".join(f"{name}={counts[str(k)]}" for k, name in DETECTION_CASES.items())


@dataclass(frozen=True)
class SepResult:
    """One blend: flux (2,) counts [central, companion], masks (2, H, W) uint8, detection case,
    and which mode (``cold``/``hot``) produced it."""

    flux: np.ndarray
    masks: np.ndarray
    detection: int
    mode: str


def assign_sources(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray, x0: float, y0: float, r_e_central: float
) -> tuple[int, int, int]:
    """The paper's rule for naming the detections of one blend central and companion.

    The central is the detection nearest the centre ``(x0, y0)``, the companion the brightest
    other one; a lone detection is the central when it lies within 0.5 ``r_e_central`` of the
    centre, else the companion. Shared by every detection-based method so they all follow it.

    Args:
        x, y: (n,) detection positions in px (x = column, y = row).
        flux: (n,) detection fluxes in counts (only their order matters).
        x0, y0: the stamp centre in px; r_e_central: px.

    Returns:
        (index of the central or -1, index of the companion or -1, detection case: -1 none,
        0 central only, 1 companion only, 2 exactly two, 3 more than two).
    """
    n = len(x)
    if n == 0:
        return -1, -1, NO_DETECTION
    d = np.hypot(np.asarray(x, dtype=float) - x0, np.asarray(y, dtype=float) - y0)
    if n == 1:
        if d[0] <= 0.5 * r_e_central:
            return 0, -1, CENTRAL_ONLY
        return -1, 0, COMPANION_ONLY
    central = int(np.argmin(d))
    others = np.delete(np.arange(n), central)
    companion = int(others[np.argmax(np.asarray(flux)[others])])
    return central, companion, BOTH if n == 2 else MORE


def deblend_blend(image: np.ndarray, r_e_central: float) -> SepResult:
    """Run the cold/hot sep procedure on one (H, W) blend and assign central and companion."""
    h, w = image.shape
    sources, mode = detect(image, COLD), "cold"
    if len(sources) < 2:
        sources, mode = detect(image, HOT), "hot"
    flux = np.zeros(2)
    masks = np.zeros((2, h, w), np.uint8)
    picks = assign_sources(sources.x, sources.y, sources.flux_auto, w // 2, h // 2, r_e_central)
    for slot, i in enumerate(picks[:2]):
        if i >= 0:
            flux[slot] = sources.flux_auto[i]
            masks[slot] = sources.mask(i)
    return SepResult(flux, masks, picks[2], mode)


def deblend_chunk(images: np.ndarray, r_e_central: np.ndarray) -> dict[str, np.ndarray]:
    """The sep baseline on a chunk: images (n, H, W), r_e_central (n,) px.

    Returns flux (n, 2), masks (n, 2, H, W) uint8, detection (n,) int8, hot (n,) bool.
    """
    results = [deblend_blend(img, float(r)) for img, r in zip(images, r_e_central, strict=True)]
    return {
        "flux": np.stack([r.flux for r in results]),
        "masks": np.stack([r.masks for r in results]),
        "detection": np.array([r.detection for r in results], np.int8),
        "hot": np.array([r.mode == "hot" for r in results]),
    }


def sep_method(batch, context) -> dict[str, np.ndarray]:
    """The sep baseline through the method protocol (``challenge.loaders.protocol``)."""
    return deblend_chunk(batch.images, batch.r_e_central)


def run_sep_baseline(
    folder, out, workers: int = 1, chunk: int = 250, progress=None
) -> tuple[dict[str, np.ndarray], float]:
    """Run the sep baseline on a release's test blends and write the submission folder ``out``.

    Returns (outputs: flux, masks, detection, hot, blend_id; wall time in s).
    """
    from challenge.contract.submission_folder import SubmissionMetadata, write_submission
    from challenge.loaders.protocol import run_method

    run = run_method(sep_method, folder, chunk, workers, progress)
    result = {**run.outputs, "blend_id": run.blend_id}
    meta = SubmissionMetadata(
        name="sep",
        release=run.context.release,
        method="SExtractor via sep, cold (5σ, minarea 10, deblend_cont 0.01, 64 thresholds) then "
        "hot (4σ, 6, 1e-4, 64) when cold finds < 2 sources; FLUX_AUTO; sep segments as masks",
        link="https://doi.org/10.1093/mnras/stz3056",
        inference_time_s=round(run.seconds, 2),
        extra={
            "cold": [COLD.thresh, COLD.minarea, COLD.deblend_cont, COLD.deblend_nthresh],
            "hot": [HOT.thresh, HOT.minarea, HOT.deblend_cont, HOT.deblend_nthresh],
            "workers": workers,
            "hot_mode_fraction": float(result["hot"].mean()),
            "detection_cases": detection_case_counts(result["detection"]),
        },
    )
    write_submission(
        out,
        meta,
        run.blend_id,
        result["flux"],
        masks=result["masks"],
        detection=result["detection"],
    )
    return result, run.seconds
