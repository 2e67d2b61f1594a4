"""Screenshot the HTML leaderboard with the system's headless Chromium (the README's picture).

Uses the system's Chromium and chromedriver (Debian: ``apt-get install chromium chromium-driver``)
through selenium (``pip install selenium``, in the ``[test]`` extra); nothing is downloaded and the
browser starts offline, with a fresh empty profile. From the repository's root::

    python docs/leaderboard_screenshot.py leaderboard/v1/leaderboard.html \
        --width 1400 --out leaderboard/v1/figures/leaderboard-1400.png

``--width`` is the viewport width in CSS px (pixel ratio 1; below 600 px the page is laid out as
on a phone, so its viewport meta tag counts). The image runs down to the end of the table
(``--full-page``: the whole page). ``tests/test_html_browser.py`` drives the page with the same
browser settings (:func:`headless_chromium`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
_BROWSERS = ("chromium", "chromium-browser", "/usr/bin/chromium")
_DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
MOBILE_BELOW_PX = 600


class BrowserUnavailable(RuntimeError):
    """No Chromium, chromedriver or selenium here; the message says which and how to install."""


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def find_browser() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths; raises :class:`BrowserUnavailable` naming what is
    missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    browser, driver = _which(_BROWSERS), _which(_DRIVERS)
    if browser is None:
        missing.append("chromium (apt-get install chromium)")
    if driver is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    if missing:
        raise BrowserUnavailable("no headless browser: missing " + ", ".join(missing))
    return browser, driver  # type: ignore[return-value]


@contextlib.contextmanager
def headless_chromium() -> Iterator:
    """A selenium Chrome driver on the system Chromium, offline, with a fresh profile that is
    removed afterwards. The browser console is kept (``driver.get_log("browser")``)."""
    browser, driver_path = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="blendbench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver, width: int, height: int) -> None:
    """Lay the page out at ``width`` x ``height`` CSS px, pixel ratio 1; as on a phone below
    :data:`MOBILE_BELOW_PX` (so the page's viewport meta tag is honoured)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": int(width), "height": int(height), "deviceScaleFactor": 1,
        "mobile": width < MOBILE_BELOW_PX,
    })


def open_page(driver, page: str | Path, width: int, height: int = 900) -> None:
    """Load a local HTML file at the given viewport size."""
    set_viewport(driver, width, height)
    driver.get(Path(page).resolve().as_uri())


def screenshot(driver, out: str | Path, width: int, *, until: str | None = ".table-scroll",
               margin: int = 16) -> Path:
    """Write a PNG of the loaded page at ``width`` CSS px; its height runs to the bottom of the
    element ``until`` (a CSS selector) plus ``margin``, or the whole page when ``until`` is None
    or not on the page."""
    script = ("const e = arguments[0] && document.querySelector(arguments[0]);"
              "return e ? e.getBoundingClientRect().bottom + window.scrollY"
              " : document.documentElement.scrollHeight;")
    set_viewport(driver, width, 900)
    if until:  # the image ends below the page's end: no page scroll bar in it
        driver.execute_script("document.documentElement.style.overflowY = 'hidden';")
    height = int(driver.execute_script(script, until)) + (margin if until else 0)
    set_viewport(driver, width, min(max(height, 100), 16000))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(driver.get_screenshot_as_png())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python docs/leaderboard_screenshot.py",
        description="Screenshot a leaderboard page with the system's headless Chromium.")
    parser.add_argument("page", type=Path,
                        help="the HTML file, e.g. leaderboard/v1/leaderboard.html")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1400, help="viewport width in CSS px")
    parser.add_argument("--full-page", action="store_true",
                        help="the whole page, not only down to the end of the table")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: {args.page}: no such file; run `blendbench leaderboard` first",
              file=sys.stderr)
        return 2
    if not 200 <= args.width <= 8000:
        print(f"error: --width {args.width}: give a width between 200 and 8000 px",
              file=sys.stderr)
        return 2
    try:
        with headless_chromium() as driver:
            open_page(driver, args.page, args.width)
            path = screenshot(driver, args.out, args.width,
                              until=None if args.full_page else ".table-scroll")
    except BrowserUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
