"""Budget: scoring 5,000 blends with masks, all bins, 1,000 resamples <= 2 s.

Run with ``pytest tests/benchmarks --benchmarks``. The timed call is what ``blendbench score``
does: read predictions.h5 (gzip masks), load the release truth (streaming test_truth.h5 masks),
score overall + bins + bootstrap.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.table import Table

from challenge.contract.release import MORPHOLOGIES, ReleaseInfo, ReleaseSpec
from challenge.contract.submission import read_submission
from challenge.scoring.scores import load_truth, score

N, SIZE = 5000, 128


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    rng = np.random.default_rng(0)
    spec = ReleaseSpec(name="speed", n_blends={"train": 0, "val": 0, "test": N})
    (root / "release.toml").write_text(
        ReleaseInfo(spec=spec, counts={"test": N}, fingerprints={}).to_toml()
    )
    ids = 10_000 + np.arange(N, dtype=np.int64)
    mag = rng.uniform(18, 23.5, (N, 2))
    flux = 10 ** (-0.4 * (mag - spec.zero_point))
    dx, dy = rng.integers(-30, 31, N), rng.integers(-30, 31, N)
    r_e = rng.uniform(2, 12, (N, 2))
    morph = np.array(MORPHOLOGIES)[rng.integers(0, 4, (N, 2))]
    Table(
        {
            "blend_id": ids,
            "central_id": np.arange(N),
            "companion_id": np.arange(N),
            "dx": dx,
            "dy": dy,
            "mag_central": mag[:, 0],
            "mag_companion": mag[:, 1],
            "flux_central": flux[:, 0],
            "flux_companion": flux[:, 1],
            "r_e_central": r_e[:, 0],
            "r_e_companion": r_e[:, 1],
            "morph_central": morph[:, 0],
            "morph_companion": morph[:, 1],
            "distance_px": np.hypot(dx, dy),
            "noise_seed": np.arange(N),
        }
    ).write(root / "pairs_test.ecsv", format="ascii.ecsv")
    yy, xx = np.ogrid[:SIZE, :SIZE]
    c = SIZE // 2
    masks = np.zeros((N, 2, SIZE, SIZE), np.uint8)
    for i in range(N):
        masks[i, 0] = (yy - c) ** 2 + (xx - c) ** 2 < (1.5 * r_e[i, 0]) ** 2
        masks[i, 1] = (yy - c - dy[i]) ** 2 + (xx - c - dx[i]) ** 2 < (1.5 * r_e[i, 1]) ** 2
    opts = {"chunks": (64, 2, SIZE, SIZE), "compression": "gzip"}
    with h5py.File(root / "test_truth.h5", "w") as f:
        f["blend_id"] = ids
        f["flux"] = flux
        f.create_dataset("masks", data=masks, **opts)
    pred = flux * rng.lognormal(0, 0.1, flux.shape)
    pred[rng.random(pred.shape) < 0.03] = 0
    with h5py.File(root / "predictions.h5", "w") as f:
        perm = rng.permutation(N)
        f["blend_id"] = ids[perm]
        f["flux"] = pred[perm]
        f.create_dataset("masks", data=np.roll(masks, 1, axis=-1)[perm], **opts)
        f.attrs["release"] = "speed"
    return root


def test_score_5000_blends_with_masks(benchmark, files):
    def run():
        return score(read_submission(files / "predictions.h5"), load_truth(files), n_boot=1000)

    sc = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert sc.overall["both"]["n"] == 2 * N and "iou" in sc.overall["both"]
    assert sc.ci95["both"]["nmad"][0] < sc.ci95["both"]["nmad"][1]
    assert benchmark.stats.stats.median <= 2.0
