"""Scores of a submission against a release: overall, binned, bootstrap intervals, comparisons.

The flow is ``load_truth`` (release folder or shipped release name -> :class:`Truth`) then
``score`` (a :class:`~challenge.contract.submission.Submission` and a Truth -> :class:`Score`, whose
``to_dict()`` is the JSON of ``score --json``) or ``compare`` (two submissions -> paired
bootstrap differences). Every function takes an optional per-galaxy ``selection`` (n_blends, 2)
bool: only selected galaxies are scored (the CANDELS track applies the paper's selection with it).

Bootstrap: blends are resampled with replacement (both galaxies of a blend go together), 1,000
times with a fixed seed; the resamples are held as an (n_boot, n_blends) matrix of counts, so means
are one matrix product and medians a cumulative sum over the values sorted once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from challenge.contract.errors import ReleaseError
from challenge.contract.hdf5 import storage_problem
from challenge.contract.ids import id_positions
from challenge.contract.release import DEFAULT_SEED, MORPHOLOGIES, resolve_release
from challenge.contract.submission import Submission, match_to_release
from challenge.scoring import metrics as M

ROLES = ("both", "central", "companion")
TRUTH_KINDS = ("sep", "model")
N_BOOT = 1000
DELTA_MAG_EDGES = np.arange(-2.0, 2.0 + 1e-9, 0.5)  # Delta mag_pair = m_cen - m_comp, mag
DISTANCE_EDGES = np.append(np.arange(0.0, 4.0 + 1e-9, 0.5), np.inf)  # distance / R_e
BIN_METRICS = ("n", "median_dmag", "scatter", "mape", "outlier_fraction")
# Loss transforms for deciding which of two methods is better (lower loss wins).
_LOSS = {
    "bias": abs, "median_dmag": abs, "mean_z": abs, "mask_area_bias": abs,
    "detected_fraction": lambda v: -v, "iou": lambda v: -v,
    "coverage_68": lambda v: abs(v - 0.6827), "coverage_95": lambda v: abs(v - 0.95),
}
_NEGATED = ("detected_fraction", "iou")  # higher is better: same verdict as the signed A - B
# compare() reports these losses (and their interval, on which the verdict rests) next to A - B.
_LOSS_NAME = {
    "bias": "|bias|", "median_dmag": "|median Δmag|", "mean_z": "|mean z|",
    "mask_area_bias": "|mask area bias|", "coverage_68": "|coverage 68 − nominal|",
    "coverage_95": "|coverage 95 − nominal|",
}
_PAIR_COLUMNS = ("blend_id", "mag_central", "mag_companion", "flux_central", "flux_companion",
                 "r_e_central", "r_e_companion", "morph_central", "morph_companion", "distance_px")


@dataclass
class Truth:
    """The test-set truth of a release, in the order of its pairs table.

    Attributes:
        release: release name.
        kind: ``"sep"`` (FLUX_AUTO of the isolated stamp) or ``"model"`` (noiseless model flux).
        blend_id: (n_blends,) int64.
        flux: (n_blends, 2) float64 [central, companion] true flux, counts, > 0.
        mag: (n_blends, 2) AB magnitudes of the pair table (bins Delta mag_pair).
        distance_re: (n_blends, 2) distance / R_e of each galaxy.
        morphology: (n_blends, 2) str, one of MORPHOLOGIES.
        zero_point: AB mag of 1 count.
        stamp_size: px.
        masks_path: ``test_truth.h5`` holding the truth masks, if the release folder has one.
        masks: optional in-memory truth masks (n_blends, 2, H, W) bool (used when no file).
        galaxy_id: optional (n_blends, 2) int64 [central, companion] galaxy ids of the release.
    """

    release: str
    kind: str
    blend_id: np.ndarray
    flux: np.ndarray
    mag: np.ndarray
    distance_re: np.ndarray
    morphology: np.ndarray
    zero_point: float
    stamp_size: int = 128
    masks_path: Path | None = None
    masks: np.ndarray | None = None
    galaxy_id: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.blend_id)
        for name in ("flux", "mag", "distance_re", "morphology", "galaxy_id"):
            if getattr(self, name) is not None and getattr(self, name).shape != (n, 2):
                raise ValueError(f"truth {name} has shape {getattr(self, name).shape}")
        if not np.all(self.flux > 0):
            raise ReleaseError(f"release {self.release!r}: truth fluxes must be > 0")

    @property
    def n(self) -> int:
        return len(self.blend_id)

    @property
    def delta_mag_pair(self) -> np.ndarray:
        """(n_blends,) m_central - m_companion, mag."""
        return self.mag[:, 0] - self.mag[:, 1]

    @property
    def has_masks(self) -> bool:
        return self.masks is not None or self.masks_path is not None

    def subset(self, index: np.ndarray) -> Truth:
        """The truth restricted / reordered to ``index`` (positions, (m,) int).

        Truth masks are kept only when in memory (``test_truth.h5`` holds all the blends).
        """
        return dataclasses.replace(
            self, blend_id=self.blend_id[index], flux=self.flux[index], mag=self.mag[index],
            distance_re=self.distance_re[index], morphology=self.morphology[index],
            masks_path=None, masks=None if self.masks is None else self.masks[index],
            galaxy_id=None if self.galaxy_id is None else self.galaxy_id[index])


def load_truth(data: str | Path, truth: str = "sep") -> Truth:
    """The truth of a release folder, or of a release shipped with the kit (``"v1"``).

    Flux truth comes from ``pairs_test.ecsv`` (committed tables are enough); masks, for IoU,
    from ``test_truth.h5`` when the folder has one.
    """
    from astropy.table import Table

    if truth not in TRUTH_KINDS:
        raise ReleaseError(f"--truth {truth!r}: choose one of {', '.join(TRUTH_KINDS)}")
    folder, info = resolve_release(data)
    path = folder / "pairs_test.ecsv"
    try:
        table = Table.read(path, format="ascii.ecsv")
    except FileNotFoundError:
        raise ReleaseError(f"{path}: missing; regenerate the release") from None
    except Exception as err:
        raise ReleaseError(f"{path}: unreadable ({err}); regenerate the release") from None
    cols = list(_PAIR_COLUMNS)
    if truth == "model":
        cols += ["model_flux_central", "model_flux_companion"]
    missing = [c for c in cols if c not in table.colnames]
    if missing:
        hint = (" (--truth model needs a synthetic release)" if truth == "model" else "")
        raise ReleaseError(f"{path}: missing columns {', '.join(missing)}{hint}")
    prefix = "model_flux" if truth == "model" else "flux"
    flux = np.stack([np.asarray(table[f"{prefix}_central"], float),
                     np.asarray(table[f"{prefix}_companion"], float)], axis=1)
    dist = np.asarray(table["distance_px"], float)
    r_e = np.stack([np.asarray(table["r_e_central"], float),
                    np.asarray(table["r_e_companion"], float)], axis=1)
    truth_h5 = folder / "test_truth.h5"
    ids = ("central_id", "companion_id")
    return Truth(
        release=info.spec.name,
        kind=truth,
        blend_id=np.asarray(table["blend_id"], dtype=np.int64),
        flux=flux,
        mag=np.stack([np.asarray(table["mag_central"], float),
                      np.asarray(table["mag_companion"], float)], axis=1),
        distance_re=dist[:, None] / r_e,
        morphology=np.stack([np.asarray(table["morph_central"], str),
                             np.asarray(table["morph_companion"], str)], axis=1),
        zero_point=float(info.spec.zero_point),
        stamp_size=int(info.spec.stamp_size),
        masks_path=truth_h5 if truth_h5.is_file() else None,
        galaxy_id=np.stack([np.asarray(table[c], dtype=np.int64) for c in ids], axis=1)
        if set(ids) <= set(table.colnames) else None,
    )


def truth_mask_counts(truth: Truth, pred_masks: np.ndarray,
                      order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts (intersection, predicted, true), each (n_blends, 2), in truth order.

    ``pred_masks[order[i]]`` is the predicted mask pair of truth blend i. Truth masks are read
    from ``test_truth.h5`` chunk by chunk (never all in memory) or taken from ``truth.masks``.
    """
    n = truth.n
    out = tuple(np.zeros((n, 2), dtype=np.int64) for _ in range(3))
    if truth.masks is not None:
        res = M.mask_counts(pred_masks[order], truth.masks)
        for o, r in zip(out, res, strict=True):
            o[:] = r
        return out
    import h5py

    try:
        with h5py.File(truth.masks_path, "r") as f:
            for name in ("blend_id", "masks"):
                problem = storage_problem(f[name], truth.masks_path)
                if problem is not None:
                    raise ReleaseError(f"{truth.masks_path}: dataset '{name}' is a {problem}; "
                                       "regenerate the release")
            ids = np.asarray(f["blend_id"][:], dtype=np.int64)
            ds = f["masks"]
            if ds.shape[0] != ids.size or ds.shape[1:] != pred_masks.shape[1:]:
                raise ReleaseError(f"{truth.masks_path}: masks have shape {ds.shape}; "
                                   "regenerate the release")
            tpos, found = id_positions(truth.blend_id, ids)
            if not found.all():
                raise ReleaseError(f"{truth.masks_path}: blend ids differ from pairs_test.ecsv; "
                                   "regenerate the release")
            slab = ds.chunks[0] if ds.chunks else 64
            slab = max(1, slab * max(1, 64 // slab))
            buf = np.empty((slab, *ds.shape[1:]), dtype=ds.dtype)
            for start in range(0, ids.size, slab):
                stop = min(start + slab, ids.size)
                part = buf[: stop - start]
                ds.read_direct(part, np.s_[start:stop], np.s_[0: stop - start])
                rows = tpos[start:stop]
                res = M.mask_counts(pred_masks[order[rows]], part.astype(bool, copy=False)
                                    if part.dtype == bool else part > 0)
                for o, r in zip(out, res, strict=True):
                    o[rows] = r
    except (OSError, KeyError) as err:
        raise ReleaseError(f"{truth.masks_path}: unreadable ({err}); regenerate the release") \
            from None
    return out


# ---------------------------------------------------------------------------------------------
# per-galaxy arrays


@dataclass
class Galaxies:
    """Per-galaxy inputs of the metrics, aligned with the truth; all arrays (n_blends, 2).

    ``selected`` marks the galaxies that count; ``counts`` holds the mask pixel counts
    (intersection, predicted, true) when masks are scored; ``flux_err`` the submitted errors.
    """

    flux: np.ndarray
    truth: np.ndarray
    selected: np.ndarray
    counts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    flux_err: np.ndarray | None = None
    ape: np.ndarray = field(init=False)
    dmag: np.ndarray = field(init=False)

    def __post_init__(self):
        self.ape = M.ape(self.flux, self.truth)
        self.dmag = M.delta_mag(self.flux, self.truth)

    @property
    def n(self) -> int:
        return self.flux.shape[0]

    def summary(self, where: np.ndarray) -> dict[str, float]:
        """:func:`~challenge.scoring.metrics.summarize` of the galaxies where ``where`` (n, 2)."""
        w = where & self.selected
        kw: dict[str, Any] = {}
        if self.counts is not None:
            kw.update(n_inter=self.counts[0][w], n_pred=self.counts[1][w],
                      n_true=self.counts[2][w])
        if self.flux_err is not None:
            kw["flux_err"] = self.flux_err[w]
        return M.summarize(self.flux[w], self.truth[w], **kw)


def _role_mask(n: int, role: str) -> np.ndarray:
    m = np.zeros((n, 2), dtype=bool)
    if role in ("both", "central"):
        m[:, 0] = True
    if role in ("both", "companion"):
        m[:, 1] = True
    return m


def paper_selection(detection: np.ndarray) -> np.ndarray:
    """The paper's selection from a per-blend detection case (n,) -> (n, 2) bool.

    Central counted when the case is 0 (central only) or 2 (both); companion when 1 or 2.
    """
    det = np.asarray(detection)
    return np.stack([np.isin(det, (0, 2)), np.isin(det, (1, 2))], axis=1)


def galaxies_for(sub: Submission, truth: Truth, selection: np.ndarray | None = None,
                 warnings: list[str] | None = None) -> Galaxies:
    """Align a submission with the truth (validating it) and build the per-galaxy arrays."""
    order = match_to_release(sub, truth.blend_id, truth.release, truth.stamp_size)
    sel = np.ones((truth.n, 2), dtype=bool) if selection is None else np.asarray(selection, bool)
    if sel.shape != (truth.n, 2):
        raise ValueError(f"selection has shape {sel.shape}, expected ({truth.n}, 2)")
    counts = None
    if sub.masks is not None:
        if truth.has_masks:
            counts = truth_mask_counts(truth, sub.masks, order)
        elif warnings is not None:
            warnings.append(f"{sub.path.name}: masks given but release {truth.release!r} has no "
                            "test_truth.h5 here; IoU skipped (score against a generated release "
                            "folder: `blendbench generate --out DIR`, then --data DIR)")
    flux = sub.flux[order]
    if warnings is not None and looks_like_magnitudes(flux, truth.flux):
        warnings.append(f"{sub.path.name}: every flux lies within 10-35 while the true fluxes "
                        "span decades: magnitudes? give fluxes in counts (10**(-0.4 (m - zero "
                        "point)))")
    return Galaxies(
        flux=flux, truth=truth.flux, selected=sel, counts=counts,
        flux_err=None if sub.flux_err is None else sub.flux_err[order],
    )


def looks_like_magnitudes(flux: np.ndarray, truth: np.ndarray) -> bool:
    """Whether predicted fluxes (n, 2) look like AB magnitudes: every detected one within
    10-35 while the true fluxes (n, 2) span more than a factor of 100."""
    found = flux[np.isfinite(flux) & (flux > 0)]
    real = truth[np.isfinite(truth) & (truth > 0)]
    if found.size < 10 or real.size < 2:
        return False
    return bool(found.min() >= 10 and found.max() <= 35 and real.max() > 100 * real.min())


# ---------------------------------------------------------------------------------------------
# bins


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin number of each value for [lo, hi) bins (last finite bin closed); -1 outside."""
    idx = np.searchsorted(edges, values, side="right") - 1
    nb = len(edges) - 1
    last_closed = np.isfinite(edges[-1]) & (values == edges[-1])
    idx = np.where(last_closed, nb - 1, idx)
    return np.where((idx >= 0) & (idx < nb), idx, -1)


def _edge_label(lo: float, hi: float) -> str:
    return f"{lo:g}+" if not np.isfinite(hi) else f"[{lo:g}, {hi:g})"


@dataclass(frozen=True)
class BinScheme:
    """A binning of the galaxies: per-galaxy bin numbers (n, 2) and the bins' descriptions."""

    name: str
    index: np.ndarray
    bins: list[dict[str, Any]]

    def labels(self) -> np.ndarray:
        """(n_blends, 2) str: the label of each galaxy's bin, "" outside every bin."""
        names = np.array([b["label"] for b in self.bins] + [""])
        return names[np.where(self.index >= 0, self.index, len(self.bins))]


def bin_schemes(truth: Truth) -> list[BinScheme]:
    """Bins: Delta mag_pair (0.5 wide in [-2, 2]), distance / R_e (0.5 up to 4, 4+), morphology."""
    dm_pair = np.repeat(truth.delta_mag_pair[:, None], 2, axis=1)
    dm_bins = [{"lo": float(lo), "hi": float(hi), "label": _edge_label(lo, hi)}
               for lo, hi in zip(DELTA_MAG_EDGES[:-1], DELTA_MAG_EDGES[1:], strict=True)]
    d_bins = [{"lo": float(lo), "hi": None if not np.isfinite(hi) else float(hi),
               "label": _edge_label(lo, hi)}
              for lo, hi in zip(DISTANCE_EDGES[:-1], DISTANCE_EDGES[1:], strict=True)]
    morph_index = np.full(truth.morphology.shape, -1)
    for k, name in enumerate(MORPHOLOGIES):
        morph_index[truth.morphology == name] = k
    return [
        BinScheme("delta_mag", _bin_index(dm_pair, DELTA_MAG_EDGES), dm_bins),
        BinScheme("distance", _bin_index(truth.distance_re, DISTANCE_EDGES), d_bins),
        BinScheme("morphology", morph_index, [{"label": m} for m in MORPHOLOGIES]),
    ]


def bin_cells(schemes: list[BinScheme], n: int):
    """Every (scheme, role, bin index, bin description, (n, 2) bool galaxies in it), in the
    order of the score's bin tables."""
    for scheme in schemes:
        for role in ROLES:
            rmask = _role_mask(n, role)
            for k, desc in enumerate(scheme.bins):
                yield scheme, role, k, desc, rmask & (scheme.index == k)


def binned(gal: Galaxies, schemes: list[BinScheme]) -> dict[str, list[dict[str, Any]]]:
    """Metrics per bin and role; an empty bin has n = 0 and NaN metrics."""
    out: dict[str, list[dict[str, Any]]] = {scheme.name: [] for scheme in schemes}
    for scheme, role, _, desc, where in bin_cells(schemes, gal.n):
        out[scheme.name].append({"role": role, **desc, **gal.summary(where)})
    return out


# ---------------------------------------------------------------------------------------------
# bootstrap


def _weighted_median(values: np.ndarray, valid: np.ndarray, W: np.ndarray,
                     half_window: int | None = None) -> np.ndarray:
    """Median of ``values[valid]`` in every resample: (n, c) values, (B, n) counts -> (B,).

    The values are sorted once; a resample's median is the sorted value where its cumulative
    count crosses half its total. Counts are accumulated only in a window around the middle of
    the sorted values (the weight before the window is one matrix-vector product); rows whose
    median falls outside the window are redone over the full range, so the result is exact.
    """
    B, n = W.shape
    rows, cols = np.nonzero(valid)
    v = values[rows, cols]
    m = v.size
    if m == 0:
        return np.full(B, np.nan)
    order = np.argsort(v, kind="stable")
    v, rows = v[order], rows[order]
    total = W @ np.bincount(rows, minlength=n).astype(W.dtype)
    total = total.astype(np.int64)
    ranks = ((total - 1) // 2, total // 2)
    half = max(128, int(5 * math.sqrt(2 * m))) if half_window is None else half_window
    j0, j1 = max(0, m // 2 - half), min(m, m // 2 + half)
    before = (W @ np.bincount(rows[:j0], minlength=n).astype(W.dtype)).astype(np.int64)
    cum = np.cumsum(W[:, rows[j0:j1]], axis=1, dtype=np.int64)
    cum += before[:, None]
    pos = []
    for k in ranks:
        inside = (k >= before) & (k < cum[:, -1])
        p = j0 + (cum <= k[:, None]).sum(axis=1)
        redo = np.flatnonzero(~inside & (total > 0))
        if redo.size:
            full = np.cumsum(W[np.ix_(redo, rows)], axis=1, dtype=np.int64)
            p[redo] = (full <= k[redo, None]).sum(axis=1)
        pos.append(np.clip(p, 0, m - 1))
    med = 0.5 * (v[pos[0]] + v[pos[1]])
    return np.where(total > 0, med, np.nan)


def _rowwise_median_of_finite(x: np.ndarray, n_finite: np.ndarray) -> np.ndarray:
    """Median of the finite entries of each row of x (B, m), non-finite entries being +inf."""
    out = np.full(x.shape[0], np.nan)
    ok = n_finite > 0
    if not ok.any():
        return out
    lo_k, hi_k = (n_finite - 1) // 2, n_finite // 2
    kmin, kmax = int(lo_k[ok].min()), int(hi_k[ok].max())
    part = np.partition(x, (kmin, kmax) if kmax > kmin else kmin, axis=1)
    window = np.sort(part[:, kmin: kmax + 1], axis=1)
    r = np.arange(x.shape[0])
    lo = window[r, np.clip(lo_k - kmin, 0, kmax - kmin)]
    hi = window[r, np.clip(hi_k - kmin, 0, kmax - kmin)]
    out[ok] = 0.5 * (lo[ok] + hi[ok])
    return out


def _nmad_boot(dm_valid: np.ndarray, idx: np.ndarray, med: np.ndarray,
               n_valid: np.ndarray, role: str) -> np.ndarray:
    """NMAD in every resample, from the resampled Delta mag (invalid entries +inf)."""
    if role == "central":
        x = dm_valid[:, 0].astype(np.float32)[idx]
    elif role == "companion":
        x = dm_valid[:, 1].astype(np.float32)[idx]
    else:
        x = dm_valid.astype(np.float32)[idx].reshape(idx.shape[0], -1)
    x -= med[:, None]
    np.abs(x, out=x)
    return M.NMAD_SCALE * _rowwise_median_of_finite(x, n_valid)


class _Bootstrap:
    """Bootstrap replicates of the headline metrics for one set of galaxies."""

    def __init__(self, gal: Galaxies, W: np.ndarray, idx: np.ndarray | None):
        self.gal, self.W, self.idx = gal, W, idx

    def replicates(self) -> dict[str, dict[str, np.ndarray]]:
        g, W = self.gal, self.W
        s = g.selected
        fin = s & np.isfinite(g.dmag)
        dm0 = np.where(fin, g.dmag, 0.0)
        c = float(dm0.sum() / max(fin.sum(), 1))
        y = np.where(fin, g.dmag - c, 0.0)
        cols: dict[str, np.ndarray] = {
            "s": s, "ape": s * g.ape, "fin": fin, "y": y, "y2": y * y,
            "out": s & (np.abs(g.dmag) > M.OUTLIER_DMAG), "det": s & (g.flux > 0),
        }
        if g.counts is not None:
            ni, npred, nt = g.counts
            iou = M.iou_from_counts(ni, npred, nt)
            ok = s & np.isfinite(iou)
            cols.update(iou_ok=ok, iou=np.where(ok, iou, 0.0), n_true=s * nt, n_pred=s * npred)
        if g.flux_err is not None:
            z = M.z_scores(g.flux, g.flux_err, g.truth)
            cr = M.crps_gaussian(g.flux, g.flux_err, g.truth)
            cols.update(c68=s & (np.abs(z) <= M.Z68), c95=s & (np.abs(z) <= M.Z95),
                        z=s * z, crps=s * cr, crpsf=s * cr / g.truth)
        names = list(cols)
        X = np.concatenate([np.asarray(cols[k], float) for k in names], axis=1)  # (n, 2K)
        S = W.astype(np.float64) @ X  # (B, 2K)
        out: dict[str, dict[str, np.ndarray]] = {}
        dm_valid = np.where(fin, g.dmag, np.inf)
        ape_valid = np.where(s, g.ape, np.inf)
        for role in ROLES:
            if role == "both":
                sums = {k: S[:, 2 * i] + S[:, 2 * i + 1] for i, k in enumerate(names)}
            else:
                j = 0 if role == "central" else 1
                sums = {k: S[:, 2 * i + j] for i, k in enumerate(names)}
            rmask = _role_mask(g.n, role)
            with np.errstate(invalid="ignore", divide="ignore"):
                n, nf = sums["s"], sums["fin"]
                mean_y = sums["y"] / nf
                r = {
                    "mape": 100 * sums["ape"] / n,
                    "bias": mean_y + c,
                    "scatter": np.sqrt(np.maximum(sums["y2"] / nf - mean_y**2, 0.0)),
                    "outlier_fraction": sums["out"] / n,
                    "detected_fraction": sums["det"] / n,
                    "median_ape": 100 * _weighted_median(ape_valid, s & rmask, W),
                    "median_dmag": _weighted_median(dm_valid, fin & rmask, W),
                }
                if self.idx is not None:
                    r["nmad"] = _nmad_boot(dm_valid, self.idx, r["median_dmag"], nf.astype(int),
                                           role)
                if "iou" in sums:
                    r["iou"] = sums["iou"] / sums["iou_ok"]
                    r["mask_area_bias"] = (sums["n_true"] - sums["n_pred"]) / sums["n_true"]
                if "z" in sums:
                    r.update(coverage_68=sums["c68"] / n, coverage_95=sums["c95"] / n,
                             mean_z=sums["z"] / n, crps=sums["crps"] / n,
                             crps_fraction=sums["crpsf"] / n)
            out[role] = r
        return out


def resample_index(n: int, n_boot: int = N_BOOT,
                   seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap resamples of n blends: (n_boot, n) drawn positions and (n_boot, n) int32 counts."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = idx + (np.arange(n_boot) * n)[:, None]
    W = np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.int32)
    return idx, W


def mape_replicates(gal: Galaxies, W: np.ndarray) -> np.ndarray:
    """MAPE (%) of the selected galaxies, central and companion, in every bootstrap resample.

    Args:
        gal: per-galaxy arrays of n blends.
        W: (B, n) resample counts from :func:`resample_index`.

    Returns:
        (B,) MAPE %; NaN in a resample without selected galaxies.
    """
    n_sel = gal.selected.sum(axis=1).astype(float)
    ape_sum = np.where(gal.selected, gal.ape, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * (W @ ape_sum) / (W @ n_sel)


def interval95(rep: np.ndarray) -> list[float]:
    """The 95% percentile interval [2.5%, 97.5%] of bootstrap replicates (B,), NaN ignored."""
    rep = rep[np.isfinite(rep)]
    if rep.size == 0:
        return [math.nan, math.nan]
    lo, hi = np.percentile(rep, [2.5, 97.5])
    return [float(lo), float(hi)]


# ---------------------------------------------------------------------------------------------
# scores


@dataclass
class Score:
    """The scores of one submission (``score --json``'s document) and the per-galaxy arrays."""

    release: str
    submission: str
    truth: str
    overall: dict[str, dict[str, float]]
    bins: dict[str, list[dict[str, Any]]]
    ci95: dict[str, dict[str, list[float]]]
    galaxies: Galaxies
    truth_table: Truth
    selection: str = "all"
    n_boot: int = N_BOOT
    seed: int = DEFAULT_SEED
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``score --json`` (NaN written as null)."""
        return _jsonable({
            "release": self.release, "submission": self.submission, "truth": self.truth,
            "selection": self.selection, "n_boot": self.n_boot, "seed": self.seed,
            "overall": self.overall, "bins": self.bins, "ci95": self.ci95,
            "warnings": self.warnings,
        })


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def score(sub: Submission, truth: Truth, *, selection: np.ndarray | None = None,
          selection_name: str = "all", n_boot: int = N_BOOT, seed: int = DEFAULT_SEED,
          with_bins: bool = True) -> Score:
    """Score a submission: overall (both / central / companion), binned and 95% intervals.

    Args:
        sub: a read submission (validated against the truth here).
        truth: from :func:`load_truth`.
        selection: optional (n_blends, 2) bool in truth order; only selected galaxies count.
        selection_name: a word recorded in the output (e.g. ``"paper"``).
        n_boot: bootstrap resamples over blends (0 = no intervals).
        seed: bootstrap seed.
        with_bins: compute the binned metrics.

    Raises:
        SubmissionError: the submission does not match the release.
    """
    warnings: list[str] = []
    gal = galaxies_for(sub, truth, selection, warnings)
    overall = {role: gal.summary(_role_mask(gal.n, role)) for role in ROLES}
    bins = binned(gal, bin_schemes(truth)) if with_bins else {}
    ci95: dict[str, dict[str, list[float]]] = {}
    if n_boot > 0:
        idx, W = resample_index(gal.n, n_boot, seed)
        reps = _Bootstrap(gal, W, idx).replicates()
        ci95 = {role: {k: interval95(v) for k, v in reps[role].items()} for role in ROLES}
    return Score(release=truth.release, submission=sub.name, truth=truth.kind, overall=overall,
                 bins=bins, ci95=ci95, galaxies=gal, truth_table=truth,
                 selection=selection_name, n_boot=n_boot, seed=seed, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# comparison


def _identity(v):
    return v


def _verdict(loss_diff_interval: list[float]) -> str:
    lo, hi = loss_diff_interval
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return "A" if hi < 0 else "B" if lo > 0 else "tie"


def _bin_mape_reps(gal: Galaxies, W: np.ndarray, schemes: list[BinScheme]):
    """MAPE of every (scheme, role, bin) in every resample: dict -> (B,) arrays."""
    cols, keys = [], []
    for scheme, role, k, _, where in bin_cells(schemes, gal.n):
        w = where & gal.selected
        cols += [w.sum(axis=1), (w * gal.ape).sum(axis=1)]
        keys.append((scheme.name, role, k))
    S = W.astype(np.float64) @ np.stack(cols, axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {key: 100 * S[:, 2 * i + 1] / S[:, 2 * i] for i, key in enumerate(keys)}


def compare(sub_a: Submission, sub_b: Submission, truth: Truth, *,
            selection: np.ndarray | None = None, n_boot: int = N_BOOT,
            seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Paired-bootstrap comparison of two submissions on the same blends.

    Every resample scores A and B on the same blends; the difference A - B of each headline metric
    gets a 95% interval, and ``better`` says which method wins ("A", "B" or "tie" when the
    interval of the difference in loss contains 0; the loss is the metric itself for MAPE, scatter,
    NMAD, outliers; its absolute value for bias and median Delta mag; minus it for detected
    fraction and IoU). Where the loss is an absolute value (bias, median Delta mag, mean z, mask
    area bias, coverage), the row also carries ``loss`` (its name, e.g. "|bias|"), ``loss_a``,
    ``loss_b``, ``loss_diff`` and ``loss_ci95``: the interval the verdict is read from, so a
    verdict is "tie" exactly when the interval it is shown with contains 0. ``bins`` does the same
    for the MAPE of every bin.

    Returns:
        ``{"release", "truth", "a", "b", "n_boot", "seed", "overall": {role: {metric: {"a", "b",
        "diff", "ci95", "better"}}}, "bins": {scheme: [{"role", "label", "n", "a", "b", "diff",
        "ci95", "better"}]}}`` (JSON-ready, NaN as null).
    """
    gal_a = galaxies_for(sub_a, truth, selection)
    gal_b = galaxies_for(sub_b, truth, selection)
    idx, W = resample_index(truth.n, n_boot, seed)
    rep_a = _Bootstrap(gal_a, W, idx).replicates()
    rep_b = _Bootstrap(gal_b, W, idx).replicates()
    overall: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        rmask = _role_mask(truth.n, role)
        sa, sb = gal_a.summary(rmask), gal_b.summary(rmask)
        rows = {}
        for metric in rep_a[role]:
            if metric not in rep_b[role]:
                continue
            loss = _LOSS.get(metric, _identity)
            ra, rb = rep_a[role][metric], rep_b[role][metric]
            loss_ci = interval95(loss(ra) - loss(rb))
            rows[metric] = {
                "a": sa[metric], "b": sb[metric], "diff": sa[metric] - sb[metric],
                "ci95": interval95(ra - rb), "better": _verdict(loss_ci),
            }
            if metric in _LOSS and metric not in _NEGATED:  # verdict on a loss, not the value
                la, lb = loss(sa[metric]), loss(sb[metric])
                rows[metric].update({"loss": _LOSS_NAME[metric], "loss_a": la, "loss_b": lb,
                                     "loss_diff": la - lb, "loss_ci95": loss_ci})
        overall[role] = rows
    schemes = bin_schemes(truth)
    ba, bb = _bin_mape_reps(gal_a, W, schemes), _bin_mape_reps(gal_b, W, schemes)
    bins: dict[str, list[dict[str, Any]]] = {scheme.name: [] for scheme in schemes}
    for scheme, role, k, desc, where in bin_cells(schemes, truth.n):
        a, b = gal_a.summary(where), gal_b.summary(where)
        iv = interval95(ba[(scheme.name, role, k)] - bb[(scheme.name, role, k)])
        bins[scheme.name].append({"role": role, "label": desc["label"], "n": a["n"],
                                  "a": a["mape"], "b": b["mape"], "diff": a["mape"] - b["mape"],
                                  "ci95": iv, "better": _verdict(iv)})
    return _jsonable({"release": truth.release, "truth": truth.kind, "a": sub_a.name,
                      "b": sub_b.name, "n_boot": n_boot, "seed": seed, "metric_bins": "mape",
                      "overall": overall, "bins": bins})


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically: a unique temporary file in the same folder, then ``os.replace``.

    Concurrent writers of the same path never leave a partial file; the last one wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write a JSON document (e.g. ``Score.to_dict()``) atomically."""
    atomic_write_text(path, json.dumps(_jsonable(doc), indent=1) + "\n")


def magnitudes(gal: Galaxies, zero_point: float) -> tuple[np.ndarray, np.ndarray]:
    """(true mag, predicted mag), each (n_blends, 2); predicted NaN for flux <= 0."""
    from challenge.pipeline.photometry import flux_to_mag

    return flux_to_mag(gal.truth, zero_point), flux_to_mag(gal.flux, zero_point)
