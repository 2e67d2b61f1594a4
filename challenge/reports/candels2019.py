"""The ``candels2019`` track: the paper's own CANDELS test predictions, scored by this kit.

Boucaud et al. (2019) released their test catalogue (4,776 real CANDELS blends; shipped in
``challenge/data/candels2019/``, see its README): truth fluxes ``g1_flux`` / ``g2_flux`` (zero point
25.96, from ``g*_mag``), the predictions of blend2flux (``_b2f``), blend2mask2flux (``_b2m2f``) and
SExtractor (``_sex``), distances, radii, types and SExtractor's detection case per blend.

:func:`load_candels` converts it into this kit's :class:`~challenge.scoring.scores.Truth` and
three :class:`~challenge.contract.submission.Submission` records, so the very same scoring code runs
on it.
Conventions that reproduce the paper's numbers (verified in tests/test_candels2019.py):

* sep fluxes are derived from ``g*_sex_mag`` with zero point 25.96 (the ``g*_flux_sex`` columns use
  zero point 25.67 and are not on the truth's scale);
* the paper's selection: a central counts when SExtractor's case is 0 (central only) or 2 (both),
  a companion when it is 1 (companion only) or 2. Every method is scored on the same galaxies.
* no sigma-clipping, no galaxy dropped beyond that selection: the kit's definitions as they stand
  (MAPE = mean APE; bias = mean Delta mag; sigma = std, ddof = 0; outlier |Delta mag| > 0.75).
* the "all" view scores every galaxy, a sep non-detection (NaN magnitude) as flux 0, i.e. a failure
  (APE = 1, Delta mag = +inf, counted as an outlier).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from challenge.contract.errors import ReleaseError
from challenge.contract.submission import Submission
from challenge.pipeline.photometry import mag_to_flux
from challenge.scoring.scores import Score, Truth, atomic_write_text, paper_selection, score

NAME = "candels2019"
ZERO_POINT = 25.96  # AB, CANDELS F160W as in the paper (truth and g*_sex_mag)
SEX_FLUX_ZERO_POINT = 25.67  # the zero point of the released g*_flux_sex columns (not used)
CSV_NAME = "boucaud2019_candels_test_predictions.csv.gz"  # gzip-compressed CSV
TYPES = {"sph": "bulge", "disk": "disc", "sphd": "bulge+disc", "irr": "irregular"}
METHODS = {"blend2flux": "b2f", "blend2mask2flux": "b2m2f", "sep": "sex"}
SELECTIONS = ("paper", "all")
# The paper's numbers (Boucaud et al. 2019, Sect. 4 and Table 2), central galaxies, paper selection.
PAPER = {
    "blend2flux": {"mape": 7.57, "scatter": 0.120},
    "blend2mask2flux": {"mape": 6.79},
    "sep": {"bias": 0.10, "scatter": 0.54, "outlier_fraction": 0.124},
}


def data_path() -> Path:
    """The shipped CSV."""
    return Path(str(resources.files("challenge") / "data" / "candels2019" / CSV_NAME))


def read_catalogue(path: str | Path | None = None) -> pd.DataFrame:
    """The released catalogue as a DataFrame (one row per blend)."""
    path = Path(path) if path is not None else data_path()
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as err:
        raise ReleaseError(f"{path}: cannot read the CANDELS catalogue ({err})") from None


def load_candels(path: str | Path | None = None) -> tuple[Truth, dict[str, Submission]]:
    """Truth and the three method submissions of the paper's CANDELS test set.

    Returns:
        ``(truth, {"blend2flux": ..., "blend2mask2flux": ..., "sep": ...})``; the sep submission
        carries SExtractor's per-blend ``detection`` case, flux 0 where it found no galaxy.
    """
    df = read_catalogue(path)
    ids = df["id"].to_numpy(np.int64)
    pair = lambda a, b: np.stack([df[a].to_numpy(float), df[b].to_numpy(float)], axis=1)  # noqa: E731
    mag = pair("g1_mag", "g2_mag")
    flux = pair("g1_flux", "g2_flux")
    morph = np.stack([df["g1_type"].map(TYPES).to_numpy(str),
                      df["g2_type"].map(TYPES).to_numpy(str)], axis=1)
    truth = Truth(
        release=NAME, kind="catalogue", blend_id=ids, flux=flux, mag=mag,
        distance_re=df["distance"].to_numpy(float)[:, None] / pair("g1_rad", "g2_rad"),
        morphology=morph, zero_point=ZERO_POINT, stamp_size=128,
    )
    detection = df["detection"].to_numpy(np.int8)
    subs = {}
    for method, suffix in METHODS.items():
        if method == "sep":
            pred = mag_to_flux(pair("g1_sex_mag", "g2_sex_mag"), ZERO_POINT)
            pred = np.where(np.isfinite(pred), pred, 0.0)
        else:
            pred = pair(f"g1_flux_{suffix}", f"g2_flux_{suffix}")
        subs[method] = Submission(
            name=method, release=NAME, blend_id=ids.copy(), flux=pred,
            detection=detection.copy(), path=Path(f"{NAME}/{method}"),
            metadata={"name": method, "authors": ["Boucaud et al. 2019"],
                      "link": "https://github.com/aboucaud/coindeblend"},
        )
    return truth, subs


def score_candels(n_boot: int = 1000, path: str | Path | None = None,
                  seed: int | None = None) -> dict[tuple[str, str], Score]:
    """Scores of the three methods under the paper's selection and on all galaxies.

    Returns:
        ``{(method, selection): Score}`` with selection ``"paper"`` or ``"all"``.
    """
    truth, subs = load_candels(path)
    sel = paper_selection(subs["sep"].detection)
    kw: dict[str, Any] = {"n_boot": n_boot, "with_bins": True}
    if seed is not None:
        kw["seed"] = seed
    out = {}
    for method, sub in subs.items():
        out[(method, "paper")] = score(sub, truth, selection=sel, selection_name="paper", **kw)
        out[(method, "all")] = score(sub, truth, selection_name="all", **kw)
    return out


def candels_table(scores: dict[tuple[str, str], Score]) -> pd.DataFrame:
    """One row per method, selection and role with the headline metrics and the paper's values."""
    rows = []
    for (method, selection), sc in scores.items():
        for role in ("central", "companion", "both"):
            ov, ci = sc.overall[role], sc.ci95.get(role, {})
            paper = PAPER.get(method, {}) if (selection, role) == ("paper", "central") else {}
            rows.append({
                "method": method, "selection": selection, "role": role, "n": ov["n"],
                "mape": ov["mape"], "mape_lo": ci.get("mape", [np.nan] * 2)[0],
                "mape_hi": ci.get("mape", [np.nan] * 2)[1], "bias": ov["bias"],
                "median_dmag": ov["median_dmag"], "scatter": ov["scatter"], "nmad": ov["nmad"],
                "outlier_fraction": ov["outlier_fraction"],
                "detected_fraction": ov["detected_fraction"],
                **{f"paper_{k}": v for k, v in paper.items()},
            })
    return pd.DataFrame(rows)


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def candels_markdown(table: pd.DataFrame) -> str:
    """The track as Markdown: the kit's numbers with the paper's next to them."""
    lines = [
        "# candels2019: the paper's CANDELS test predictions scored by blendbench",
        "",
        "Boucaud et al. 2019 (MNRAS 491, 2481) released the predictions of blend2flux, "
        "blend2mask2flux and SExtractor on 4,776 real CANDELS blends. *paper* selection: a "
        "central counts when SExtractor detected the central (case 0 or 2), a companion when it "
        "detected the companion (case 1 or 2), for every method. *all*: every galaxy, a sep "
        "non-detection scored as a failure (flux 0: APE 100%, Δmag +∞, an outlier). "
        "sep magnitudes are `g*_sex_mag` (zero point 25.96). σ is the standard deviation of Δmag, "
        "outliers |Δmag| > 0.75; 95% bootstrap intervals over blends; the paper's values in "
        "parentheses.",
        "",
        "| method | selection | galaxies | N | MAPE (%) [95%] | bias (mag) | median Δmag | "
        "σ (mag) | NMAD | outliers (%) | detected (%) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def paper(row, key, spec, scale=1.0):
        v = row.get(f"paper_{key}")
        return "" if v is None or pd.isna(v) else f" (paper {format(v * scale, spec)})"

    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['selection']} | {r['role']} | {int(r['n'])} | "
            f"{_fmt(r['mape'], '.2f')} [{_fmt(r['mape_lo'], '.2f')}, {_fmt(r['mape_hi'], '.2f')}]"
            f"{paper(r, 'mape', '.2f')} | {_fmt(r['bias'], '+.3f')}{paper(r, 'bias', '.2f')} | "
            f"{_fmt(r['median_dmag'], '+.3f')} | {_fmt(r['scatter'], '.3f')}"
            f"{paper(r, 'scatter', '.3f' if r['method'] != 'sep' else '.2f')} | "
            f"{_fmt(r['nmad'], '.3f')} | {_fmt(100 * r['outlier_fraction'], '.1f')}"
            f"{paper(r, 'outlier_fraction', '.1f', 100)} | "
            f"{_fmt(100 * r['detected_fraction'], '.1f')} |"
        )
    lines += ["", "The kit's blend2mask2flux central MAPE is 6.7848% (the paper prints 6.79; no "
              "selection or convention tried lands on [6.785, 6.795): see "
              "`challenge/data/candels2019/README.md`).", "",
              "Source: github.com/aboucaud/coindeblend `paper_plots/output_catalog.csv` "
              "(BSD-3-Clause), shipped in `challenge/data/candels2019/`.", ""]
    return "\n".join(lines)


def build_candels_track(out_dir: str | Path,
                        n_boot: int = 1000) -> tuple[Path, str, pd.DataFrame]:
    """Score the track and write ``candels2019.md`` into ``out_dir`` (atomically).

    Returns:
        ``(path, markdown, table)``, the table as :func:`candels_table` returns it.
    """
    table = candels_table(score_candels(n_boot=n_boot))
    text = candels_markdown(table)
    path = Path(out_dir) / f"{NAME}.md"
    atomic_write_text(path, text)
    return path, text, table
