"""A leaderboard over hostile submission folders: it survives each one, publishes only the
folder's name and the kind of refusal, and its Markdown, CSV and HTML stay inert (the Markdown
rendered by the documentation's own renderer and loaded in a real Chromium)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from test_scoring import hand_release, write_h5

from challenge.reports import leaderboard as L

SECRET = "s3cr3t-token-do-not-publish"
PAYLOADS = {
    "script": "<script>window.pwned = 1</script>",
    "img": '<img src="x" onerror="window.pwned = 2">',
    "svg": '<svg onload="window.pwned = 3"></svg>',
    "link": "[click](javascript:window.pwned=4)",
    "formula": "=HYPERLINK(\"http://example.invalid\")",
    "pipes": "a | b | c",
    "bidi": "evil\u202etxt.exe",
}


def _folder(root: Path, name: str, toml: str, ids, flux, h5_name: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "submission.toml").write_text(toml, encoding="utf-8")
    write_h5(d / "predictions.h5", ids, flux, name=h5_name or name)
    return d


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-lb")
    folder, ids, flux, _ = hand_release(root / "rel", n=30, masks=False)
    subs = root / "submissions"
    subs.mkdir()
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    for k, (key, text) in enumerate(PAYLOADS.items()):
        method = text.replace('"', '\\"')
        _folder(subs, f"m{k}-{key}", f'name = "m{k}"\nrelease = "hand"\nmethod = "{method}"\n'
                f'hardware = "{method}"\nauthors = "{method}"\n', ids, flux * 1.01, f"m{k}")
    _folder(subs, "named", 'name = "x"\nrelease = "hand"\n', ids, flux,
            h5_name=PAYLOADS["img"])  # a payload as the name itself
    _folder(subs, "deep", "a = " + "[" * 5000 + "]" * 5000 + "\n", ids, flux)
    _folder(subs, "huge-int", 'release = "hand"\nparameters = ' + "9" * 400 + "\n", ids, flux)
    _folder(subs, "long-name", 'release = "hand"\n', ids, flux, h5_name="n" * 1_000_000)
    _folder(subs, "twin", 'release = "hand"\n', ids, flux, h5_name="m0")  # a name already taken
    leak = _folder(subs, "leak", 'release = "hand"\n', ids, flux)
    (leak / "predictions.h5").unlink()
    (leak / "predictions.h5").symlink_to(secret)
    odd = os.fsdecode(b"odd-\xff")
    _folder(subs, odd, 'release = "hand"\n', ids, flux, h5_name="odd")
    out = root / "lb"
    df = L.build_leaderboard(folder, subs, out, n_boot=10)
    return df, out


def test_every_hostile_folder_is_ranked_or_skipped_and_nothing_leaks(board):
    df, out = board
    skipped = {s["name"]: s for s in df.attrs["skipped"]}
    assert set(skipped) == {"deep", "long-name", "twin", "leak"}
    assert skipped["deep"]["kind"] in ("invalid submission", "unreadable")
    assert skipped["long-name"]["kind"] == "invalid name"
    assert skipped["twin"]["kind"] == "name taken"
    assert skipped["leak"]["kind"] == "invalid submission"
    ranked = set(df["name"])
    assert {f"m{k}" for k in range(len(PAYLOADS))} <= ranked
    assert {"huge-int", "odd", PAYLOADS["img"]} <= ranked  # odd values shown as "–", not fatal
    assert df.loc[df["name"] == "huge-int", "params"].item() in ("–", "")
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert SECRET not in text and "n" * 1000 not in text, name
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "<svg" not in md
    assert "](javascript" not in md.replace("\\]", "")
    assert "- leak: invalid submission" in md  # the kind, never the reason
    assert SECRET not in str(df.attrs["skipped"])
    csv = pd.read_csv(out / "leaderboard.csv")
    assert not csv.select_dtypes(object).map(
        lambda v: isinstance(v, str) and v.startswith(("=", "+", "@"))).any().any()
    assert (csv["method"] == "'" + PAYLOADS["formula"]).any()


def test_the_rendered_markdown_runs_nothing_in_a_browser(board, tmp_path):
    markdown_it = pytest.importorskip("markdown_it", reason="the docs' Markdown renderer")
    _, out = board
    page = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(
        (out / "leaderboard.md").read_text(encoding="utf-8"))
    assert "<td>" in page and "<script" not in page and "onerror=" not in page.split("&")[0]
    html_file = tmp_path / "rendered.html"
    html_file.write_text(f"<!DOCTYPE html><html><body>{page}</body></html>", encoding="utf-8")
    from test_html_browser import browser  # skips where there is no Chromium

    with browser.headless_chromium() as driver:
        for path in (html_file, out / "leaderboard.html"):
            driver.get(path.as_uri())
            assert driver.execute_script("return window.pwned === undefined")
            handlers = driver.execute_script(
                "return Array.from(document.querySelectorAll('*')).flatMap(e => "
                "Array.from(e.attributes).map(a => a.name)).filter(n => n.startsWith('on'))")
            assert handlers == [], path
            assert driver.execute_script(
                "return document.querySelectorAll('script:not([src]), svg, img').length") <= (
                1 if path.name == "leaderboard.html" else 0) + driver.execute_script(
                "return document.querySelectorAll('figure img').length")


def test_bidi_and_control_characters_reach_the_terminal_escaped():
    from challenge.cli.base import plain

    assert plain(PAYLOADS["bidi"]) == "evil\\u202etxt.exe"
    assert plain("a\x1b[31mb") == "a\\x1b[31mb"
