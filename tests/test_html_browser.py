"""The HTML leaderboard in a real headless Chromium: it loads without console errors, its figures
show, every column sorts both ways (numbers by value, missing values last) and it fits the page at
1,400 px and 400 px (screenshots of both are written)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import make_submissions
from test_scoring import hand_release, write_h5

from challenge.reports import leaderboard as L

_SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "leaderboard_screenshot.py"
_spec = importlib.util.spec_from_file_location("leaderboard_screenshot", _SCRIPT)
browser = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(browser)

try:
    browser.find_browser()
except browser.BrowserUnavailable as err:
    pytest.skip(f"{err}: the browser test needs Chromium, chromedriver and selenium",
                allow_module_level=True)

# Costs whose text order differs from their order as numbers ("1 h" < "1.7 h" < "35.5 min" <
# "45 s" as text), with a missing value in every cost column.
COSTS = {
    "fast": 'training_time_s = 6247.3\ninference_time_s = 92.21\nparameters = 991938\n'
            'hardware = "GPU"\n',
    "slow": 'training_time_s = 2131.6\ninference_time_s = 5.93\nparameters = 1235436\n'
            'hardware = "cpu x2"\n',
    "tiny-net": 'training_time = "45 s"\ninference_time_s = 13.44\nparameters = 12000\n',
}
# The number behind each column as the test reads it from the leaderboard table.
NUMBER_OF = {"mape_ci": "mape_lo", "params": "n_params", "training_time": "training_time_s",
             "inference_time": "inference_time_s"}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    folder, ids, flux, masks = hand_release(root / "rel", n=40)
    subs = make_submissions(root, ids, flux, masks)
    rng = np.random.default_rng(3)
    for k, (name, costs) in enumerate(COSTS.items()):
        d = subs / name
        d.mkdir()
        (d / "submission.toml").write_text(f'name = "{name}"\nrelease = "hand"\n{costs}')
        write_h5(d / "predictions.h5", ids, flux * rng.lognormal(0.02 * k, 0.1, flux.shape),
                 name=name)
    df = L.build_leaderboard(folder, subs, root / "lb", n_boot=50)
    return df, root / "lb" / "leaderboard.html"


@pytest.fixture(scope="module")
def driver():
    with browser.headless_chromium() as d:
        yield d


def _expected(df, col: str, ascending: bool) -> list[str]:
    """The column's cell texts in the order the page must show: by number (or text for the
    text columns), missing values last either way."""
    texts = [L._cells(row, [col])[0] for _, row in df.iterrows()]
    if col in L.TEXT_COLUMNS:
        keys = [None if t == "–" else t.lower() for t in texts]
    else:
        values = df[NUMBER_OF.get(col, col)].astype(float)
        keys = [None if math.isnan(v) else v for v in values]
    present = sorted(((k, t) for k, t in zip(keys, texts, strict=True) if k is not None),
                     key=lambda kt: kt[0], reverse=not ascending)
    return [t for _, t in present] + [t for k, t in zip(keys, texts, strict=True) if k is None]


def _column(driver, i: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelector('#leaderboard tbody').rows)"
        ".map(r => r.cells[arguments[0]].textContent);", i)


def test_page_loads_cleanly_with_its_figures(board, driver):
    df, page = board
    browser.open_page(driver, page, 1400)
    driver.get_log("browser")  # start from an empty console
    driver.refresh()
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);")
    assert len(images) == 4
    assert all(done and width > 0 for done, width, _ in images), images
    assert [alt for *_, alt in images] == list(L.FIGURES.values())
    rows = driver.execute_script("return document.querySelectorAll('#leaderboard tbody tr')"
                                 ".length;")
    assert rows == len(df) == 7


def test_every_column_sorts_both_ways(board, driver):
    df, page = board
    browser.open_page(driver, page, 1400)
    heads = driver.find_elements("css selector", "#leaderboard thead th")
    by_header = {header: col for col, (header, _) in L.COLUMNS.items()}
    cols = [by_header[h.find_element("css selector", "button").text.rstrip("▲▼")]
            for h in heads]
    assert {"name", "mape", "training_time", "inference_time", "params", "iou"} <= set(cols)
    for i, (th, col) in enumerate(zip(heads, cols, strict=True)):
        seen = []
        for _ in range(2):
            th.find_element("css selector", "button").click()
            direction = th.get_attribute("aria-sort")
            seen.append(direction)
            assert _column(driver, i) == _expected(df, col, direction == "ascending"), col
            mark = th.find_element("css selector", ".sort-mark").text
            assert mark == ("▲" if direction == "ascending" else "▼")
            marked = driver.find_elements("css selector", "#leaderboard th[aria-sort]")
            assert [m.get_attribute("cellIndex") for m in marked] == [str(i)]
        assert sorted(seen) == ["ascending", "descending"], col


def test_costs_sort_as_numbers_not_text(board, driver):
    df, page = board
    browser.open_page(driver, page, 1400)
    heads = driver.find_elements("css selector", "#leaderboard thead th button")
    names = [h.text for h in heads].index("method")
    training = next(h for h in heads if h.text.startswith("training time"))
    training.click()
    order = _column(driver, names)
    assert order[:4] == ["tiny-net", "slow", "good", "fast"]  # 45 s < 35.5 min < 1 h < 1.7 h
    training.click()
    order = _column(driver, names)
    assert order[:4] == ["fast", "good", "slow", "tiny-net"]
    assert set(order[4:]) == {"table", "sep", "sep (detections only)"}  # "–" stays last


@pytest.mark.parametrize("width", [1400, 400])
def test_page_fits_the_window_and_the_table_scrolls(board, driver, tmp_path, width):
    _, page = board
    browser.open_page(driver, page, width)
    page_w, view_w, box_w, table_w = driver.execute_script(
        "const s = document.querySelector('.table-scroll');"
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " s.clientWidth, s.scrollWidth];")
    assert view_w <= width and width - view_w < 20  # the viewport meta tag counts on a phone
    assert page_w <= view_w  # nothing spills off the page
    if width == 400:
        assert table_w > box_w  # the table scrolls sideways inside its box
        moved = driver.execute_script(
            "const s = document.querySelector('.table-scroll'); s.scrollLeft = 200;"
            "return s.scrollLeft;")
        assert moved > 0
    shot = browser.screenshot(driver, tmp_path / f"leaderboard-{width}.png", width, until=None)
    png = Path(shot).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == width
