"""Hand-computed cases for every metric of docs/contract.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import jaccard_score

from challenge.scoring import metrics as M


def test_ape_and_mape():
    flux, truth = [110.0, 90.0, 0.0, -50.0], [100.0, 100.0, 100.0, 100.0]
    np.testing.assert_allclose(M.ape(flux, truth), [0.1, 0.1, 1.0, 1.5])
    assert M.mape(flux, truth) == pytest.approx(100 * (0.1 + 0.1 + 1.0 + 1.5) / 4)
    assert M.median_ape(flux, truth) == pytest.approx(55.0)
    assert M.mape([12.0], [10.0]) == pytest.approx(20.0)


def test_delta_mag():
    dm = M.delta_mag([10.0, 100.0, 1000.0, 0.0, -3.0], [100.0] * 5)
    np.testing.assert_allclose(dm[:3], [2.5, 0.0, -2.5])
    assert np.isposinf(dm[3]) and np.isposinf(dm[4])


def test_bias_scatter_nmad():
    dm = np.array([0.1, -0.1, 0.3, np.inf])
    assert M.bias(dm) == pytest.approx(0.1)
    assert M.scatter(dm) == pytest.approx(math.sqrt(0.08 / 3))
    dm = np.array([0.0, 0.1, 0.2, 1.0, np.inf])
    assert M.median_dmag(dm) == pytest.approx(0.15)
    # |d - 0.15| = 0.15, 0.05, 0.05, 0.85 -> median 0.1
    assert M.nmad(dm) == pytest.approx(0.14826)


def test_outlier_and_detected_fraction():
    assert M.outlier_fraction([0.8, -0.8, 0.75, 0.1, np.inf]) == pytest.approx(3 / 5)
    assert M.detected_fraction([1.0, 0.0, -1.0, 2.0]) == pytest.approx(0.5)


def test_empty_inputs_are_nan():
    for fn in (M.bias, M.median_dmag, M.scatter, M.nmad, M.outlier_fraction, M.detected_fraction):
        assert math.isnan(fn([]))
    assert math.isnan(M.mape([], []))
    assert math.isnan(M.bias([np.inf, np.inf]))
    s = M.summarize([], [])
    assert s["n"] == 0 and math.isnan(s["mape"]) and math.isnan(s["scatter"])


def _squares():
    pred = np.zeros((8, 8), np.float32)
    truth = np.zeros((8, 8), np.uint8)
    pred[0:4, 0:4] = 0.9
    truth[2:6, 0:4] = 1
    return pred, truth


def test_blend_total_and_share_error():
    truth = np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    flux = np.array([[2.0, 1.0],  # the central 2x: total +50%, share 2/3 against 1/2
                     [1.5, 0.5],  # both halved: total -50%, share unchanged
                     [-1.0, 1.0],  # central not detected: counts 0, share 0 against 1/2
                     [0.0, -3.0]])  # neither detected: total -100%, no share
    assert M.blend_total_ape(flux, truth) == pytest.approx([0.5, 0.5, 0.5, 1.0])
    share = M.share_error(flux, truth)
    assert share[:3] == pytest.approx([1 / 6, 0.0, 0.5])
    assert math.isnan(share[3])


def test_iou_of_two_squares():
    pred, truth = _squares()
    # intersection 2 x 4 = 8 px, union 16 + 16 - 8 = 24 px
    assert M.iou(pred, truth) == pytest.approx(1 / 3)
    assert M.iou(pred, truth) == pytest.approx(jaccard_score(truth.ravel(), (pred >= 0.5).ravel()))
    pred[0:4, 0:4] = 0.5  # the threshold is inclusive
    assert M.iou(pred, truth) == pytest.approx(1 / 3)
    pred[0:4, 0:4] = 0.49
    assert M.iou(pred, truth) == 0.0


def test_iou_batched_and_empty():
    pred, truth = _squares()
    p = np.stack([pred, np.zeros_like(pred), pred.astype(bool)])
    t = np.stack([truth, np.zeros_like(truth), truth])
    v = M.iou(p, t)
    assert v[0] == pytest.approx(1 / 3) and math.isnan(v[1]) and v[2] == pytest.approx(1 / 3)
    assert M.mean_iou(p, t) == pytest.approx(1 / 3)
    # odd pixel counts take the slow path and agree
    assert M.iou(pred[:7, :7], truth[:7, :7]) == pytest.approx(
        jaccard_score(truth[:7, :7].ravel(), (pred[:7, :7] >= 0.5).ravel())
    )


def test_mask_area_bias():
    pred, truth = _squares()
    pred[0:4, 0] = 0  # 12 predicted px, 16 true px
    assert M.mask_area_bias(pred, truth) == pytest.approx(0.25)


def test_calibration():
    truth = np.array([10.0, 10.0, 10.0])
    flux = truth + np.array([0.5, 1.5, 2.5])
    err = np.ones(3)
    assert M.coverage(flux, err, truth, 0.68) == pytest.approx(1 / 3)
    assert M.coverage(flux, err, truth, 0.95) == pytest.approx(2 / 3)
    assert M.coverage(flux, err, truth, 0.9973) == pytest.approx(1.0)
    assert M.mean_z(flux, err, truth) == pytest.approx(1.5)


def test_crps_gaussian():
    # z = 0: CRPS = sigma (2 phi(0) - 1/sqrt(pi))
    assert M.crps_gaussian(5.0, 2.0, 5.0) == pytest.approx(
        2.0 * (2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi))
    )
    # against the definition: integral of (F(x) - 1[x >= t])^2 dx
    from scipy.stats import norm

    f, s, t = 3.0, 1.5, 4.2
    x = np.linspace(f - 12 * s, f + 12 * s, 200001)
    integrand = (norm.cdf(x, f, s) - (x >= t)) ** 2
    assert M.crps_gaussian(f, s, t) == pytest.approx(np.trapezoid(integrand, x), rel=1e-4)
    assert M.crps_fraction([f], [s], [t]) == pytest.approx(M.crps(f, s, t) / t)


def test_summarize_keys():
    s = M.summarize(
        [110.0, 0.0],
        [100.0, 100.0],
        flux_err=[10.0, 10.0],
        n_inter=[8, 0],
        n_pred=[16, 0],
        n_true=[16, 16],
    )
    assert s["n"] == 2
    assert s["mape"] == pytest.approx(55.0)
    assert s["detected_fraction"] == 0.5
    assert s["outlier_fraction"] == 0.5
    assert s["iou"] == pytest.approx((1 / 3 + 0) / 2)  # 8/24 and 0/16
    assert s["mask_area_bias"] == pytest.approx(0.5)
    assert set(M.HEADLINE) | set(M.MASK_METRICS) | set(M.CALIBRATION_METRICS) == set(s)
