"""The CNN baselines: paper sizes, augmentation, training, resume, CLI, other Keras backends."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import h5py
import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from baselines.cnn.configs import get_config
from baselines.cnn.data import BlendDataset, dihedral, reflect
from baselines.cnn.models import build_blend2flux, build_model
from baselines.cnn.predict import WeightsError, load_trained, predict_images
from baselines.cnn.train import TrainingError, flux_ape, read_history, train_cnn
from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.submission import read_submission

# Every re-observation step on a share of the blends (the shares of compact-robust-deep).
DEEP_ROBUST_AUGMENTATION = {"resample_fraction": 0.35, "faint_fraction": 0.35,
                            "noise_fraction": 0.75, "noise_factor": 5.0, "clump_fraction": 0.25}
PAPER_COUNTS = {64: (1_605_458, 1.6), 256: (25_670_978, 25.7), 512: (102_673_026, 102.7)}


@pytest.mark.parametrize("first_filters", sorted(PAPER_COUNTS))
def test_paper_blend2flux_parameter_counts(first_filters):
    exact, millions = PAPER_COUNTS[first_filters]
    model = build_blend2flux((128, 128, 1), first_filters=first_filters)
    assert model.count_params() == exact
    assert round(model.count_params() / 1e6, 1) == millions
    keras.backend.clear_session()


def test_paper_configs_build_the_paper_sizes():
    model = build_model(get_config("blend2flux", "paper"))
    assert model.count_params() == PAPER_COUNTS[256][0]
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------
# augmentation


def test_dihedral_transforms_keep_the_centre_and_are_distinct():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(128, 128))
    seen = set()
    for k in range(8):
        t = dihedral(image, k)
        assert t[64, 64] == image[64, 64]
        np.testing.assert_array_equal(dihedral(t, k, inverse=True), image)
        seen.add(t.tobytes())
    assert len(seen) == 8
    # a mirror maps pixel (64 + d) to (64 - d); np.flip alone would centre it on 63.5
    assert reflect(image, 0)[64 + 5, 10] == image[64 - 5, 10]
    assert np.flip(image, 0)[64, 10] != image[64, 10]


def test_in_memory_and_streamed_batches_are_identical(tiny_release):
    kwargs = {"batch_size": 16, "targets": ("masks", "flux"), "shuffle": True, "seed": 3,
              "block": 32}  # fmt: skip
    streamed = BlendDataset(tiny_release / "train.h5", in_memory=False, **kwargs)
    memory = BlendDataset(tiny_release / "train.h5", in_memory=True, **kwargs)
    assert memory.in_memory and not streamed.in_memory
    for ds in (streamed, memory):
        ds.set_epoch(2)
    for i in (0, len(memory) - 1):
        (xa, ya), (xb, yb) = streamed[i], memory[i]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["masks"], yb["masks"])
        np.testing.assert_array_equal(ya["flux"], yb["flux"])
    # an epoch's order depends only on (seed, epoch)
    memory.set_epoch(3)
    order3 = memory.order.copy()
    memory.set_epoch(2)
    assert not np.array_equal(order3, memory.order)
    np.testing.assert_array_equal(memory.order, streamed.order)
    streamed.close()
    memory.close()


def test_accelerator_dihedral_matches_numpy_and_maps_masks_back():
    from baselines.cnn.augment import dihedral_ops

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 128, 128, 2)).astype("float32")
    k = np.arange(8, dtype="int32")
    got = np.asarray(dihedral_ops(x, k))
    for j in range(8):
        np.testing.assert_array_equal(got[j], dihedral(x[j], j, axes=(0, 1)))
    np.testing.assert_array_equal(np.asarray(dihedral_ops(got, k, inverse=True)), x)


def _pure_sky(n, sigma, seed=0):
    return np.random.default_rng(seed).normal(0, sigma, (n, 128, 128, 1)).astype("float32")


def test_reobservation_keeps_flux_and_sky_noise_and_is_set_by_seed_and_epoch():
    from baselines.cnn.augment import (
        AugmentSpec,
        ReObserve,
        _gaussian_matrices,
        set_augmentation_epoch,
    )

    sigma = 0.012
    # at inference: the blends unchanged
    layer = ReObserve(AugmentSpec(resample_fraction=1, faint_fraction=1, noise_fraction=1))
    x = _pure_sky(16, sigma)
    same, log_s, k = layer(x, training=False)
    np.testing.assert_array_equal(np.asarray(same), x)
    # a broader PSF and a shift conserve a galaxy's flux and move it by the shift
    yy, xx = np.mgrid[:128, :128]
    galaxy = 50 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / (2 * 3.0**2)) / (2 * np.pi * 9)
    ky, _ = _gaussian_matrices(np.array([1.2, 1.2], "float32"), np.array([0.0, 0.5], "float32"),
                               128)  # fmt: skip
    kx, _ = _gaussian_matrices(np.array([1.2, 1.2], "float32"), np.array([0.0, 0.0], "float32"),
                               128)  # fmt: skip
    out = np.asarray(ky) @ galaxy.astype("float32") @ np.swapaxes(np.asarray(kx), 1, 2)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), galaxy.sum(), rtol=1e-4)
    assert np.all(out.max(axis=(1, 2)) < galaxy.max())  # broader
    centroid = (out * yy).sum(axis=(1, 2)) / out.sum(axis=(1, 2))
    np.testing.assert_allclose(centroid, [64.0, 64.5], atol=1e-3)
    # white sky noise, smoothed by the kernel, is brought back to sigma
    resampled = ReObserve(AugmentSpec(dihedral=False, resample_fraction=1))
    noise = np.asarray(resampled(_pure_sky(64, sigma), training=True)[0]).std()
    assert abs(noise / sigma - 1) < 0.03
    # fainter: flux scaled by s <= 1, noise still sigma
    faint = ReObserve(AugmentSpec(dihedral=False, faint_fraction=1, faint_mag=2.5))
    img, log_s, _ = faint(_pure_sky(64, sigma), training=True)
    log_s = np.asarray(log_s)
    assert np.all(log_s <= 0) and np.all(log_s >= -1.0) and log_s.std() > 0.1
    assert abs(np.asarray(img).std() / sigma - 1) < 0.03
    # noisier sky: each blend's noise between 1 and 2.5 sigma
    noisy = ReObserve(AugmentSpec(dihedral=False, noise_fraction=1, noise_factor=2.5))
    per_blend = np.asarray(noisy(_pure_sky(64, sigma), training=True)[0]).std(axis=(1, 2, 3))
    assert per_blend.min() > 0.95 * sigma and per_blend.max() < 2.6 * sigma
    assert per_blend.max() > 1.8 * sigma
    # the draws depend only on (seed, epoch)
    model = keras.Sequential([keras.Input((128, 128, 1)), layer])
    runs = []
    for epoch in (4, 4, 5):
        set_augmentation_epoch(model, seed=7, epoch=epoch)
        runs.append(np.asarray(layer(x, training=True)[0]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    keras.backend.clear_session()


def _two_galaxies():
    """(1, 128, 128, 1) two round galaxies, central on (64, 64), companion on (64, 100), no
    noise, and their (1, 128, 128, 2) footprints (disjoint discs of radius 12 px)."""
    yy, xx = np.mgrid[:128, :128]
    image = np.zeros((128, 128), "float32")
    maps = np.zeros((128, 128, 2), "float32")
    for g, (cy, cx, flux) in enumerate([(64, 64, 40.0), (64, 100, 10.0)]):
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        image += flux * np.exp(-r2 / (2 * 3.0**2)) / (2 * np.pi * 9)
        maps[..., g] = r2 <= 12**2
    return image[None, ..., None], maps[None]


def test_knots_move_light_within_each_galaxy_and_keep_its_flux():
    from baselines.cnn.augment import AugmentSpec, ReObserve, set_augmentation_epoch

    image, maps = _two_galaxies()
    x, m = np.repeat(image, 8, axis=0), np.repeat(maps, 8, axis=0)
    layer = ReObserve(AugmentSpec(dihedral=False, clump_fraction=1.0, clump_flux=(0.4, 0.6)))
    with pytest.raises(ValueError, match="segmentation maps"):
        layer(x, training=True)
    out, log_s, k = layer(x, m, training=True)
    out, log_s = np.asarray(out)[..., 0], np.asarray(log_s)
    assert np.all(log_s == 0) and np.all(np.asarray(k) == 0)  # the truth needs no mapping back
    # each galaxy keeps its flux (the knots' blur spills < 0.5% past a 20 px radius) ...
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in [(64, 64), (64, 100)]:
        near = (yy - cy) ** 2 + (xx - cx) ** 2 <= 17**2
        np.testing.assert_allclose(out[:, near].sum(axis=1), x[0, ..., 0][near].sum(), rtol=5e-3)
    # ... while its light is rearranged into knots (40-60% moved; they fall partly where the
    # light was)
    moved = np.abs(out - x[..., 0]).sum(axis=(1, 2)) / x[0].sum()
    assert np.all(moved > 0.2)
    # nothing moves where neither galaxy is (beyond the knots' blur)
    far = (np.hypot(yy - 64, xx - 64) > 22) & (np.hypot(yy - 64, xx - 100) > 22)
    assert np.abs(out[:, far]).max() < 1e-4
    # the blends of a batch get different knots, set by (seed, epoch)
    assert not np.allclose(out[0], out[1])
    runs = []
    for epoch in (3, 3, 4):
        set_augmentation_epoch(layer, seed=1, epoch=epoch)
        runs.append(np.asarray(layer(x, m, training=True)[0]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    keras.backend.clear_session()


def test_knots_bring_the_noise_back_to_its_level():
    from baselines.cnn.augment import AugmentSpec, ReObserve

    sigma = 0.012
    _, maps = _two_galaxies()
    sky = _pure_sky(32, sigma, seed=3)
    layer = ReObserve(AugmentSpec(dihedral=False, clump_fraction=1.0, clump_flux=(0.6, 0.6)),
                      seed=2)  # fmt: skip
    out = np.asarray(layer(sky, np.repeat(maps, 32, axis=0), training=True)[0])
    inside = maps[0, ..., 0] > 0
    # the footprint's pixels were scaled by 0.4 (and their light put into faint knots): the
    # noise is back to sigma, not 0.4 sigma
    assert not np.allclose(out[:, inside], sky[:, inside])
    assert abs(out[:, inside].std() / sigma - 1) < 0.05
    keras.backend.clear_session()


@pytest.mark.parametrize("power", [1.0, 0.5])
def test_knots_that_follow_the_light_keep_the_galaxy_size(power):
    from baselines.cnn.augment import AugmentSpec, ReObserve

    image, maps = _two_galaxies()  # Gaussian galaxies of sigma 3 px: <r^2> = 18 px^2
    x, m = np.repeat(image, 16, axis=0), np.repeat(maps, 16, axis=0)
    spec = AugmentSpec(dihedral=False, clump_fraction=1.0, clump_flux=(0.5, 0.5),
                       knot_light_power=power)  # fmt: skip
    out = np.asarray(ReObserve(spec, seed=4)(x, m, training=True)[0])[..., 0]
    yy, xx = np.mgrid[:128, :128]
    r2 = (yy - 64.0) ** 2 + (xx - 64.0) ** 2
    near = r2 <= 17**2

    def size(a):  # light-weighted <r^2> of the central galaxy, px^2
        return (a[..., near] * r2[near]).sum(axis=-1) / a[..., near].sum(axis=-1)

    before, after = size(x[0, ..., 0]), size(out).mean()
    # knots following the light keep the size, up to their PSF blur (half the light gains
    # 2 x 1.27^2 px^2); drawn from sqrt(light) they spread to twice the area
    if power == 1.0:
        assert abs(after - (before + 0.5 * 2 * 1.27**2)) < 0.1 * before
    else:
        assert after > 1.3 * before
    keras.backend.clear_session()


def test_kron_flux_in_the_graph_is_the_truth_procedures():
    from baselines.cnn.augment import kron_flux
    from challenge.pipeline.photometry import TRUTH, detect, subtract_background

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    images, segments, expected = [], [], []
    # (axis ratio, angle deg, scale px, profile): round to elongated, resolved to unresolved
    for q, angle, scale, profile in [(1.0, 0, 3.0, "gauss"), (0.5, 30, 4.0, "exp"),
                                     (0.3, -60, 5.0, "exp"), (0.8, 10, 1.0, "gauss")]:  # fmt: skip
        t = np.radians(angle)
        dx, dy = xx - 64.3, yy - 63.8
        u = dx * np.cos(t) + dy * np.sin(t)
        v = (-dx * np.sin(t) + dy * np.cos(t)) / q
        r = np.hypot(u, v)
        light = np.exp(-(r**2) / (2 * scale**2)) if profile == "gauss" else np.exp(-r / scale)
        image = 60 * light / light.sum() + rng.normal(0, 0.012, light.shape)
        sources = detect(image, TRUTH)
        i = int(np.argmin(sources.distance_to(64, 64)))
        images.append(subtract_background(image)[0])
        segments.append(sources.mask(i))
        expected.append(sources.flux_auto[i])
    images, segments = np.float32(images), np.float32(segments)
    ours = np.asarray(kron_flux(images, segments, np.ones_like(segments)))
    np.testing.assert_allclose(ours, expected, rtol=5e-3)


def test_knot_truth_rescales_each_knotted_galaxys_target_by_its_kron_flux_ratio():
    from baselines.cnn.augment import AugmentSpec, ReObserve, kron_flux

    image, maps = _two_galaxies()
    x, m = np.repeat(image, 8, axis=0), np.repeat(maps, 8, axis=0)
    # knots drawn uniformly over each footprint: the light spreads wider, the Kron aperture
    # grows with it and takes in more of the light
    base = AugmentSpec(dihedral=False, clump_fraction=1.0, clump_flux=(0.6, 0.6),
                       knot_light_power=0.0)  # fmt: skip
    plain = ReObserve(base, seed=3)(x, m, training=True)
    remeasured = ReObserve(replace(base, knot_truth=True), seed=3)(x, m, training=True)
    # the blends are the same draws; only the targets change, one factor per galaxy
    np.testing.assert_array_equal(np.asarray(plain[0]), np.asarray(remeasured[0]))
    assert np.asarray(plain[1]).shape == (8, 1) and np.all(np.asarray(plain[1]) == 0)
    log_s = np.asarray(remeasured[1])
    assert log_s.shape == (8, 2) and np.all(log_s > 0)
    # the factor is the Kron flux after / before, each galaxy on its own segment (which keeps
    # its light: no knot lands outside it, whatever the power)
    out = np.asarray(remeasured[0])[..., 0]
    yy, xx = np.mgrid[:128, :128]
    for cy, cx in [(64, 64), (64, 100)]:
        near = (yy - cy) ** 2 + (xx - cx) ** 2 <= 17**2
        np.testing.assert_allclose(out[:, near].sum(axis=1), x[0, ..., 0][near].sum(), rtol=5e-3)
    for g in (0, 1):
        segment, keep = m[..., g], 1.0 - m[..., 1 - g]
        ratio = np.asarray(kron_flux(out, segment, keep)) / np.asarray(
            kron_flux(x[..., 0], segment, keep))
        np.testing.assert_allclose(log_s[:, g], np.log10(ratio), atol=1e-5)
    # without knots the targets stay
    none = ReObserve(replace(base, clump_fraction=0.0, knot_truth=True), seed=3)
    assert np.all(np.asarray(none(x, m, training=True)[1]) == 0)
    keras.backend.clear_session()


@pytest.mark.parametrize("light_share", ["footprint", "isolated"])
def test_knots_of_isolated_light_also_land_where_the_galaxies_overlap(light_share):
    from baselines.cnn.augment import AugmentSpec, ReObserve

    # two round Gaussian galaxies 8 px apart whose footprints (radius 7 px) overlap
    yy, xx = np.mgrid[:128, :128]
    gal = [30 * np.exp(-0.5 * ((yy - 64) ** 2 + (xx - cx) ** 2) / 9) / (2 * np.pi * 9)
           for cx in (64, 72)]  # fmt: skip
    maps = np.stack([((yy - 64) ** 2 + (xx - cx) ** 2 <= 49) for cx in (64, 72)], axis=-1)
    shares = np.stack(gal, axis=-1) / np.maximum(gal[0] + gal[1], 1e-30)[..., None]
    fp = np.concatenate([maps, shares], axis=-1) if light_share == "isolated" else maps
    x = np.repeat((gal[0] + gal[1])[None, ..., None].astype("float32"), 64, axis=0)
    fp = np.repeat(fp[None].astype("float32"), 64, axis=0)
    spec = AugmentSpec(dihedral=False, clump_fraction=1.0, clump_flux=(1.0, 1.0),
                       clump_count=(20, 20), knot_light_power=1.0, knot_psf_sigma_px=0.5,
                       knot_light_share=light_share)  # fmt: skip
    out = np.asarray(ReObserve(spec, seed=3)(x, fp, training=True)[0])[..., 0]
    # all the light of the footprints went into knots, and no light was made or lost
    np.testing.assert_allclose(out.sum(axis=(1, 2)), x[0].sum(), rtol=1e-3)
    overlap = maps[..., 0] & maps[..., 1]
    emptied = (out[:, overlap] < 0.5 * x[0, ..., 0][overlap]).mean()
    if light_share == "isolated":  # the overlap's light moved into knots too, as elsewhere
        assert emptied > 0.5
        exclusive = maps[..., 0] & ~maps[..., 1]
        assert (out[:, exclusive] < 0.5 * x[0, ..., 0][exclusive]).mean() > 0.5
    else:  # the overlap is nobody's own: it keeps its light (knots only add to it)
        assert emptied == 0.0
    with pytest.raises(ValueError, match="knot_light_share"):
        ReObserve(AugmentSpec(clump_fraction=1.0, knot_light_share="half"))
    keras.backend.clear_session()


def test_isolated_light_is_what_each_blend_is_made_of(tiny_release, tmp_path):
    import shutil

    from baselines.cnn.data import isolated_light
    from challenge.pipeline.blending import shift_image

    with h5py.File(tiny_release / "train.h5", "r") as f:
        ids, images = f["blend_id"][:], f["images"][:]
        sky = float(f.attrs["sky_sigma"])
    light = isolated_light(tiny_release, "train", ids)
    idx = np.arange(len(ids))
    shares = light.shares(idx)
    central = light.stamps[light.rows[:, 0]]
    # the blend less the two galaxies is the sky noise alone: the right galaxies and shifts
    companion = np.stack([shift_image(light.stamps[r], int(dx), int(dy))
                          for r, (dx, dy) in zip(light.rows[:, 1], light.shifts, strict=True)])
    residual = images - central - companion
    assert abs(residual.std() / (np.sqrt(2) * sky) - 1) < 0.1
    assert np.abs(residual).max() < 7 * np.sqrt(2) * sky
    lit = (central > 0) | (companion > 0)
    np.testing.assert_allclose(shares.sum(axis=-1)[lit], 1.0, rtol=1e-5)
    np.testing.assert_allclose(shares[..., 0][central > 10 * companion], 1.0, atol=0.1)
    # a release without its pairs table: one error naming the file and the fix
    broken = tmp_path / "no-pairs"
    shutil.copytree(tiny_release, broken)
    (broken / "pairs_train.ecsv").unlink()
    with pytest.raises(ReleaseError, match=r"pairs_train.ecsv.*regenerate the release"):
        isolated_light(broken, "train", ids)
    cfg = replace(_tiny_robust(), train=replace(_tiny_robust().train, knot_psf="gaussian"))
    with pytest.raises(TrainingError, match=r"pairs_train.ecsv.*knot_light_share"):
        train_cnn(cfg, broken, tmp_path / "run", seed=0, epochs=1)
    assert not (tmp_path / "run").exists()


def _training_inputs_with_isolated_light(release):
    """(blends, footprints) of every training blend of ``release`` as the training dataset
    assembles them: the footprints are the maps, the light shares and the noiseless blend."""
    from baselines.cnn.data import BlendDataset, isolated_light

    path = release / "train.h5"
    with h5py.File(path, "r") as f:
        ids = f["blend_id"][:]
    inputs, _ = BlendDataset(path, len(ids), ("masks", "flux"), footprints=True,
                             isolated=isolated_light(release, "train", ids),
                             noiseless=True)[0]  # fmt: skip
    return inputs["blend"], inputs["footprints"]


def test_a_quieter_sky_scales_the_noise_and_keeps_the_target(tiny_release):
    from baselines.cnn.augment import AugmentSpec, ReObserve
    from baselines.cnn.models import SkyNoise

    x, footprints = _training_inputs_with_isolated_light(tiny_release)
    spec = AugmentSpec(dihedral=False, quiet_fraction=0.5, quiet_factor=0.4)
    assert spec.needs_footprints and spec.needs_isolated
    assert footprints.shape == (len(x), 128, 128, spec.footprint_channels) and \
        spec.footprint_channels == 5  # fmt: skip
    noiseless = footprints[..., 4:5]
    out, log_s, k = ReObserve(spec, seed=3)(x, footprints, training=True)
    out = np.asarray(out)
    # the noise, and only the noise, scaled by one factor per blend in [0.4, 1]
    q = ((out - noiseless) * (x - noiseless)).sum(axis=(1, 2, 3)) / np.square(
        x - noiseless).sum(axis=(1, 2, 3))  # fmt: skip
    np.testing.assert_allclose(out - noiseless, q[:, None, None, None] * (x - noiseless),
                               atol=1e-5)  # fmt: skip
    assert np.all((q > 0.4 - 1e-5) & (q < 1 + 1e-5))
    quieted = q < 0.999
    assert 0.25 < quieted.mean() < 0.75  # about quiet_fraction of the blends
    np.testing.assert_array_equal(out[~quieted], x[~quieted])
    ratio = np.asarray(SkyNoise()(out))[:, 0] / np.asarray(SkyNoise()(x))[:, 0]
    # as the network measures it (a large galaxy's own pixel-to-pixel steps stay)
    assert abs(np.median(ratio[quieted] / q[quieted]) - 1) < 0.02
    np.testing.assert_allclose(ratio[quieted], q[quieted], rtol=0.2)
    # noise never changes the target; no transform
    np.testing.assert_array_equal(np.asarray(log_s), 0.0)
    np.testing.assert_array_equal(np.asarray(k), 0)
    with pytest.raises(ValueError, match="quiet_factor"):
        ReObserve(AugmentSpec(quiet_fraction=0.3, quiet_factor=1.5))
    keras.backend.clear_session()


def test_knots_drawn_through_the_release_psf():
    from baselines.cnn.augment import AugmentSpec, ReObserve, _convolve, psf_transfer

    yy, xx = np.mgrid[-16:17, -16:17]
    psf = np.exp(-np.hypot(yy / 1.5, xx / 2.5)) * (1 + 0.2 * (xx > 0))  # asymmetric, 33 x 33
    psf /= psf.sum()
    point = np.zeros((1, 128, 128), "float32")
    point[0, 40, 70] = 2.0
    image = np.asarray(_convolve(point, psf_transfer(psf, (128, 128))))[0]
    # a point source becomes the PSF, centred on it, not mirrored
    np.testing.assert_allclose(image[24:57, 54:87], 2.0 * psf, atol=1e-6)
    assert abs(image.sum() - 2.0) < 1e-5
    spec = AugmentSpec(dihedral=False, clump_fraction=1.0, knot_psf="release")
    with pytest.raises(ValueError, match="PSF"):
        ReObserve(spec)
    with pytest.raises(ValueError, match="odd sizes"):
        psf_transfer(np.ones((32, 32)), (128, 128))
    # the knots keep each galaxy's light and are wider than Gaussian knots
    image, maps = _two_galaxies()
    x, m = np.repeat(image, 8, axis=0), np.repeat(maps, 8, axis=0)
    out = np.asarray(ReObserve(spec, seed=1, psf=psf)(x, m, training=True)[0])[..., 0]
    yy, xx = np.mgrid[:128, :128]
    near = (yy - 64) ** 2 + (xx - 64) ** 2 <= 17**2
    np.testing.assert_allclose(out[:, near].sum(axis=1), x[0, ..., 0][near].sum(), rtol=0.02)
    keras.backend.clear_session()


def test_knots_through_a_release_without_psf_is_a_clear_error(tiny_release, tmp_path):
    import shutil

    release = tmp_path / "no-psf"
    shutil.copytree(tiny_release, release)
    with h5py.File(release / "galaxies.h5", "a") as f:
        del f["psf"]
    with pytest.raises(TrainingError, match=r"galaxies.h5 'psf'.*blendbench generate"):
        train_cnn(_tiny_robust(), release, tmp_path / "run", seed=0, epochs=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("floor", [0.0, 1.0])
def test_noise_floor_reads_a_quieter_sky_in_the_training_units(floor):
    from baselines.cnn.models import SKY_SIGMA, build_model

    cfg = get_config("blend2flux", "tiny")
    cfg = replace(cfg, arch=replace(cfg.arch, noise_from_image=True, noise_floor=floor))
    sky_noise = build_model(cfg).get_layer("sky_noise")
    quiet = np.asarray(sky_noise(_pure_sky(4, SKY_SIGMA / 2, seed=5)))
    loud = np.asarray(sky_noise(_pure_sky(4, SKY_SIGMA * 2, seed=6)))
    # a noisier sky is measured either way; a quieter one is read as v1's with the floor
    np.testing.assert_allclose(loud, SKY_SIGMA * 2, rtol=0.03)
    np.testing.assert_allclose(quiet, SKY_SIGMA if floor else SKY_SIGMA / 2, rtol=0.03)
    keras.backend.clear_session()


def test_split_aperture_keeps_the_blend_flux_when_the_maps_grow(tmp_path):
    from baselines.cnn.models import MapFlux

    rng = np.random.default_rng(3)
    image = rng.uniform(0.0, 1.0, (2, 16, 16, 1)).astype("float32")
    aperture = image.sum(axis=(1, 2)) * 0.9  # (2, 1) counts
    core = np.zeros((2, 16, 16, 2), "float32")
    core[:, 2:6, 2:6, 0], core[:, 9:14, 9:14, 1] = 1.0, 1.0
    grown = core.copy()
    grown[:, 1:7, 1:7, 0], grown[:, 8:15, 8:15, 1] = 1.0, 1.0  # outskirts added to both maps
    inside = MapFlux()
    split = MapFlux(split_aperture=True)
    # inside the maps the flux grows with the maps; the split always adds up to the aperture
    before, after = (np.asarray(inside(image, maps, aperture)) for maps in (core, grown))
    assert np.all(after > before)
    for maps in (core, grown):
        ref = np.asarray(split(image, maps, aperture))
        np.testing.assert_allclose(ref.sum(axis=1, keepdims=True), aperture, rtol=1e-5)
        flux = (image * maps).sum(axis=(1, 2))
        np.testing.assert_allclose(ref[:, 0] / ref[:, 1], flux[:, 0] / flux[:, 1], rtol=1e-5)
    # an empty map still gives a usable reference: the 5% floor of the aperture flux
    empty = core.copy()
    empty[..., 1] = 0.0
    floor = np.asarray(split(image, empty, aperture))[:, 1]
    np.testing.assert_allclose(floor, 0.05 * aperture[:, 0])
    # the option is part of a saved model
    cfg = get_config("blend2mask2flux", "tiny")
    model = build_model(replace(cfg, arch=replace(cfg.arch, split_aperture=True)))
    model.save(tmp_path / "m.keras")
    assert load_trained(tmp_path / "m.keras").get_layer("map_flux").split_aperture is True
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------
# training, resume, prediction


def _tiny_robust():
    cfg = get_config("blend2flux", "tiny")
    # every step of the re-observation; knots drawn through the release's PSF, in each
    # galaxy's share of the light (the overlap included), their truth re-measured; a quieter sky
    train = replace(cfg.train, **DEEP_ROBUST_AUGMENTATION, knot_truth=True, knot_psf="release",
                    knot_light_share="isolated", quiet_fraction=0.3)  # fmt: skip
    return replace(cfg, name="tiny", arch=replace(cfg.arch, noise_from_image=True), train=train)


@pytest.mark.parametrize("robust", [False, True], ids=["dihedral", "re-observed"])
def test_training_lowers_the_loss_and_resume_continues_exactly(tiny_release, tmp_path, robust):
    cfg = _tiny_robust() if robust else get_config("blend2flux", "tiny")
    full = train_cnn(cfg, tiny_release, tmp_path / "full", seed=2, epochs=4)
    losses = [row["loss"] for row in full.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert full.record["parameters"] > 0 and full.record["wall_time_s"] > 0
    # the record names the release, never a folder of this machine
    assert str(tiny_release) not in json.dumps(full.record)
    assert (tmp_path / "full" / "model.keras").is_file()
    keras.backend.clear_session()
    train_cnn(cfg, tiny_release, tmp_path / "part", seed=2, epochs=4, time_budget_min=1e-6)
    state = json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())
    assert state["global_epoch"] == 1 and "time budget" in state["stopped"]
    keras.backend.clear_session()
    # a later call (new model, optimizer and dataset objects) runs epochs 2 to 4, exactly as the
    # uninterrupted run did
    resumed = train_cnn(cfg, tiny_release, tmp_path / "part", epochs=4, resume=True,
                        time_budget_min=60)  # fmt: skip
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert len(read_history(tmp_path / "part" / "history.csv")) == 4
    np.testing.assert_allclose([r["loss"] for r in resumed.history], losses, rtol=1e-5)
    keras.backend.clear_session()


def test_fine_tuning_starts_from_the_saved_weights_and_records_them(tiny_release, tmp_path):
    import hashlib

    from baselines.cnn.train import _load_initial_weights

    cfg = get_config("blend2flux", "tiny")
    first = train_cnn(cfg, tiny_release, tmp_path / "first", seed=3, epochs=2)
    saved = load_trained(first.model_path)
    keras.backend.clear_session()
    model = build_model(cfg)  # fresh random weights, then the saved ones
    info = _load_initial_weights(model, cfg, first.model_path)
    for a, b in zip(model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert info["sha256"] == hashlib.sha256(first.model_path.read_bytes()).hexdigest()
    assert info["wall_time_s"] == first.record["wall_time_s"]  # what the start cost
    keras.backend.clear_session()
    # the fine-tuned run starts where the first ended, not from random weights
    tuned = train_cnn(cfg, tiny_release, tmp_path / "tuned", seed=4, epochs=1,
                      init_weights=first.model_path)  # fmt: skip
    fresh = train_cnn(cfg, tiny_release, tmp_path / "fresh", seed=4, epochs=1)
    assert tuned.history[0]["loss"] < fresh.history[0]["loss"]
    assert tuned.record["init_weights"] == info
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["init_weights"] == info
    keras.backend.clear_session()
    with pytest.raises(TrainingError, match="another architecture"):
        train_cnn(get_config("blend2flux", "compact"), tiny_release, tmp_path / "big",
                  epochs=1, init_weights=first.model_path)  # fmt: skip
    assert not (tmp_path / "big").exists()  # nothing written for a run that cannot start
    with pytest.raises(WeightsError, match="not blend2mask2flux"):
        train_cnn(get_config("blend2mask2flux", "tiny"), tiny_release, tmp_path / "b2m2f",
                  epochs=1, init_weights=first.model_path)  # fmt: skip
    with pytest.raises(TrainingError, match="drop --init-weights"):
        train_cnn(cfg, tiny_release, tmp_path / "tuned", resume=True,
                  init_weights=first.model_path)  # fmt: skip
    keras.backend.clear_session()


def test_time_budget_plan_ignores_the_compiling_epoch_and_can_grow_again():
    from baselines.cnn.train import plan_epochs

    # 600 s left, first epoch 100 s (compiling), steady ones 40 s: 15 more, not 6
    assert plan_epochs(40, 1, 600, [100.0]) == 7
    assert plan_epochs(40, 2, 600, [100.0, 40.0]) == 17
    assert plan_epochs(40, 3, 560, [100.0, 40.0, 40.0]) == 17
    assert plan_epochs(12, 3, 10_000, [100.0, 40.0, 40.0]) == 12  # the config's maximum
    assert plan_epochs(40, 5, -3, [100.0, 40.0]) == 5  # out of time: stop now
    # a plan that has run to its end (its cosine at zero) is not extended, one still running is
    assert plan_epochs(40, 8, 500, [100.0, 40.0], planned=8) == 8
    assert plan_epochs(40, 7, 500, [100.0, 40.0], planned=8) == 19


def test_larger_batches_scale_the_learning_rate_by_the_square_root():
    from baselines.cnn.configs import ConfigError

    cfg = get_config("blend2flux", "compact")
    assert cfg.train.scaled_learning_rate() == pytest.approx(2e-3)
    big = cfg.with_batch_size(512)
    assert big.train.batch_size == 512
    assert big.train.scaled_learning_rate() == pytest.approx(2e-3 * 4)
    with pytest.raises(ConfigError, match="--batch-size"):
        cfg.with_batch_size(0)


@pytest.mark.parametrize("end_to_end", [True, False])
def test_flux_loss_trains_the_unet_only_end_to_end(end_to_end):
    cfg = get_config("blend2mask2flux", "tiny")
    cfg = replace(cfg, arch=replace(cfg.arch, end_to_end=end_to_end))
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    x = np.random.default_rng(1).normal(0, 0.012, (4, 128, 128, 1)).astype("float32")
    x[:, 60:69, 60:69] += 0.5
    y = {"masks": np.zeros((4, 128, 128, 2), "float32"), "flux": np.full((4, 2), 1.3, "float32")}
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss={"masks": "binary_crossentropy", "flux": flux_ape},
        loss_weights={"masks": 0.0, "flux": 1.0},  # the flux loss alone
    )

    def weights(prefix):
        return [w.numpy() for w in model.trainable_weights if w.path.startswith(prefix)]

    unet, fluxnet = weights("unet_"), weights("fluxnet_")
    assert unet and fluxnet
    model.train_on_batch(x, y)
    unet_moved = any(not np.array_equal(a, b) for a, b in zip(unet, weights("unet_"), strict=True))
    assert unet_moved == end_to_end
    assert any(not np.array_equal(a, b) for a, b in zip(fluxnet, weights("fluxnet_"), strict=True))
    keras.backend.clear_session()


def test_user_errors_name_the_file(tiny_release, tmp_path):
    with pytest.raises(TrainingError, match="train.h5"):
        train_cnn(get_config("blend2flux", "tiny"), tmp_path, tmp_path / "run")
    with pytest.raises(WeightsError, match="no such weights file"):
        load_trained(tmp_path / "missing.keras")
    with pytest.raises(TrainingError, match="no checkpoint"):
        train_cnn(get_config("blend2flux", "tiny"), tiny_release, tmp_path / "x", resume=True)


def test_cli_train_and_baseline_write_a_valid_submission(tiny_release, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, [
        "train", "blend2mask2flux", "--config", "tiny", "--data", str(tiny_release),
        "--out", str(run), "--seed", "5", "--epochs", "2", "--quiet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "parameters" in res.output
    history = read_history(run / "history.csv")
    assert [r["stage"] for r in history] == ["masks", "flux"]
    sub = tmp_path / "submissions" / "b2m2f"
    res = runner.invoke(app, [
        "baseline", "blend2mask2flux", "--weights", str(run / "model.keras"),
        "--data", str(tiny_release), "--out", str(sub), "--no-tta",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    submission = read_submission(sub)
    with h5py.File(tiny_release / "test_blends.h5") as f:
        np.testing.assert_array_equal(submission.blend_id, f["blend_id"][:])
    assert submission.flux.shape == (40, 2) and np.all(submission.flux > 0)
    assert submission.masks.shape == (40, 2, 128, 128)
    assert submission.metadata["parameters"] > 0
    assert submission.metadata["training_time_s"] > 0
    for name in ("model.keras", "history.csv", "run.json"):
        assert (sub / name).is_file()
    res = runner.invoke(
        app,
        [
            "baseline",
            "blend2flux",
            "--weights",
            str(run / "model.keras"),
            "--data",
            str(tiny_release),
            "--out",
            str(tmp_path / "s2"),
        ],
    )
    assert res.exit_code == 2 and "blend2mask2flux" in res.output
    keras.backend.clear_session()


def test_cnn_ensemble_averages_log_fluxes_and_maps(tiny_release, tmp_path):
    from baselines.cnn.predict import predict_images

    paths = []
    for seed, name in enumerate(("blend2flux", "blend2mask2flux")):
        keras.utils.set_random_seed(seed)
        path = tmp_path / f"{name}.keras"
        build_model(get_config(name, "tiny")).save(path)
        paths.append(path)
    sub = tmp_path / "ens"
    res = CliRunner().invoke(app, [
        "baseline", "cnn-ensemble", "--weights", str(paths[0]), "--weights", str(paths[1]),
        "--data", str(tiny_release), "--out", str(sub), "--no-tta",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    submission = read_submission(sub)
    with h5py.File(tiny_release / "test_blends.h5") as f:
        images, blend_id = f["images"][:], f["blend_id"][:]
    np.testing.assert_array_equal(submission.blend_id, blend_id)
    (f1, _), (f2, maps) = (predict_images(load_trained(p), images, tta=False) for p in paths)
    np.testing.assert_allclose(submission.flux, np.sqrt(f1 * f2), rtol=1e-5)
    np.testing.assert_array_equal(submission.masks, (maps >= 0.5).astype(np.uint8))
    assert submission.metadata["parameters"] == sum(load_trained(p).count_params()
                                                    for p in paths)  # fmt: skip
    one = CliRunner().invoke(app, ["baseline", "cnn-ensemble", "--weights", str(paths[0]),
                                   "--data", str(tiny_release), "--out", str(tmp_path / "one")])
    assert one.exit_code == 2 and "at least two --weights" in one.output
    assert not (tmp_path / "one").exists()
    keras.backend.clear_session()


def test_test_time_augmentation_maps_masks_back(tiny_release):
    model = build_model(get_config("blend2mask2flux", "tiny"))
    with h5py.File(tiny_release / "test_blends.h5") as f:
        images = f["images"][:4]
    flux, masks = predict_images(model, images, tta=True)
    assert flux.shape == (4, 2) and masks.shape == (4, 2, 128, 128)
    # a blend that is symmetric under all 8 transforms gives symmetric averaged maps
    sym = np.stack([dihedral(images[0], k) for k in range(8)]).mean(0)[None]
    _, m = predict_images(model, sym, tta=True)
    np.testing.assert_allclose(m[0, 0], dihedral(m[0, 0], 1), atol=1e-5)
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------------
# other backends

BACKEND_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, keras
    from baselines.cnn.configs import get_config
    from baselines.cnn.models import build_blend2flux, build_model, build_unet
    from baselines.cnn.train import flux_ape
    assert keras.backend.backend() == sys.argv[1]
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(0, 0.012, (4, 128, 128, 1)).astype("float32")
    x[:, 60:69, 60:69] += 0.5
    flux = np.log10(np.full((4, 2), 10.0, "float32"))
    masks = np.zeros((4, 128, 128, 2), "float32")
    models = {
        "paper_blend2flux": (build_blend2flux(first_filters=8), flux_ape, flux),
        "blend2flux": (build_model(get_config("blend2flux", "tiny")), flux_ape, flux),
        "unet": (build_unet(depth=2, first_filters=4), "binary_crossentropy", masks),
        "blend2mask2flux": (
            build_model(get_config("blend2mask2flux", "tiny")),
            {"masks": "binary_crossentropy", "flux": flux_ape},
            {"masks": masks, "flux": flux},
        ),
    }
    for name, (model, loss, y) in models.items():
        model.compile(keras.optimizers.Adam(1e-3), loss=loss)
        first = model.train_on_batch(x, y)
        model.save(f"{sys.argv[2]}/{name}.keras")
        again = keras.models.load_model(f"{sys.argv[2]}/{name}.keras")
        a, b = model.predict_on_batch(x), again.predict_on_batch(x)
        for p, q in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
            np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-5)
        print(name, "ok", float(np.ravel(first)[0]))
    # training with re-observation inside the compiled step, twice: the same losses
    from dataclasses import replace
    from baselines.cnn.train import train_cnn
    def robust(model):
        cfg = get_config(model, "tiny")
        return replace(cfg, arch=replace(cfg.arch, noise_from_image=True),
                       train=replace(cfg.train, **DEEP_ROBUST_AUGMENTATION))
    runs = [train_cnn(robust("blend2flux"), sys.argv[3], f"{sys.argv[2]}/robust{i}", seed=4,
                      epochs=2, limit=64) for i in range(2)]
    losses = [[row["loss"] for row in run.history] for run in runs]
    assert losses[0] == losses[1] and all(np.isfinite(losses[0])), losses
    both = train_cnn(robust("blend2mask2flux"), sys.argv[3], f"{sys.argv[2]}/robust-b2m2f",
                     seed=4, epochs=2, limit=64)
    assert [row["stage"] for row in both.history] == ["masks", "flux"]
    assert all(np.isfinite(row["loss"]) for row in both.history)
    print("re-observed", "ok", losses[0][-1])
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_models_train_save_and_load_on_other_backends(backend, tiny_release, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install {backend}); Keras backend untested")
    script = tmp_path / "run_backend.py"
    script.write_text(BACKEND_SCRIPT.replace(
        "**DEEP_ROBUST_AUGMENTATION", f"**{DEEP_ROBUST_AUGMENTATION!r}"))
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(script), backend, str(tmp_path), str(tiny_release)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" ok ") == 5
