"""The noise-floor oracle (synthetic releases only).

For each test blend, subtract the true noiseless model of the companion (shifted as in the
blend) and measure the central with the truth procedure; subtract the central's model and measure
the companion at its shifted position. What remains is the two sky-noise fields, so the scatter
of the oracle against the truth is the floor set by noise alone: the truth itself was measured on
the isolated stamp with a different noise realisation. Masks come from the same measurements.
"""

from __future__ import annotations

import numpy as np

from challenge.blending import shift_image
from challenge.photometry import TRUTH, measure_central


def oracle_chunk(
    images: np.ndarray,
    model_central: np.ndarray,
    model_companion: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
) -> dict[str, np.ndarray]:
    """Oracle fluxes for a chunk.

    Args:
        images: (n, H, W) blends in counts.
        model_central, model_companion: (n, H, W) noiseless, unshifted models in counts.
        dx, dy: (n,) integer companion shifts in px.

    Returns flux (n, 2) counts (0 where the truth procedure finds nothing) and masks
    (n, 2, H, W) uint8.
    """
    n, h, w = images.shape
    flux = np.zeros((n, 2))
    masks = np.zeros((n, 2, h, w), np.uint8)
    for i in range(n):
        shifted = shift_image(model_companion[i], int(dx[i]), int(dy[i]))
        central = measure_central(images[i] - shifted, TRUTH)
        companion = measure_central(
            images[i] - model_central[i], TRUTH, centre=(w // 2 + dx[i], h // 2 + dy[i])
        )
        for slot, m in enumerate((central, companion)):
            if m.detected:
                flux[i, slot] = m.flux
                masks[i, slot] = m.mask
    return {"flux": flux, "masks": masks}


def run_oracle(folder, out, workers: int = 1, chunk: int = 250, progress=None):
    """Run the oracle on a synthetic release's test blends and write the submission ``out``.

    Returns (results dict with flux, masks, blend_id; wall time in s).
    """
    import time
    from pathlib import Path

    import h5py

    from baselines.blend_io import map_chunks, test_chunks, test_pairs
    from baselines.submission_io import SubmissionMetadata, write_submission
    from challenge.errors import ReleaseError
    from challenge.release import resolve_release

    path, info = resolve_release(folder)
    if info.spec.source != "synthetic":
        raise ReleaseError(
            f"{path}: the oracle needs noiseless models, which only the synthetic source has "
            f"(this release's source is {info.spec.source!r})"
        )
    galaxies_h5 = Path(path) / "galaxies.h5"
    if not galaxies_h5.is_file():
        raise ReleaseError(f"{galaxies_h5}: missing; generate the release to get the models")
    pairs = test_pairs(folder)
    with h5py.File(galaxies_h5, "r") as f:
        row = {int(g): i for i, g in enumerate(f["galaxy_id"][:])}
        stamps = f["stamps"][:]
    rows_c = np.array([row[int(g)] for g in pairs["central_id"]])
    rows_k = np.array([row[int(g)] for g in pairs["companion_id"]])
    dx, dy = np.asarray(pairs["dx"]), np.asarray(pairs["dy"])
    t0 = time.perf_counter()
    chunks = [
        (images, stamps[rows_c[sl]], stamps[rows_k[sl]], dx[sl], dy[sl])
        for sl, images in test_chunks(folder, chunk)
    ]
    result = map_chunks(oracle_chunk, chunks, workers, progress)
    elapsed = time.perf_counter() - t0
    result["blend_id"] = np.asarray(pairs["blend_id"])
    meta = SubmissionMetadata(
        name="oracle",
        release=info.spec.name,
        method="noise-floor oracle: subtract the true noiseless model of the other galaxy, then "
        "measure with the truth procedure (sep, 1.5σ, FLUX_AUTO)",
        inference_time_s=round(elapsed, 2),
        extra={"workers": workers, "uses_truth_models": True},
    )
    write_submission(out, meta, result["blend_id"], result["flux"], masks=result["masks"])
    return result, elapsed
