"""Shift tracks: the base release's test galaxies and pairs under one changed condition.

Tracks of the small frozen ``mini`` release are made on the fly (40 test galaxies, 60 blends); the
committed v1 tracks are checked through their shipped tables only.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from astropy.table import Table

from challenge.contract.errors import ReleaseError
from challenge.contract.release import TRACK_SHIFTS, ReleaseInfo, committed_dir, preset
from challenge.pipeline.blending import shift_image
from challenge.pipeline.files import generate_release, verify_release
from challenge.pipeline.tracks import base_spec, close_bounds, moved_shifts
from challenge.scoring.scores import load_truth

N_BLENDS = 60


def mini_track(name: str, **changes):
    return dataclasses.replace(
        preset("mini"),
        name=name,
        base="mini",
        n_blends={"train": 0, "val": 0, "test": N_BLENDS},
        **changes,
    )


@pytest.fixture(scope="module")
def tracks(tmp_path_factory):
    """mini tracks: noise x2, close pairs, faint, clumpy, sharper PSF (one folder each)."""
    out = tmp_path_factory.mktemp("tracks")
    specs = {
        "noise": mini_track("mini-noise", sky_sigma=2 * preset("mini").sky_sigma),
        "close": mini_track("mini-close", max_distance_r_e=1.5),
        "faint": mini_track("mini-faint", mag_min=23.5, mag_max=25.5),
        "clumpy": mini_track("mini-clumpy", clumps=True),
        "psf": mini_track("mini-psf", psf_model="acs-f814w", psf_fwhm=0.11),
    }
    return {k: generate_release(s, out / s.name, chunk_size=16) for k, s in specs.items()}


def _test_galaxies(folder):
    table = Table.read(folder / "galaxies.ecsv", format="ascii.ecsv")
    return table[table["split"] == "test"]


def _pairs(folder):
    return Table.read(folder / "pairs_test.ecsv", format="ascii.ecsv")


def test_tracks_hold_the_base_test_galaxies_and_pairs(tracks, mini_release):
    base_gal, base_pairs = _test_galaxies(mini_release), _pairs(mini_release)[:N_BLENDS]
    for folder in tracks.values():
        gal, pairs = _test_galaxies(folder), _pairs(folder)
        assert np.array_equal(gal["galaxy_id"], base_gal["galaxy_id"])
        assert len(gal) == len(Table.read(folder / "galaxies.ecsv"))  # test galaxies only
        for col in ("blend_id", "central_id", "companion_id", "noise_seed"):
            assert np.array_equal(pairs[col], base_pairs[col]), (folder.name, col)
        assert not (folder / "train.h5").exists() and not (folder / "val.h5").exists()
        assert verify_release(folder).ok


def test_noise_track_changes_only_the_noise(tracks, mini_release):
    """Same models and noise seeds: track = model + 2 n and base = model + n, pixel by pixel."""
    folder = tracks["noise"]
    base_gal, gal = _test_galaxies(mini_release), _test_galaxies(folder)
    same = ~np.asarray(gal["redrawn"])  # redrawn: missed by the truth at twice the noise
    assert same.sum() >= len(gal) - 2
    np.testing.assert_allclose(gal["model_flux"][same], base_gal["model_flux"][same], rtol=1e-6)
    redrawn = set(np.asarray(gal["galaxy_id"])[~same].tolist())
    pairs = _pairs(folder)
    assert np.array_equal(pairs["dx"], _pairs(mini_release)["dx"][:N_BLENDS])
    with h5py.File(mini_release / "test_blends.h5") as f:
        base_images = f["images"][:N_BLENDS].astype(np.float64)
    with h5py.File(folder / "test_blends.h5") as f:
        images = f["images"][:].astype(np.float64)
    with h5py.File(folder / "galaxies.h5") as f:
        ids, stamps = f["galaxy_id"][:], f["stamps"][:].astype(np.float64)
    row = {int(g): i for i, g in enumerate(ids)}
    checked = 0
    for i in range(0, N_BLENDS, 3):
        if {int(pairs["central_id"][i]), int(pairs["companion_id"][i])} & redrawn:
            continue
        checked += 1
        c, k = row[int(pairs["central_id"][i])], row[int(pairs["companion_id"][i])]
        model = stamps[c] + shift_image(stamps[k], int(pairs["dx"][i]), int(pairs["dy"][i]))
        np.testing.assert_allclose(images[i] - model, 2 * (base_images[i] - model), atol=2e-5)
    assert checked >= 10


def test_close_track_moves_pairs_to_the_hard_end_keeping_directions(tracks, mini_release):
    pairs, base = _pairs(tracks["close"]), _pairs(mini_release)[:N_BLENDS]
    r_max = np.maximum(pairs["r_e_central"], pairs["r_e_companion"])
    assert np.all(pairs["distance_px"] <= 1.5 * r_max + 0.75)  # + rounding to the pixel grid
    assert np.all(pairs["distance_px"] >= 0.8 * r_max - 0.75)
    assert np.median(pairs["distance_px"] / r_max) < np.median(base["distance_px"] / r_max)
    angle = np.arctan2(pairs["dy"], pairs["dx"]) - np.arctan2(base["dy"], base["dx"])
    assert np.all(np.abs(np.angle(np.exp(1j * angle))) < 0.8)


def test_faint_track_keeps_each_galaxys_rank_in_the_new_range(tracks, mini_release):
    gal, base = _test_galaxies(tracks["faint"]), _test_galaxies(mini_release)
    same = ~np.asarray(gal["redrawn"])
    model_mag = 25.96 - 2.5 * np.log10(np.asarray(gal["model_flux"]))
    assert np.all(model_mag[same] > 23.45) and np.all(model_mag[same] < 25.55)
    base_mag = 25.96 - 2.5 * np.log10(np.asarray(base["model_flux"]))
    order = np.argsort(base_mag[same])
    assert np.mean(np.diff(model_mag[same][order]) > -0.05) > 0.9  # same quantile, same order
    assert np.median(gal["r_e_px"]) < np.median(base["r_e_px"])  # size-magnitude relation


def test_clumpy_track_keeps_total_flux_and_adds_knots(tracks, mini_release):
    gal, base = _test_galaxies(tracks["clumpy"]), _test_galaxies(mini_release)
    same = ~np.asarray(gal["redrawn"])
    ratio = np.asarray(gal["model_flux"])[same] / np.asarray(base["model_flux"])[same]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
    with h5py.File(tracks["clumpy"] / "galaxies.h5") as f, h5py.File(
        mini_release / "galaxies.h5"
    ) as g:
        rows = np.isin(g["galaxy_id"][:], f["galaxy_id"][:])
        clumpy, smooth = f["stamps"][:], g["stamps"][:][rows]
    # 30-60% of the flux moves into knots: a fraction of the light moves (an L1 distance), less
    # in small galaxies whose knots the PSF blurs back together.
    moved = np.abs(clumpy - smooth).sum((1, 2)) / smooth.sum((1, 2))
    assert np.all(moved[same] > 0.05) and np.median(moved[same]) > 0.25


def _axis_rms(image: np.ndarray) -> np.ndarray:
    """Light-weighted rms offset from the light's centre along x and y, px."""
    y, x = np.indices(image.shape)
    w = image / image.sum()
    return np.array([np.sqrt((w * (v - (w * v).sum()) ** 2).sum()) for v in (x, y)])


@pytest.mark.parametrize("morphology", ["disc", "bulge+disc"])
def test_knots_of_an_inclined_disc_stay_on_the_disc(morphology):
    # Seen at 75 degrees, a disc is 0.26 times as wide as long; a round cloud of knots sheared to
    # that shape keeps its area, so it must start sqrt(q) times the disc's face-on size to cover
    # the disc and not reach 1 / sqrt(q) = 2 times beyond both of its axes.
    import galsim

    from challenge.pipeline.sources.synthetic import GalaxyModel, _clumps, _profile

    disc = GalaxyModel(morphology, mag=20.0, hlr_arcsec=0.6, q=0.8, beta_deg=0.0,
                       bulge_fraction=0.2 * (morphology == "bulge+disc"),
                       inclination_deg=75.0)  # fmt: skip
    knots = dataclasses.replace(disc, clump_fraction=0.5, n_clumps=4000, clump_seed=7)

    def draw(obj):  # point-like knots need a (small) PSF to be drawn
        psf = galsim.Gaussian(sigma=0.03)
        return galsim.Convolve(obj, psf).drawImage(nx=256, ny=256, scale=0.03).array

    rms_disc = _axis_rms(draw(_profile(disc, 1.0)))
    rms_knots = _axis_rms(draw(_clumps(knots, 1.0)))
    ratio = rms_knots / rms_disc  # (along the major axis, along the minor axis)
    # a Gaussian cloud is narrower than an exponential of the same half-light radius (0.82x in
    # rms); 1 / sqrt(q) wider gives 1.6. A bulge (axis ratio 0.8) rounds a bulge+disc's light,
    # so only its major axis is compared.
    axes = 2 if morphology == "disc" else 1
    assert np.all((ratio[:axes] > 0.7) & (ratio[:axes] < 1.0)), ratio


def test_psf_track_records_a_sharper_psf(tracks, mini_release):
    with h5py.File(tracks["psf"] / "galaxies.h5") as f, h5py.File(
        mini_release / "galaxies.h5"
    ) as g:
        psf, psf0 = f["psf"][:], g["psf"][:]
    assert psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert psf.max() > 1.5 * psf0.max()
    info = ReleaseInfo.read(tracks["psf"] / "release.toml")
    assert info.spec.psf_model == "acs-f814w" and info.spec.base == "mini"


def test_track_does_not_depend_on_workers(tracks, tmp_path):
    spec = mini_track("mini-close", max_distance_r_e=1.5)
    again = generate_release(spec, tmp_path / "again", chunk_size=7, workers=2)
    a = ReleaseInfo.read(again / "release.toml").fingerprints
    b = ReleaseInfo.read(tracks["close"] / "release.toml").fingerprints
    assert a == b


def test_a_track_must_share_its_bases_slots():
    with pytest.raises(ReleaseError, match="seed differ"):
        base_spec(dataclasses.replace(mini_track("bad"), seed=1))


def test_moved_shifts_keep_relative_place_and_never_vanish():
    dx, dy = np.array([10, -3, 0]), np.array([0, 4, -2])
    lo, hi = np.array([5.0, 5.0, 2.0]), np.array([15.0, 5.0, 2.0])
    new_dx, new_dy = moved_shifts(dx, dy, (lo, hi), (lo / 10, hi / 10))
    assert (new_dx[0], new_dy[0]) == (1, 0)  # u = 0.5 of [0.5, 1.5] -> 1 px
    assert not np.any((new_dx == 0) & (new_dy == 0))
    lo_c, hi_c = close_bounds(np.array([4.0, 100.0]), np.array([2.0, 3.0]), 1.5)
    assert list(hi_c) == [6.0, 64.0] and list(lo_c) == [4.0, 0.8 * 64.0]


@pytest.mark.parametrize("name", sorted(TRACK_SHIFTS))
def test_committed_v1_tracks_match_their_specs_and_v1(name):
    folder = committed_dir(name)
    assert folder is not None
    info = ReleaseInfo.read(folder / "release.toml")
    assert info.spec == preset(name)
    truth, v1 = load_truth(name), load_truth("v1")
    assert np.array_equal(truth.blend_id, v1.blend_id[: truth.n])
    pairs, v1_pairs = _pairs(folder), _pairs(committed_dir("v1"))[: truth.n]
    assert np.array_equal(pairs["central_id"], v1_pairs["central_id"])
    assert np.array_equal(pairs["noise_seed"], v1_pairs["noise_seed"])
