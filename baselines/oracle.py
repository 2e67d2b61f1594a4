"""The noise-floor oracle (synthetic releases only).

For each test blend, subtract the true noiseless model of the companion (shifted as in the
blend) and measure the central with the truth procedure; subtract the central's model and measure
the companion at its shifted position. What remains is the two sky-noise fields, so the scatter
of the oracle against the truth is the floor set by noise alone: the truth itself was measured on
the isolated stamp with a different noise realisation. Masks come from the same measurements.
"""

from __future__ import annotations

import numpy as np

from challenge.pipeline.blending import shift_image
from challenge.pipeline.photometry import TRUTH, measure_central


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


class NoiseFloorOracle:
    """The oracle as a protocol method: reads the truth models from the release folder once per
    process (``galaxies.h5`` stamps and ``pairs_test.ecsv``), then calls :func:`oracle_chunk`."""

    def __init__(self) -> None:
        self._cache: tuple | None = None

    def _models(self, release_dir):
        if self._cache is None:
            import h5py

            from challenge.contract.errors import ReleaseError
            from challenge.contract.release import read_table, resolve_release

            path, info = resolve_release(release_dir)
            if info.spec.source != "synthetic":
                raise ReleaseError(
                    f"{path}: the oracle needs noiseless models, which only the synthetic source "
                    f"has (this release's source is {info.spec.source!r})"
                )
            galaxies_h5 = path / "galaxies.h5"
            if not galaxies_h5.is_file():
                raise ReleaseError(f"{galaxies_h5}: missing; generate the release to get models")
            with h5py.File(galaxies_h5, "r") as f:
                row = {int(g): i for i, g in enumerate(f["galaxy_id"][:])}
                stamps = f["stamps"][:]
            pairs = read_table(path, "pairs_test.ecsv")
            index = {int(b): i for i, b in enumerate(pairs["blend_id"])}
            self._cache = (stamps, row, pairs, index)
        return self._cache

    def __call__(self, batch, context) -> dict[str, np.ndarray]:
        stamps, row, pairs, index = self._models(context.release_dir)
        i = np.array([index[int(b)] for b in batch.blend_id])
        rows_c = np.array([row[int(g)] for g in pairs["central_id"][i]])
        rows_k = np.array([row[int(g)] for g in pairs["companion_id"][i]])
        return oracle_chunk(
            batch.images,
            stamps[rows_c],
            stamps[rows_k],
            np.asarray(pairs["dx"][i]),
            np.asarray(pairs["dy"][i]),
        )


def run_oracle(folder, out, workers: int = 1, chunk: int = 250, progress=None):
    """Run the oracle on a synthetic release's test blends and write the submission ``out``.

    Returns (outputs: flux, masks, blend_id; wall time in s).
    """
    from challenge.contract.submission_folder import SubmissionMetadata, write_submission
    from challenge.loaders.protocol import release_context, run_method

    context = release_context(folder)
    NoiseFloorOracle()._models(context.release_dir)  # fail early, before any worker starts
    run = run_method(NoiseFloorOracle(), folder, chunk, workers, progress, context)
    meta = SubmissionMetadata(
        name="oracle",
        release=context.release,
        method="noise-floor oracle: subtract the true noiseless model of the other galaxy, then "
        "measure with the truth procedure (sep, 1.5σ, FLUX_AUTO)",
        inference_time_s=round(run.seconds, 2),
        extra={"workers": workers, "uses_truth_models": True},
    )
    write_submission(out, meta, run.blend_id, run.outputs["flux"], masks=run.outputs["masks"])
    return {**run.outputs, "blend_id": run.blend_id}, run.seconds
