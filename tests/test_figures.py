"""Release montages and the mag_in_out figure: one shared normalisation, colour bars, scale bar,
legend, labels in mag, titles that state the data shown, Delta mag insets that clip nothing
silently."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from challenge.contract.release import ReleaseInfo, read_table
from challenge.contract.submission import submission_from_arrays
from challenge.pipeline import montage
from challenge.reports import figures as F
from challenge.scoring.scores import load_truth, score


@pytest.fixture
def captured(monkeypatch):
    """The figures the montages would save, kept open for inspection."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(montage, "_save", keep)
    yield figs
    for fig in figs:
        plt.close(fig)


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(plt.Text)]


def test_edges_keep_the_paper_grid_or_grow_to_the_data():
    assert list(montage._edges(np.array([1.2, 1.9]), (1.0, 1.5, 2.0), 8)) == [1.0, 1.5, 2.0]
    edges = montage._edges(np.array([0.25, 3.99]), montage.DISTANCE_EDGES_RE, 8)
    assert edges[0] <= 0.25 and edges[-1] >= 3.99 and len(edges) - 1 <= 8
    wide = montage._edges(np.array([0.1, 30.0]), montage.DISTANCE_EDGES_RE, 8)
    assert wide[0] <= 0.1 and wide[-1] >= 30.0 and len(wide) - 1 <= 8
    x = np.array([0.0, 0.49, 0.5, 1.0])
    assert list(montage._in_bin(x, np.array([0.0, 0.5, 1.0]), 1)) == [False, False, True, True]


def test_shared_norm_limits_come_from_the_sky_and_all_panels():
    sigma = 0.01
    faint = np.random.default_rng(0).normal(0, sigma, (32, 32))
    y, x = np.mgrid[:32, :32]
    bright = faint + 5.0 * np.exp(-((x - 16) ** 2 + (y - 16) ** 2) / 32)
    norm = montage.shared_norm([faint, bright], sigma)
    assert norm.vmin == pytest.approx(-montage.SKY_SIGMAS_BELOW * sigma)
    assert norm.vmax == pytest.approx(
        np.percentile(np.r_[faint.ravel(), bright.ravel()], montage.UPPER_PERCENTILE)
    )
    assert montage.shared_norm([faint], sigma).vmax >= 17 * sigma  # sky only: a floor
    # the sky maps to the dark end of the colour map
    assert float(norm(0.0)) < 0.15
    ticks = montage._colorbar_ticks(norm)
    assert 0.0 in ticks and all(norm.vmin <= t <= norm.vmax for t in ticks)


def test_blend_montage_shares_one_norm_and_states_the_data_shown(tiny_release, tmp_path, captured):
    montage.blend_montage(tiny_release, tmp_path / "b.png")
    (fig,) = captured
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) >= 2 and len({id(im.norm) for im in images}) == 1
    colorbars = [ax for ax in fig.axes if "counts / px" in ax.get_ylabel()]
    assert len(colorbars) == 1
    pairs = read_table(tiny_release, "pairs_test.ecsv")
    dist = np.asarray(pairs["distance_px"] / pairs["r_e_central"])
    title = fig._suptitle.get_text()
    assert f"{dist.min():.2f}…{dist.max():.2f}" in title and "1 … 4" not in title
    texts = _texts(fig)
    assert any("central galaxy" in t for t in texts) and any("companion" in t for t in texts)
    assert any(t.endswith('"') for t in texts)  # the arcsec scale bar
    assert not any(t.startswith(("m=", "H=", "Δm=")) for t in texts)
    # every blend of the split falls in a cell of the grid
    assert sum(1 for ax in fig.axes if ax.get_images()) >= 1


def test_galaxy_montage_labels_in_mag_with_one_colour_bar(tiny_release, tmp_path, captured):
    montage.galaxy_montage(tiny_release, tmp_path / "g.png", per_row=4)
    (fig,) = captured
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len({id(im.norm) for im in images}) == 1
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert titles and all(t.startswith("mag ") for t in titles)
    assert sum("counts / px" in ax.get_ylabel() for ax in fig.axes) == 1
    spec = ReleaseInfo.read(tiny_release / "release.toml").spec
    assert montage._nice_arcsec(spec.stamp_size * spec.pixel_scale) == 1.0  # 1" on 7.7"


def test_show_writes_pngs(tiny_release, tmp_path):
    for path in (
        montage.blend_montage(tiny_release, tmp_path / "b.png"),
        montage.galaxy_montage(tiny_release, tmp_path / "g.png"),
    ):
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_mag_in_out_names_units_counts_outliers_and_has_a_colour_bar(tiny_release):
    truth = load_truth(tiny_release)
    flux = truth.flux.copy()
    flux[:3, 0] *= 10 ** (-0.4 * 8.0)  # 8 mag too faint: beyond any inset range
    flux[3, 1] = 0.0  # not detected
    sub = submission_from_arrays(truth.blend_id, flux, release=truth.release, name="outliers")
    fig = F.mag_in_out(score(sub, truth, n_boot=0, with_bins=False))
    try:
        main = [ax for ax in fig.axes if ax.get_xlabel().startswith("true")]
        assert len(main) == 2
        assert main[0].get_xlabel() == "true magnitude (mag)"
        assert main[0].get_ylabel() == "measured magnitude (mag)"
        assert any("galaxies per hexagon" in ax.get_ylabel() for ax in fig.axes)
        texts = _texts(fig)
        assert any(t.startswith("3 beyond ±5") for t in texts)
        assert any(t.startswith("1 not detected") for t in texts)
        insets = [c for ax in main for c in ax.child_axes if c.get_title().startswith("Δmag")]
        assert len(insets) == 2 and all(ax.get_xlabel() == "" for ax in insets)
        assert insets[0].get_xlim() == insets[1].get_xlim()
        fig.canvas.draw()
        for inset in insets:  # the inset's label clears its tick labels
            title = inset.title.get_window_extent()
            ticks = [t.get_window_extent() for t in inset.get_xticklabels() if t.get_text()]
            assert ticks and not any(title.overlaps(t) for t in ticks)
    finally:
        plt.close(fig)


def test_dmag_range_widens_to_the_data():
    assert F._dmag_range(np.zeros(0)) == 1.0
    assert F._dmag_range(np.array([0.1, -0.2])) == 1.0
    assert F._dmag_range(np.linspace(-1.7, 1.7, 1000)) == 2.0
    assert F._dmag_range(np.array([0.0, 40.0])) == 5.0
