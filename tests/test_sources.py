"""Real-galaxy sources: COSMOS re-rendering, the candels-npy archive and FITS stamp folders."""

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import SourceError
from challenge.contract.release import ReleaseSpec, preset
from challenge.pipeline.files import generate_release, release_summary, verify_release
from challenge.pipeline.photometry import TRUTH, measure_central
from challenge.pipeline.sources.cosmos import (
    COSMOS_ZERO_POINT,
    classify,
    example_dir,
    load_cosmos,
    render_cosmos_galaxy,
)
from challenge.pipeline.sources.synthetic import release_psf

runner = CliRunner()
SMALL = {"train": 30, "val": 10, "test": 20}


def draw(profile, flux, size=128, scale=0.06):
    image = galsim.ImageF(size, size, scale=scale)
    galsim.Convolve(profile.withFlux(flux), release_psf()).drawImage(image, offset=(0.5, 0.5))
    return image.array


@pytest.fixture(scope="module")
def cosmos_spec():
    return ReleaseSpec(
        name="cosmos-test", source="cosmos", morphology_counts={}, n_blends=SMALL, max_galaxies=30
    )


def test_cosmos_rerendering_conserves_flux(cosmos_spec):
    catalog = galsim.RealGalaxyCatalog(
        "real_galaxy_catalog_26_extension_example.fits", dir=str(example_dir())
    )
    mags = fits.getdata(example_dir() / "real_galaxy_catalog_26_extension_example.fits")["MAG"]
    ratios, z = [], []
    for i in range(12):
        stamp, var = render_cosmos_galaxy(catalog, i, cosmos_spec)
        catalogue_flux = 10 ** (-0.4 * (mags[i] - cosmos_spec.zero_point))
        noise = np.sqrt(var) * stamp.shape[0]  # sum of size² pixels of white noise
        ratios.append(stamp.sum() / catalogue_flux)
        z.append((stamp.sum() - catalogue_flux) / noise)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.1)
    # Residual sky in a few original COSMOS cutouts makes some stamps off by more than the
    # whitened noise; most are within it.
    assert np.mean(np.abs(z) < 3) >= 0.6
    assert COSMOS_ZERO_POINT == 25.94


def test_cosmos_release_truth_matches_catalogue_flux(cosmos_spec, tmp_path):
    folder = generate_release(cosmos_spec, tmp_path / "cosmos")
    galaxies = Table.read(folder / "galaxies.ecsv")
    ratio = galaxies["flux"] / galaxies["model_flux"]
    # Kron apertures catch ~90% of the light (as for the synthetic galaxies), within the noise.
    assert 0.75 < np.median(ratio) < 1.05
    assert len(galaxies) + release_summary(folder)["info"].counts["rejected_galaxies"] == 30
    assert verify_release(folder).ok
    result = runner.invoke(app, ["info", str(folder)])
    assert result.exit_code == 0 and "median mag" in result.output
    result = runner.invoke(app, ["show", str(folder), "--out", str(tmp_path / "fig")])
    assert result.exit_code == 0 and (tmp_path / "fig" / "galaxies.png").is_file()


def test_morphology_rule_on_known_profiles():
    bulge = draw(galsim.DeVaucouleurs(half_light_radius=0.3), 200.0)
    disc = draw(galsim.Exponential(half_light_radius=0.5), 200.0)
    clumps = draw(
        galsim.Add(galsim.Gaussian(sigma=0.1).shift(0.5, 0.2), galsim.Gaussian(sigma=0.1)), 200.0
    )
    assert classify(bulge, None) == "bulge"
    assert classify(disc, None) == "disc"
    assert classify(clumps, None) == "irregular"
    assert classify(disc, 0.9) == "bulge" and classify(disc, 0.4) == "bulge+disc"


def write_candels(folder, n=8, size=128, seed=3):
    """A tiny candels-npy archive of noisy Sérsic galaxies."""
    rng = np.random.default_rng(seed)
    types = ["sph", "disk", "sphd", "irr"]
    imgs, segs, rows = [], [], []
    for i in range(n):
        mag = 20.5 + 0.3 * i
        flux = 10 ** (-0.4 * (mag - 25.96))
        n_s = 4.0 if i % 4 == 0 else 1.0
        img = draw(galsim.Sersic(n=n_s, half_light_radius=0.3), flux, size)
        img = img + rng.normal(0, 0.006, img.shape)
        segs.append(measure_central(img, TRUTH).mask)
        imgs.append(img.astype(np.float32))
        rows.append((1000 + i, mag, 5.0, types[i % 4]))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "candels_img.npy", np.stack(imgs))
    np.save(folder / "candels_seg.npy", np.stack(segs))
    Table(rows=rows, names=("ID", "mag", "radius", "galtype")).write(
        folder / "candels_cat.csv", format="ascii.csv", overwrite=True
    )
    return folder


def test_candels_npy_builds_a_release(tmp_path):
    src = write_candels(tmp_path / "archive")
    spec = ReleaseSpec(
        name="candels-test",
        source="candels-npy",
        morphology_counts={},
        n_blends=SMALL,
        source_path=str(src),
    )
    folder = generate_release(spec, tmp_path / "rel")
    galaxies = Table.read(folder / "galaxies.ecsv")
    assert len(galaxies) == 8
    assert set(galaxies["morphology"]) == {"bulge", "disc", "bulge+disc", "irregular"}
    assert list(galaxies["source_id"][:2]) == ["1000", "1001"]
    assert np.allclose(galaxies["model_flux"], 10 ** (-0.4 * (20.5 + 0.3 * np.arange(8) - 25.96)))
    assert np.allclose(galaxies["r_e_px"], 5.0)
    import h5py

    with h5py.File(folder / "galaxies.h5") as f:
        # the stamps' own noise (σ = 0.006) is measured, so blends only top it up to 0.012
        assert np.allclose(f["noise_var"][:], 0.006**2, rtol=0.15)
        assert not f.attrs["noiseless"]
    with h5py.File(folder / "test_blends.h5") as f:
        images = f["images"][:]
    assert np.all(np.isfinite(images))
    corner = images[:, :20, :20]
    assert corner.std() == pytest.approx(np.sqrt(2) * 0.012, rel=0.1)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "candels_seg.npy: missing"),
        ("shape", "candels_img.npy: shape (8, 64, 64), expected (N, 128, 128)"),
        ("column", "missing column 'galtype'"),
        ("label", "unknown morphology 'spiral'"),
    ],
)
def test_candels_npy_bad_input_is_a_clear_error(tmp_path, damage, message):
    src = write_candels(tmp_path / "archive")
    if damage == "missing":
        (src / "candels_seg.npy").unlink()
    elif damage == "shape":
        np.save(src / "candels_img.npy", np.zeros((8, 64, 64), np.float32))
    else:
        cat = Table.read(src / "candels_cat.csv", format="ascii.csv")
        if damage == "column":
            cat.rename_column("galtype", "kind")
        else:
            cat["galtype"] = cat["galtype"].astype("U8")
            cat["galtype"][2] = "spiral"
        cat.write(src / "candels_cat.csv", format="ascii.csv", overwrite=True)
    result = runner.invoke(
        app,
        [
            "generate",
            "--source",
            "candels-npy",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "rel"),
            "--blends",
            "10,5,5",
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "rel").exists()


def write_fits_stamps(folder, n=6, size=128):
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        flux = 50.0 + 20 * i
        img = draw(galsim.Exponential(half_light_radius=0.4), flux, size)
        fits.writeto(folder / f"g{i}.fits", (img + rng.normal(0, 0.01, img.shape)).astype(">f4"))
        rows.append((f"g{i}", flux, ["disc", "bulge", "irr"][i % 3]))
    cat = Table(rows=rows, names=("id", "flux", "morphology"))
    cat.meta.update(pixel_scale=0.06, zero_point=25.96, psf=0.18)  # the declared instrument
    cat.write(folder / "catalogue.ecsv")
    return folder


def test_fits_stamps_build_a_release_and_reject_wrong_shapes(tmp_path):
    src = write_fits_stamps(tmp_path / "stamps")
    result = runner.invoke(
        app,
        [
            "generate",
            "--source",
            "fits-stamps",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "rel"),
            "--blends",
            "20,5,10",
        ],
    )
    assert result.exit_code == 0, result.output
    galaxies = Table.read(tmp_path / "rel" / "galaxies.ecsv")
    assert len(galaxies) == 6 and np.allclose(galaxies["model_flux"], 50.0 + 20 * np.arange(6))
    assert np.all(np.abs(galaxies["flux"] / galaxies["model_flux"] - 0.95) < 0.1)
    fits.writeto(src / "g3.fits", np.zeros((100, 128), ">f4"), overwrite=True)
    result = runner.invoke(
        app,
        [
            "generate",
            "--source",
            "fits-stamps",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "rel2"),
        ],
    )
    assert result.exit_code == 2
    assert "g3.fits: stamp shape (100, 128), expected (128, 128)" in result.output


def test_cosmos_missing_catalogue_is_a_clear_error(tmp_path):
    spec = ReleaseSpec(
        name="c", source="cosmos", morphology_counts={}, n_blends=SMALL, source_path=str(tmp_path)
    )
    with pytest.raises(SourceError, match="galsim_download_cosmos"):
        load_cosmos(spec, tmp_path)


def test_cosmos_example_preset_is_defined():
    spec = preset("cosmos-example")
    assert spec.source == "cosmos" and spec.source_path == "" and spec.n_galaxies is None


def test_bulge_fraction_from_galsim_parametric_fits(tmp_path):
    from challenge.pipeline.sources.cosmos import bulge_fraction_from_fits

    cols = fits.ColDefs([
        fits.Column(name="IDENT", format="J", array=np.arange(4)),
        fits.Column(name="use_bulgefit", format="J", array=np.array([1, 1, 0, 0])),
        fits.Column(name="flux", format="3D",
                    array=np.array([[9, 8, 2], [9, 1, 9], [9, 0, 0], [9, 0, 0]], float)),
        fits.Column(name="sersicfit", format="8D",
                    array=np.array([[0, 0, n, 0, 0, 0, 0, 0] for n in (1, 1, 4.0, 1.0)], float)),
    ])
    path = tmp_path / "real_galaxy_catalog_x_fits.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    assert bulge_fraction_from_fits(path) == pytest.approx([0.8, 0.1, 1.0, 0.0])
    assert bulge_fraction_from_fits(tmp_path / "absent.fits") is None
