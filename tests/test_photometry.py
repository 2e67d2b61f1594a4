import numpy as np
import pytest

from challenge.pipeline.photometry import (
    COLD,
    TRUTH,
    detect,
    flux_to_mag,
    kron_flux,
    mag_to_flux,
    measure_central,
)


def gaussian(flux, sigma, x0=64.0, y0=64.0, size=128):
    yy, xx = np.mgrid[:size, :size]
    return (
        flux * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    )


def test_kron_flux_of_a_noiseless_gaussian_captures_almost_all_of_it():
    image = gaussian(500.0, 3.0)
    # 2.5 Kron radii of a Gaussian enclose ~99% of its flux (Kron 1980; sep's docs).
    flux, kronrad = kron_flux(image, [64.0], [64.0], [3.0], [3.0], [0.0])
    assert flux[0] == pytest.approx(500.0, rel=0.015)
    assert kronrad[0] > 1.0


def test_measure_central_recovers_a_gaussian_in_noise_and_its_mask():
    rng = np.random.default_rng(1)
    image = gaussian(200.0, 2.5) + rng.normal(0, 0.012, (128, 128))
    m = measure_central(image, TRUTH)
    assert m.detected
    assert m.flux == pytest.approx(200.0, rel=0.03)
    assert m.mask.dtype == np.uint8 and m.mask[64, 64] == 1 and m.mask[0, 0] == 0
    assert (m.x, m.y) == pytest.approx((64.0, 64.0), abs=0.1)


def test_pure_noise_has_no_central_galaxy():
    rng = np.random.default_rng(2)
    m = measure_central(rng.normal(0, 0.012, (128, 128)), COLD)
    assert not m.detected and np.isnan(m.flux) and m.mask.sum() == 0


def test_two_separated_gaussians_are_two_sources_with_their_fluxes():
    rng = np.random.default_rng(3)
    image = gaussian(300.0, 2.0) + gaussian(100.0, 2.0, x0=94.0, y0=70.0)
    sources = detect(image + rng.normal(0, 0.012, image.shape), COLD)
    assert len(sources) == 2
    order = np.argsort(sources.x)
    assert sources.flux_auto[order] == pytest.approx([300.0, 100.0], rel=0.03)


def test_magnitudes_and_fluxes_round_trip():
    assert mag_to_flux(25.96, 25.96) == pytest.approx(1.0)
    assert flux_to_mag(mag_to_flux(21.3, 25.96), 25.96) == pytest.approx(21.3)
    assert np.isnan(flux_to_mag(0.0, 25.96)) and np.isnan(flux_to_mag(-1.0, 25.96))
