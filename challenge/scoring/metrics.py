"""Photometry and segmentation metrics: pure array functions, as docs/contract.md defines them.

Conventions, stated once:

* ``flux`` is the predicted flux, ``truth`` the true flux, both in counts and of the same shape;
  ``truth`` is strictly positive. A predicted flux <= 0 means "not detected".
* APE = |f - t| / t; MAPE = 100 x mean APE (percent).
* Delta mag = -2.5 log10(f / t), predicted minus true magnitude (mag); f <= 0 gives +inf.
* bias / scatter / median / NMAD use the finite Delta mag only; scatter is the population standard
  deviation (``ddof=0``); NMAD = 1.4826 x median |Delta mag - median|.
* outlier fraction = fraction of galaxies with |Delta mag| > 0.75, non-detections (+inf) included.
* IoU of a predicted mask P (thresholded at >= 0.5) and a truth mask T = |P & T| / |P | T|; a
  galaxy whose P and T are both empty has no IoU (NaN) and is left out of means.
* Mask-area bias Delta n = (sum n_true - sum n_pred) / sum n_true (pixel counts).
* Blend total APE = |sum f - sum t| / sum t over a blend's two galaxies; share error = |f_c /
  sum f - t_c / sum t|, the error on the central galaxy's share of the blend's flux (fractions).
* Calibration from a Gaussian 1-sigma error ``flux_err``: z = (f - t) / sigma; the 68% and 95%
  intervals are f +- 1 sigma and f +- 1.96 sigma; CRPS of the Gaussian N(f, sigma^2) at t.

Every reducing function returns NaN (never 0) for an empty input.
"""

from __future__ import annotations

import math

import numpy as np

OUTLIER_DMAG = 0.75  # mag: |Delta mag| above this is an outlier (paper, Sect. 4)
NMAD_SCALE = 1.4826  # makes the NMAD equal to sigma for a Gaussian
Z68 = 1.0  # half-width of the 68% interval, in sigma (68.27%)
Z95 = 1.959963984540054  # half-width of the 95% interval, in sigma


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def ape(flux, truth) -> np.ndarray:
    """Absolute percentage error |f - t| / t (a fraction, same shape as the inputs)."""
    flux, truth = _as_float(flux), _as_float(truth)
    return np.abs(flux - truth) / truth


def mape(flux, truth, sample_weight=None) -> float:
    """Mean absolute percentage error in percent: 100 x mean(|f - t| / t); NaN when empty.

    ``sample_weight`` (same shape) gives a weighted mean, as scikit-learn's
    ``mean_absolute_percentage_error`` (the same definition for t > 0).
    """
    flux, truth = _as_float(flux).ravel(), _as_float(truth).ravel()
    if flux.size == 0:
        return math.nan
    weights = None if sample_weight is None else _as_float(sample_weight).ravel()
    return 100.0 * float(np.average(ape(flux, truth), weights=weights))


def median_ape(flux, truth) -> float:
    """Median APE in percent; NaN when empty."""
    a = ape(flux, truth)
    return 100.0 * float(np.median(a)) if a.size else math.nan


def delta_mag(flux, truth) -> np.ndarray:
    """Predicted minus true magnitude, -2.5 log10(f / t), in mag; +inf where f <= 0."""
    flux, truth = _as_float(flux), _as_float(truth)
    out = np.full(np.broadcast(flux, truth).shape, np.inf)
    ok = flux > 0
    np.divide(flux, truth, out=out, where=ok)
    np.log10(out, out=out, where=ok)
    out[ok] *= -2.5
    return out


def blend_total_ape(flux, truth) -> np.ndarray:
    """APE of each blend's total flux, |(f_c + f_o) - (t_c + t_o)| / (t_c + t_o): (n,) fractions.

    The photometry of the blend as a whole, whatever the split between its galaxies. ``flux``
    and ``truth`` are (n, 2) [central, companion] counts; a non-detection (f <= 0) counts as 0.
    """
    flux, truth = np.maximum(_as_float(flux), 0.0), _as_float(truth)
    total = truth.sum(axis=1)
    return np.abs(flux.sum(axis=1) - total) / total


def share_error(flux, truth) -> np.ndarray:
    """Error on the central galaxy's share of the blend's flux: (n,) fractions.

    |f_c / (f_c + f_o) - t_c / (t_c + t_o)|, the deblending alone: a method that measures the
    blend's total flux exactly still errs on both galaxies by its share error. ``flux`` and
    ``truth`` are (n, 2) [central, companion] counts; a non-detection (f <= 0) counts as 0, so
    a blend given wholly to one galaxy has the share 0 or 1; NaN where neither is detected.
    """
    flux, truth = np.maximum(_as_float(flux), 0.0), _as_float(truth)
    total = flux.sum(axis=1)
    share = np.full(total.shape, np.nan)
    np.divide(flux[:, 0], total, out=share, where=total > 0)
    return np.abs(share - truth[:, 0] / truth.sum(axis=1))


def _finite(dmag) -> np.ndarray:
    dmag = _as_float(dmag).ravel()
    return dmag[np.isfinite(dmag)]


def bias(dmag) -> float:
    """Mean of the finite Delta mag (mag); NaN when none is finite."""
    d = _finite(dmag)
    return float(d.mean()) if d.size else math.nan


def median_dmag(dmag) -> float:
    """Median of the finite Delta mag (mag); NaN when none is finite."""
    d = _finite(dmag)
    return float(np.median(d)) if d.size else math.nan


def scatter(dmag) -> float:
    """Standard deviation (ddof=0) of the finite Delta mag (mag); NaN when none is finite."""
    d = _finite(dmag)
    return float(d.std()) if d.size else math.nan


def nmad(dmag) -> float:
    """1.4826 x median |Delta mag - median(Delta mag)| over the finite Delta mag (mag)."""
    d = _finite(dmag)
    if not d.size:
        return math.nan
    return NMAD_SCALE * float(np.median(np.abs(d - np.median(d))))


def outlier_fraction(dmag, threshold: float = OUTLIER_DMAG) -> float:
    """Fraction of galaxies with |Delta mag| > threshold (non-detections, +inf, count)."""
    d = _as_float(dmag).ravel()
    return float(np.mean(np.abs(d) > threshold)) if d.size else math.nan


def detected_fraction(flux) -> float:
    """Fraction of galaxies with a predicted flux > 0."""
    f = _as_float(flux).ravel()
    return float(np.mean(f > 0)) if f.size else math.nan


def mask_counts(pred, truth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of masks over their last two axes.

    Args:
        pred: predicted masks, shape (..., H, W), values in [0, 1]; thresholded at >= 0.5.
        truth: truth masks of the same shape, 0/1 (anything > 0 counts as inside).

    Returns:
        ``(n_intersection, n_pred, n_true)``, int64 arrays of shape (...).
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    lead = pred.shape[:-2]
    p = (pred >= 0.5) if pred.dtype != np.bool_ else pred
    t = (truth > 0) if truth.dtype != np.bool_ else truth
    p = np.ascontiguousarray(p).reshape(*lead, -1)
    t = np.ascontiguousarray(t).reshape(*lead, -1)
    if p.shape[-1] % 8 == 0:
        # Each bool is one byte 0/1, so the popcount of a 64-bit word counts its True bytes.
        pw, tw = p.view(np.uint64), t.view(np.uint64)
        count = np.bitwise_count
        return (
            count(pw & tw).sum(-1, dtype=np.int64),
            count(pw).sum(-1, dtype=np.int64),
            count(tw).sum(-1, dtype=np.int64),
        )
    return (
        np.count_nonzero(p & t, axis=-1).astype(np.int64),
        np.count_nonzero(p, axis=-1).astype(np.int64),
        np.count_nonzero(t, axis=-1).astype(np.int64),
    )


def iou_from_counts(n_inter, n_pred, n_true) -> np.ndarray:
    """IoU from pixel counts; NaN where both masks are empty."""
    n_inter, n_pred, n_true = _as_float(n_inter), _as_float(n_pred), _as_float(n_true)
    union = n_pred + n_true - n_inter
    out = np.full(union.shape, np.nan)
    np.divide(n_inter, union, out=out, where=union > 0)
    return out


def iou(pred, truth) -> np.ndarray:
    """Intersection over union per mask, over the last two axes.

    Args:
        pred: predicted masks (..., H, W) in [0, 1], thresholded at >= 0.5.
        truth: truth masks (..., H, W), 0/1.

    Returns:
        IoU, shape (...); NaN where both masks are empty.
    """
    return iou_from_counts(*mask_counts(pred, truth))


def mean_iou(pred, truth) -> float:
    """Mean IoU over masks with a non-empty union; NaN when there is none."""
    v = iou(pred, truth).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def mask_area_bias(pred, truth) -> float:
    """The paper's Delta n = <n_true - n_pred> / <n_true> (pixel counts); NaN if no truth pixel."""
    _, n_pred, n_true = mask_counts(pred, truth)
    total = float(n_true.sum())
    return (total - float(n_pred.sum())) / total if total > 0 else math.nan


def z_scores(flux, flux_err, truth) -> np.ndarray:
    """(f - t) / sigma, dimensionless."""
    return (_as_float(flux) - _as_float(truth)) / _as_float(flux_err)


def coverage(flux, flux_err, truth, level: float = 0.68) -> float:
    """Fraction of truths inside the Gaussian interval f +- z sigma of the given level.

    ``level`` 0.68 uses z = 1 (68.27%), 0.95 uses z = 1.96; other levels use the exact quantile.
    """
    if math.isclose(level, 0.68):
        z = Z68
    elif math.isclose(level, 0.95):
        z = Z95
    else:
        from scipy.special import ndtri

        z = float(ndtri(0.5 + level / 2))
    zs = np.abs(z_scores(flux, flux_err, truth)).ravel()
    return float(np.mean(zs <= z)) if zs.size else math.nan


def mean_z(flux, flux_err, truth) -> float:
    """Mean z-score (f - t) / sigma; 0 for unbiased predictions."""
    zs = z_scores(flux, flux_err, truth).ravel()
    return float(zs.mean()) if zs.size else math.nan


def crps_gaussian(flux, flux_err, truth) -> np.ndarray:
    """CRPS of the Gaussian forecast N(f, sigma^2) at the truth t, in counts (per galaxy).

    CRPS = sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (t - f) / sigma.
    """
    from scipy.special import ndtr

    sigma = _as_float(flux_err)
    z = (_as_float(truth) - _as_float(flux)) / sigma
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def crps(flux, flux_err, truth) -> float:
    """Mean Gaussian CRPS in counts; NaN when empty."""
    v = crps_gaussian(flux, flux_err, truth).ravel()
    return float(v.mean()) if v.size else math.nan


def crps_fraction(flux, flux_err, truth) -> float:
    """Mean Gaussian CRPS divided by the true flux (a fraction, comparable across fluxes)."""
    v = (crps_gaussian(flux, flux_err, truth) / _as_float(truth)).ravel()
    return float(v.mean()) if v.size else math.nan


HEADLINE = (
    "n",
    "mape",
    "median_ape",
    "bias",
    "median_dmag",
    "scatter",
    "nmad",
    "outlier_fraction",
    "detected_fraction",
)
MASK_METRICS = ("iou", "mask_area_bias")
CALIBRATION_METRICS = ("coverage_68", "coverage_95", "mean_z", "crps", "crps_fraction")


def summarize(
    flux, truth, *, flux_err=None, n_inter=None, n_pred=None, n_true=None
) -> dict[str, float]:
    """All metrics of one set of galaxies, as a dict (the ``{...}`` of the score document).

    Args:
        flux, truth: predicted and true fluxes (n,), counts.
        flux_err: optional 1-sigma errors (n,), counts: adds the calibration metrics.
        n_inter, n_pred, n_true: optional mask pixel counts (n,) from :func:`mask_counts`: adds
            ``iou`` and ``mask_area_bias``.

    Returns:
        ``n`` (int) and every metric (float, NaN when undefined).
    """
    flux, truth = _as_float(flux).ravel(), _as_float(truth).ravel()
    dm = delta_mag(flux, truth)
    out: dict[str, float] = {
        "n": int(flux.size),
        "mape": mape(flux, truth),
        "median_ape": median_ape(flux, truth),
        "bias": bias(dm),
        "median_dmag": median_dmag(dm),
        "scatter": scatter(dm),
        "nmad": nmad(dm),
        "outlier_fraction": outlier_fraction(dm),
        "detected_fraction": detected_fraction(flux),
    }
    if n_inter is not None:
        v = iou_from_counts(n_inter, n_pred, n_true)
        v = v[np.isfinite(v)]
        out["iou"] = float(v.mean()) if v.size else math.nan
        total = float(np.sum(n_true))
        out["mask_area_bias"] = (total - float(np.sum(n_pred))) / total if total else math.nan
    if flux_err is not None:
        err = _as_float(flux_err).ravel()
        out["coverage_68"] = coverage(flux, err, truth, 0.68)
        out["coverage_95"] = coverage(flux, err, truth, 0.95)
        out["mean_z"] = mean_z(flux, err, truth)
        out["crps"] = crps(flux, err, truth)
        out["crps_fraction"] = crps_fraction(flux, err, truth)
    return out
