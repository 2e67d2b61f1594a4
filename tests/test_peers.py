"""Peer deblenders (photutils, scarlet2): analytic blends, the lone-detection rule, fit failures
and checkpoint resume. Skipped when the optional ``peers`` extra is not installed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from baselines.sep_baseline import assign_sources
from challenge.loaders.protocol import Batch, Context

SKY_SIGMA = 0.012  # counts/px, as the v1 release
SIZE = 128
PSF_FWHM_PX = 3.0


def gaussian_psf(fwhm_px: float = PSF_FWHM_PX, size: int = 33) -> np.ndarray:
    """(size, size) unit-sum circular Gaussian PSF."""
    sigma = fwhm_px / 2.3548
    r = np.arange(size) - size // 2
    psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return (psf / psf.sum()).astype(np.float32)


def gaussian_image(sources, seed: int = 0, noise: float = SKY_SIGMA) -> np.ndarray:
    """(128, 128) image of PSF-convolved circular Gaussians plus white noise.

    ``sources``: list of (x, y, flux counts, sigma px) before the PSF; the convolved σ is
    the quadrature sum with the PSF σ, so the image is analytic.
    """
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    image = np.zeros((SIZE, SIZE))
    psf_sigma = PSF_FWHM_PX / 2.3548
    for x, y, flux, sigma in sources:
        s2 = sigma**2 + psf_sigma**2
        image += flux / (2 * np.pi * s2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s2))
    image += np.random.default_rng(seed).normal(0, noise, image.shape)
    return image.astype(np.float32)


def context(tmp_path=None) -> Context:
    return Context("synthetic", tmp_path, SIZE, 0.06, 25.96, SKY_SIGMA, 0.18, gaussian_psf())


TWO = [(64, 64, 60.0, 3.0), (90, 50, 30.0, 2.5)]  # 30 px apart: well separated


def batch_of(images, r_e=5.0) -> Batch:
    images = np.asarray(images)
    return Batch(np.arange(len(images)), images, np.full(len(images), r_e))


def test_assign_sources_rules():
    x, y, f = np.array([64.0, 80.0, 40.0]), np.array([65.0, 64.0, 64.0]), np.array([1, 5, 9])
    assert assign_sources(x, y, f, 64, 64, 4.0) == (0, 2, 3)  # companion = brightest other
    assert assign_sources(x[:2], y[:2], f[:2], 64, 64, 4.0) == (0, 1, 2)
    assert assign_sources(x[:1], y[:1], f[:1], 64, 64, 4.0) == (0, -1, 0)  # 1 px <= 2 px
    assert assign_sources(x[:1], y[:1], f[:1], 64, 64, 1.0) == (-1, 0, 1)  # 1 px > 0.5 px
    assert assign_sources(x[:0], y[:0], f[:0], 64, 64, 1.0) == (-1, -1, -1)


# ---------------------------------------------------------------------------------------------
# photutils


def test_photutils_recovers_two_gaussians():
    pytest.importorskip("photutils", reason="the photutils peer needs the peers extra")
    from baselines.photutils_method import photutils_method

    out = photutils_method(batch_of([gaussian_image(TWO)]), context())
    assert out["detection"][0] == 2
    np.testing.assert_allclose(out["flux"][0], [60.0, 30.0], rtol=0.03)
    masks = out["masks"][0]
    assert masks[0, 64, 64] == 1 and masks[1, 50, 90] == 1 and not (masks[0] & masks[1]).any()


@pytest.mark.parametrize(("offset", "r_e", "case", "slot"), [(2, 10.0, 0, 0), (2, 2.0, 1, 1)])
def test_photutils_lone_detection_follows_half_re_rule(offset, r_e, case, slot):
    pytest.importorskip("photutils", reason="the photutils peer needs the peers extra")
    from baselines.photutils_method import photutils_method

    image = gaussian_image([(64 + offset, 64, 50.0, 3.0)], seed=1)
    out = photutils_method(batch_of([image], r_e), context())
    assert out["detection"][0] == case
    assert out["flux"][0, slot] == pytest.approx(50.0, rel=0.03)
    assert out["flux"][0, 1 - slot] == 0 and out["masks"][0, 1 - slot].sum() == 0


def test_photutils_blank_image_finds_nothing():
    pytest.importorskip("photutils", reason="the photutils peer needs the peers extra")
    from baselines.photutils_method import photutils_method

    out = photutils_method(batch_of([gaussian_image([], seed=2)]), context())
    assert out["detection"][0] == -1 and np.all(out["flux"] == 0)


# ---------------------------------------------------------------------------------------------
# scarlet2

FAST = dict(n_iter=300, vmap_chunk=4, large_chunk=2)


def _scarlet():
    pytest.importorskip("jax", reason="the scarlet2 peer needs jax (peers extra)")
    pytest.importorskip("scarlet2", reason="the scarlet2 peer needs the peers extra")
    from baselines import scarlet_method

    return scarlet_method


def test_scarlet_recovers_two_gaussians():
    sm = _scarlet()
    method = sm.ScarletMethod(sm.ScarletSettings(**FAST))
    out = method(batch_of([gaussian_image(TWO)]), context())
    assert out["detection"][0] == 2 and not out["failed"][0]
    np.testing.assert_allclose(out["flux"][0], [60.0, 30.0], rtol=0.03)
    masks = out["masks"][0]
    assert masks[0, 64, 64] > 0.99 and masks[1, 50, 90] > 0.99
    assert masks[0, 5, 5] == 0  # outside the footprint


def test_scarlet_blank_image_and_failed_fit_do_not_crash(monkeypatch):
    sm = _scarlet()
    settings = sm.ScarletSettings(**FAST)
    method = sm.ScarletMethod(settings)
    blank, pair = gaussian_image([], seed=3), gaussian_image(TWO, seed=4)
    out = method(batch_of([blank]), context())
    assert out["detection"][0] == -1 and np.all(out["flux"] == 0) and not out["failed"][0]

    def diverging_fit(side, psf_key, psf_shape, sky_sigma, settings):
        """A fit that ends in NaN, as a diverged optimisation does."""

        def fit(params, active, data):
            m = len(active)
            nan = {k: np.full_like(v, np.nan) for k, v in params.items()}
            return (
                nan,
                np.full((m, settings.n_iter), np.nan),
                np.full((m, 2), np.nan),
                (np.full((m, 2, side, side), np.nan)),
            )

        return fit

    monkeypatch.setattr(sm, "_compiled_fit", diverging_fit)
    out = method(batch_of([pair, blank]), context())
    assert out["failed"].tolist() == [True, False]  # flagged; the blank one never fitted
    assert np.all(np.isfinite(out["flux"])) and np.all(np.isfinite(out["masks"]))
    np.testing.assert_allclose(out["flux"][0], [60.0, 30.0], rtol=0.05)  # sep's fluxes
    assert out["masks"][0, 0, 64, 64] == 1 and out["masks"][0, 1, 50, 90] == 1


def test_scarlet_resume_matches_uninterrupted_run(tiny_release, tmp_path):
    sm = _scarlet()
    settings = sm.ScarletSettings(**FAST)
    kw = dict(batch_size=4, settings=settings, limit=12)
    full, _ = sm.run_scarlet_baseline(tiny_release, tmp_path / "full", **kw)
    assert full is not None and len(full["flux"]) == 12

    part, _ = sm.run_scarlet_baseline(tiny_release, tmp_path / "part", max_batches=2, **kw)
    assert part is None  # stopped: 2 of 3 batches checkpointed, nothing written
    assert len(list((tmp_path / "part" / "checkpoints").glob("batch_*.npz"))) == 2
    assert not (tmp_path / "part" / "predictions.h5").exists()
    resumed, _ = sm.run_scarlet_baseline(tiny_release, tmp_path / "part", resume=True, **kw)

    for key in ("flux", "masks", "detection", "failed"):
        np.testing.assert_array_equal(resumed[key], full[key])
    with h5py.File(tmp_path / "full" / "predictions.h5") as a:
        with h5py.File(tmp_path / "part" / "predictions.h5") as b:
            np.testing.assert_array_equal(a["flux"][:], b["flux"][:])
            np.testing.assert_array_equal(a["masks"][:], b["masks"][:])
    assert not (tmp_path / "part" / "checkpoints").exists()  # removed once written

    # Resuming with other settings is refused, naming what changed.
    sm.run_scarlet_baseline(tiny_release, tmp_path / "other", max_batches=1, **kw)
    other = dict(kw, settings=sm.ScarletSettings(**{**FAST, "n_iter": 50}))
    with pytest.raises(sm.CheckpointError, match="settings"):
        sm.run_scarlet_baseline(tiny_release, tmp_path / "other", resume=True, **other)


def test_missing_dependency_names_the_extra(monkeypatch):
    import sys

    from baselines.peers import PeerDependencyError, import_peer

    monkeypatch.setitem(sys.modules, "scarlet2", None)  # makes `import scarlet2` fail
    with pytest.raises(PeerDependencyError, match=r"pip install -e '\.\[peers\]'"):
        import_peer("scarlet2", "scarlet2")
