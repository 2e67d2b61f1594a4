"""Bring your own galaxies: fits-stamps folders with a declared instrument, pairing, bad input."""

import re

import galsim
import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.release import DEFAULT_SEED, ReleaseInfo, ReleaseSpec, committed_dir
from challenge.pipeline.pairs import draw_pairs, has_partner, shift_bounds
from challenge.pipeline.sources.instrument import psf_fwhm_arcsec, resample
from challenge.pipeline.sources.real import prepare_stamp, zero_padding
from challenge.pipeline.split import split_galaxies

runner = CliRunner()
ZP = 25.96


def write_stamps(
    folder,
    mags,
    *,
    scale=0.06,
    size=128,
    zero_point=ZP,
    sigma=0.01,
    meta=True,
    flux_column=False,
):
    """A fits-stamps folder: exponential discs (PSF FWHM 0.18″) plus white noise ``sigma``
    (one value or one per stamp), and catalogue.ecsv with the instrument in its meta."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    sigmas = np.broadcast_to(np.asarray(sigma, dtype=float), (len(mags),))
    rows = []
    for i, mag in enumerate(mags):
        flux = 10 ** (-0.4 * (mag - zero_point))
        image = galsim.ImageF(size, size, scale=scale)
        galaxy = galsim.Exponential(half_light_radius=0.3, flux=flux)
        galsim.Convolve(galaxy, galsim.Gaussian(fwhm=0.18)).drawImage(image, use_true_center=False)
        noisy = image.array + rng.normal(0, sigmas[i], image.array.shape)
        fits.writeto(folder / f"g{i}.fits", noisy.astype(">f4"))
        rows.append((f"g{i}", flux if flux_column else float(mag), "disc"))
    cat = Table(rows=rows, names=("id", "flux" if flux_column else "mag", "morphology"))
    if meta:
        cat.meta.update(pixel_scale=scale, zero_point=zero_point, psf=0.18)
    cat.write(folder / "catalogue.ecsv")
    return folder


def generate(src, out, *options):
    args = ["generate", "--source", "fits-stamps", "--input", str(src), "--out", str(out)]
    return runner.invoke(app, [*args, "--blends", "20,5,10", "--workers", "1", *options])


def assert_user_error(result, message, out):
    """Exit 2, one error line holding ``message``, no traceback, no output folder."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def split_labels(n):
    return split_galaxies(np.arange(n), 0.2, DEFAULT_SEED)


# ---------------------------------------------------------------------------------------------
# pairing


def test_has_partner_is_strict_and_symmetric():
    mag = np.array([20.0, 21.9, 25.0, 25.5, 30.0, 32.0])
    assert list(has_partner(mag, 2.0)) == [True, True, True, True, False, False]
    assert list(has_partner(np.array([20.0, 22.0]), 2.0)) == [False, False]
    assert list(has_partner(np.array([20.0, 20.0]), 0.1)) == [True, True]


def old_draw_pairs(galaxies, pool_mask, n_blends, seed, split_index, max_delta_mag):
    """draw_pairs before unpaired galaxies were handled: the stream frozen releases use."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, split_index)))
    rows = np.flatnonzero(pool_mask)
    mag, r_e = np.asarray(galaxies["mag"]), np.asarray(galaxies["r_e_px"])
    pairs = []
    while len(pairs) < n_blends:
        c = int(rng.choice(rows))
        candidates = rows[(np.abs(mag[rows] - mag[c]) < max_delta_mag) & (rows != c)]
        if len(candidates) == 0:
            continue
        k = int(rng.choice(candidates))
        lo, hi = shift_bounds(r_e[c], r_e[k])
        for _ in range(25):
            d, angle = rng.uniform(lo, hi), rng.uniform(0, 2 * np.pi)
            dx, dy = int(np.rint(d * np.cos(angle))), int(np.rint(d * np.sin(angle)))
            if lo <= np.hypot(dx, dy) <= hi and (dx, dy) != (0, 0):
                pairs.append((c, k, dx, dy, int(rng.integers(0, 2**62))))
                break
    return pairs


def test_draw_pairs_keeps_the_stream_and_never_draws_a_galaxy_without_partner():
    rng = np.random.default_rng(0)
    table = Table({"mag": rng.uniform(19, 23, 40), "r_e_px": rng.uniform(2, 8, 40)})
    pool = np.arange(40) % 3 != 0
    new = draw_pairs(table, pool, 200, 11, 1, 2.0)
    old = old_draw_pairs(table, pool, 200, 11, 1, 2.0)
    assert [(p.central, p.companion, p.dx, p.dy, p.noise_seed) for p in new] == old
    table["mag"][5] = 40.0  # row 5 is in the pool, and far from every other galaxy
    drawn = {p.central for p in draw_pairs(table, pool, 300, 11, 1, 2.0)}
    assert 5 not in drawn and len(drawn) > 10


def test_draw_pairs_without_any_pair_is_an_error_not_a_hang():
    table = Table({"mag": [20.0, 25.0, 21.0], "r_e_px": [3.0, 3.0, 3.0]})
    with pytest.raises(ReleaseError, match="no two of its 2 galaxies"):
        draw_pairs(table, np.array([True, True, False]), 10, 1, 2, 2.0)
    with pytest.raises(ReleaseError, match="1 galaxies in its pool"):
        draw_pairs(table, np.array([True, False, False]), 10, 1, 2, 2.0)


def test_a_test_galaxy_without_partner_is_left_out_and_reported(tmp_path):
    labels = split_labels(15)
    lone = int(np.flatnonzero(labels == "test")[0])
    assert (labels == "test").sum() == 3
    mags = 21.0 + 0.1 * np.arange(15)
    mags[lone] = 25.5  # > 2 mag from every other galaxy
    src = write_stamps(tmp_path / "stamps", mags)
    result = generate(src, tmp_path / "rel")
    assert result.exit_code == 0, result.output
    assert "1 test galaxy with no partner within |Δm| < 2 mag left out" in result.output
    info = ReleaseInfo.read(tmp_path / "rel" / "release.toml")
    assert info.unpaired == {"test": [f"g{lone}"]}
    assert info.counts["unpaired_galaxies"] == 1 and info.counts["test_galaxies"] == 2
    galaxies = Table.read(tmp_path / "rel" / "galaxies.ecsv")
    assert f"g{lone}" not in set(galaxies["source_id"]) and len(galaxies) == 14
    pairs = Table.read(tmp_path / "rel" / "pairs_test.ecsv")
    test_ids = set(galaxies["galaxy_id"][galaxies["split"] == "test"])
    assert set(pairs["central_id"]) | set(pairs["companion_id"]) == test_ids
    shown = runner.invoke(app, ["info", str(tmp_path / "rel")])
    assert shown.exit_code == 0 and f"left out of the release: g{lone}" in shown.output
    assert "2 test galaxies" in shown.output and "{'" not in shown.output


def test_a_split_without_any_pair_is_a_clear_error(tmp_path):
    labels = split_labels(10)
    mags = 21.0 + 0.1 * np.arange(10)
    first, second = np.flatnonzero(labels == "test")
    mags[second] = mags[first] + 3.5
    src = write_stamps(tmp_path / "stamps", mags)
    result = generate(src, tmp_path / "rel")
    assert_user_error(result, "split 'test': none of its 2 galaxies", tmp_path / "rel")
    # the advice works: the gap between the two truth magnitudes (sep fluxes), about 3.5
    gap = float(re.search(r"raise --max-delta-mag above ([0-9.]+)", result.output)[1])
    assert 3.3 < gap < 3.8
    result = generate(src, tmp_path / "rel", "--max-delta-mag", f"{gap + 0.01}")
    assert result.exit_code == 0, result.output
    assert ReleaseInfo.read(tmp_path / "rel" / "release.toml").spec.max_delta_mag == gap + 0.01


def test_a_split_with_one_galaxy_is_a_clear_error(tmp_path):
    src = write_stamps(tmp_path / "stamps", 21.0 + 0.2 * np.arange(5))
    result = generate(src, tmp_path / "rel")
    assert_user_error(result, "split 'test' has 1 galaxy", tmp_path / "rel")
    assert "of 5 usable" in result.output and "raise --test-fraction" in result.output
    assert generate(src, tmp_path / "rel", "--test-fraction", "0.4").exit_code == 0


# ---------------------------------------------------------------------------------------------
# instrument


def test_resample_conserves_flux_and_centres_on_the_release_pixel():
    for scale, size in ((0.03, 256), (0.12, 64)):
        image = galsim.ImageD(size, size, scale=scale)
        galsim.Gaussian(fwhm=0.4, flux=100.0).drawImage(image, use_true_center=False)
        out = resample(image.array, scale, 0.06, 128)
        y, x = np.indices(out.shape)
        assert out.sum() == pytest.approx(100.0, rel=1e-4)
        assert (out * x).sum() / out.sum() == pytest.approx(64.0, abs=1e-3)
        assert (out * y).sum() / out.sum() == pytest.approx(64.0, abs=1e-3)


def test_larger_odd_stamps_are_cut_around_their_centre_then_resampled():
    image = galsim.ImageD(301, 301, scale=0.03)
    galsim.Gaussian(fwhm=0.4, flux=100.0).drawImage(image, use_true_center=False)
    stamp = image.array + np.random.default_rng(2).normal(0, 1e-4, image.array.shape)
    spec = ReleaseSpec(
        name="x",
        source="fits-stamps",
        morphology_counts={},
        source_path="x",
        input_pixel_scale=0.03,
    )
    out, noise_var, filled = prepare_stamp(stamp, spec, 0)
    assert out.shape == (128, 128) and filled == 0
    assert np.unravel_index(np.argmax(out), out.shape) == (64, 64)
    assert out.sum() == pytest.approx(100.0, abs=0.1) and noise_var < 1e-7


def test_stamps_at_another_scale_and_zero_point_are_resampled_and_recorded(tmp_path):
    mags = 21.0 + 0.2 * np.arange(10)
    src = write_stamps(
        tmp_path / "stamps", mags, scale=0.03, size=256, zero_point=28.0, flux_column=True
    )
    psf = galsim.ImageD(65, 65, scale=0.03)
    galsim.Gaussian(fwhm=0.2, flux=5.0).drawImage(psf)
    fits.writeto(src / "psf.fits", psf.array)
    options = ["--pixel-scale", "0.03", "--zero-point", "28", "--psf", str(src / "psf.fits")]
    result = generate(src, tmp_path / "rel", *options)
    assert result.exit_code == 0, result.output
    assert "10 stamps resampled from 0.03″/px to 0.06″/px" in result.output
    info = ReleaseInfo.read(tmp_path / "rel" / "release.toml")
    spec = info.spec
    assert (spec.input_pixel_scale, spec.input_zero_point) == (0.03, 28.0)
    assert spec.psf_kind == "file" and spec.psf_file == str((src / "psf.fits").resolve())
    assert info.adjustments["resampled_from_pixel_scale"] == 0.03
    galaxies = Table.read(tmp_path / "rel" / "galaxies.ecsv")
    # catalogue fluxes are counts at ZP 28: on the release's ZP they match the AB magnitudes
    assert np.allclose(galaxies["model_flux"], 10 ** (-0.4 * (mags - ZP)))
    with h5py.File(tmp_path / "rel" / "galaxies.h5") as f:
        stamps, psf_image = f["stamps"][:], f["psf"][:]
    ratio = stamps.sum(axis=(1, 2)) / galaxies["model_flux"]  # flux conserved, within the noise
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01) and np.all(np.abs(ratio - 1) < 0.05)
    peak = np.unravel_index(np.argmax(stamps[0]), stamps[0].shape)
    assert peak == (64, 64)
    assert psf_image.sum() == pytest.approx(1.0, abs=1e-5) and psf_image.shape[0] % 2 == 1
    assert spec.psf_fwhm == pytest.approx(psf_fwhm_arcsec(psf_image, 0.06), abs=1e-3)
    assert 0.19 < spec.psf_fwhm < 0.24  # 0.2″ seen through 0.03″ then 0.06″ pixels


def test_declared_gaussian_psf_and_the_kept_magnitude_range_are_recorded(tmp_path):
    mags = np.array([21.0, 21.6, 22.2, 22.8, 23.4, 24.0, 24.6, 25.2, 25.6, 21.3, 22.5, 23.7])
    src = write_stamps(tmp_path / "stamps", mags)
    result = generate(src, tmp_path / "rel", "--psf", "0.15")  # overrides the meta's 0.18
    assert result.exit_code == 0, result.output
    spec = ReleaseInfo.read(tmp_path / "rel" / "release.toml").spec
    assert (spec.psf_kind, spec.psf_fwhm) == ("gaussian", 0.15)
    galaxies = Table.read(tmp_path / "rel" / "galaxies.ecsv")
    assert spec.mag_max == np.ceil(galaxies["mag"].max() * 100) / 100 and spec.mag_max > 25
    assert spec.mag_min == np.floor(galaxies["mag"].min() * 100) / 100
    with h5py.File(tmp_path / "rel" / "galaxies.h5") as f:
        psf = f["psf"][:]
    assert psf.sum() == pytest.approx(1.0, abs=1e-5)
    assert psf_fwhm_arcsec(psf, 0.06) == pytest.approx(0.15, rel=0.15)
    shown = runner.invoke(app, ["info", str(tmp_path / "rel")])
    assert 'PSF: Gaussian, FWHM 0.15"' in shown.output


def test_noisier_stamps_raise_the_release_sky_and_say_so(tmp_path):
    sigma = np.full(10, 0.01)
    sigma[3] = 0.13  # 13x noisier than the others, 11x the release's 0.012
    src = write_stamps(tmp_path / "stamps", 21.0 + 0.1 * np.arange(10), sigma=sigma)
    result = generate(src, tmp_path / "rel")
    assert result.exit_code == 0, result.output
    raised = re.search(
        r"sky σ raised from 0.012 to ([0-9.]+) counts/px .* stamp \(g3\)", result.output
    )
    assert raised and float(raised[1]) == pytest.approx(0.13, rel=0.05)
    info = ReleaseInfo.read(tmp_path / "rel" / "release.toml")
    assert info.spec.sky_sigma == pytest.approx(0.13, rel=0.05)
    assert info.adjustments["noisiest_stamp"] == "g3"
    assert info.adjustments["sky_sigma_requested"] == 0.012
    with h5py.File(tmp_path / "rel" / "test_blends.h5") as f:
        corners = f["images"][:, :20, :20]
        assert f.attrs["sky_sigma"] == info.spec.sky_sigma
    # every galaxy carries the release's sky (a corner holds one or both stamps' noise): no
    # noisier square around the noisy galaxy's stamp
    sky = info.spec.sky_sigma
    corner_std = np.std(corners, axis=(1, 2))
    assert np.all((corner_std > 0.9 * sky) & (corner_std < 1.1 * np.sqrt(2) * sky))


def test_zero_padding_is_filled_with_the_stamps_sky_and_reported(tmp_path):
    src = write_stamps(tmp_path / "stamps", 21.0 + 0.1 * np.arange(10))
    for name, columns in (("g2", 30), ("g7", 90)):
        data = fits.getdata(src / f"{name}.fits").astype(np.float32)
        data[:, :columns] = 0.0  # beyond a mosaic's edge
        fits.writeto(src / f"{name}.fits", data, overwrite=True)
    result = generate(src, tmp_path / "rel")
    assert result.exit_code == 0, result.output
    assert "zero padding filled with sky noise in 1 stamp: g2 (3840 px)" in result.output
    info = ReleaseInfo.read(tmp_path / "rel" / "release.toml")
    assert info.adjustments["zero_filled"] == {"g2": 30 * 128}
    rejected = Table.read(tmp_path / "rel" / "rejected.ecsv")
    assert list(rejected["source_id"]) == ["g7"] and "zero padding" in rejected["reason"][0]
    galaxies = Table.read(tmp_path / "rel" / "galaxies.ecsv")
    row = list(galaxies["source_id"]).index("g2")
    with h5py.File(tmp_path / "rel" / "galaxies.h5") as f:
        filled = f["stamps"][row][:, :30]
    assert np.all(filled != 0) and filled.std() == pytest.approx(0.01, rel=0.1)
    assert abs(filled.mean()) < 0.002


def test_zero_padding_noise_is_seeded_by_the_release_and_the_row():
    stamp = np.random.default_rng(1).normal(0, 0.01, (128, 128))
    stamp[-10:, :] = 0.0
    assert zero_padding(stamp).sum() == 1280
    spec = ReleaseSpec(name="x", source="fits-stamps", morphology_counts={}, source_path="x")
    a, _, n = prepare_stamp(stamp, spec, 3)
    b, _, _ = prepare_stamp(stamp, spec, 3)
    c, _, _ = prepare_stamp(stamp, spec, 4)
    assert n == 1280 and np.array_equal(a, b) and not np.array_equal(a, c)
    few = np.random.default_rng(1).normal(0, 0.01, (128, 128))
    few[0, :10] = 0.0  # fewer than MIN_PAD_PIXELS: left alone
    assert zero_padding(few).sum() == 0


# ---------------------------------------------------------------------------------------------
# bad input: one line naming the file, the field and the fix; exit 2; nothing written


def damage_catalogue(src, change):
    cat = Table.read(src / "catalogue.ecsv")
    change(cat)
    cat.write(src / "catalogue.ecsv", overwrite=True)


def _duplicate(cat):
    cat["id"][2] = "g1"


def _nan_mag(cat):
    cat["mag"][1] = np.nan


def _inf_flux(cat):
    cat["flux"] = 10 ** (-0.4 * (cat["mag"] - ZP))
    cat.remove_column("mag")
    cat["flux"][4] = np.inf


def _zero_flux(cat):
    cat["flux"] = 10 ** (-0.4 * (cat["mag"] - ZP))
    cat.remove_column("mag")
    cat["flux"][2] = 0.0


def _spiral(cat):
    cat["morphology"] = cat["morphology"].astype("U8")
    cat["morphology"][3] = "spiral"


def _undeclared(cat):
    cat.meta.clear()


@pytest.mark.parametrize(
    "damage, message",
    [
        (_duplicate, "catalogue.ecsv: column 'id' has duplicates: 'g1' (rows 2 and 3)"),
        (_nan_mag, "catalogue.ecsv: column 'mag' must be finite (AB mag); 1 bad (id g1: nan)"),
        (_inf_flux, "column 'flux' must be finite and > 0 (counts); 1 bad (id g4: inf)"),
        (_zero_flux, "column 'flux' must be finite and > 0 (counts); 1 bad (id g2: 0)"),
        (_spiral, "catalogue.ecsv id g3: unknown morphology 'spiral'"),
        (_undeclared, "the instrument of the stamps is not declared (pixel_scale, zero_point"),
        ("truncated", "g3.fits: unreadable FITS file"),
        ("size", "g3.fits: stamp shape (100, 128), expected (128, 128)"),
        ("missing", "does not exist; pass the folder"),
        ("psf", "nope.fits: PSF file not found (--psf)"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, damage, message):
    src = write_stamps(tmp_path / "stamps", 21.0 + 0.1 * np.arange(8))
    options = []
    if damage == "truncated":
        data = (src / "g3.fits").read_bytes()
        (src / "g3.fits").write_bytes(data[: len(data) // 2])
    elif damage == "size":
        fits.writeto(src / "g3.fits", np.zeros((100, 128), ">f4"), overwrite=True)
    elif damage == "missing":
        src = tmp_path / "no-such-folder"
    elif damage == "psf":
        options = ["--psf", "nope.fits"]
    else:
        damage_catalogue(src, damage)
    result = generate(src, tmp_path / "rel", *options)
    assert_user_error(result, message, tmp_path / "rel")
    if damage == "missing":
        assert f"input folder {src} does not exist" in result.output


def test_resampled_stamps_too_small_and_stray_options_are_clear_errors(tmp_path):
    src = write_stamps(tmp_path / "stamps", 21.0 + 0.1 * np.arange(8), scale=0.03, size=200)
    result = generate(src, tmp_path / "rel")
    assert_user_error(result, "expected at least (256, 256) px of 0.03″", tmp_path / "rel")
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "rel"), "--psf", "0.1"])
    assert_user_error(result, "--psf applies to a custom release", tmp_path / "rel")


def test_release_toml_without_the_new_tables_still_reads(tmp_path):
    info = ReleaseInfo.read(committed_dir("mini") / "release.toml")
    assert info.unpaired == {} and info.adjustments == {}
    assert "[unpaired]" not in info.to_toml() and "[adjustments]" not in info.to_toml()
    again = ReleaseInfo(
        info.spec, info.counts, {}, unpaired={"test": ["g4"]}, adjustments={"zero_filled": {"a": 3}}
    )
    (tmp_path / "release.toml").write_text(again.to_toml())
    back = ReleaseInfo.read(tmp_path / "release.toml")
    assert back.unpaired == {"test": ["g4"]} and back.adjustments == {"zero_filled": {"a": 3}}


def write_candels(folder, n=8):
    """A tiny candels-npy archive (images, segmentation maps, catalogue) of noisy discs."""
    from challenge.pipeline.photometry import TRUTH, measure_central

    rng = np.random.default_rng(3)
    images, segs, rows = [], [], []
    for i in range(n):
        mag = 21.0 + 0.2 * i
        image = galsim.ImageF(128, 128, scale=0.06)
        galaxy = galsim.Exponential(half_light_radius=0.3, flux=10 ** (-0.4 * (mag - ZP)))
        galsim.Convolve(galaxy, galsim.Gaussian(fwhm=0.18)).drawImage(image, offset=(0.5, 0.5))
        noisy = image.array + rng.normal(0, 0.006, image.array.shape)
        images.append(noisy.astype(np.float32))
        segs.append(measure_central(noisy, TRUTH).mask)
        rows.append((1000 + i, mag, 5.0, "disk"))
    folder.mkdir(parents=True, exist_ok=True)
    images[2][:, -20:] = 0.0  # cut at a mosaic's edge
    np.save(folder / "candels_img.npy", np.stack(images))
    np.save(folder / "candels_seg.npy", np.stack(segs))
    Table(rows=rows, names=("ID", "mag", "radius", "galtype")).write(
        folder / "candels_cat.csv", format="ascii.csv"
    )
    return folder


def test_candels_npy_fills_padding_and_refuses_bad_catalogues(tmp_path):
    src = write_candels(tmp_path / "archive")
    args = ["generate", "--source", "candels-npy", "--input", str(src), "--blends", "20,5,10"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "rel")])
    assert result.exit_code == 0, result.output
    info = ReleaseInfo.read(tmp_path / "rel" / "release.toml")
    assert info.adjustments == {"zero_filled": {"1002": 20 * 128}}
    assert info.spec.psf_kind == "model" and info.spec.mag_max < 23.5
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r2"), "--psf", "0.1"])
    assert_user_error(
        result, "--psf: the instrument options apply to --source fits-stamps", tmp_path / "r2"
    )
    cat = Table.read(src / "candels_cat.csv", format="ascii.csv")
    cat["ID"][5] = 1001
    cat["mag"][6] = np.nan
    cat.write(src / "candels_cat.csv", format="ascii.csv", overwrite=True)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r3")])
    assert_user_error(
        result, "candels_cat.csv: column 'ID' has duplicates: '1001'", tmp_path / "r3"
    )
    cat["ID"][5] = 1005
    cat.write(src / "candels_cat.csv", format="ascii.csv", overwrite=True)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "r3")])
    assert_user_error(
        result, "column 'mag' must be finite (AB mag); 1 bad (id 1006: nan)", tmp_path / "r3"
    )
    result = runner.invoke(
        app, [*args[:4], str(tmp_path / "nowhere"), "--out", str(tmp_path / "r4")]
    )
    assert_user_error(
        result, f"input folder {tmp_path / 'nowhere'} does not exist", tmp_path / "r4"
    )
