"""Shared fixtures: a tiny release made on the fly, once per test session."""

from __future__ import annotations

import pytest

from challenge.contract.release import ReleaseSpec, preset


def pytest_addoption(parser):
    parser.addoption(
        "--benchmarks",
        action="store_true",
        default=False,
        help="run the speed/memory benchmarks in tests/benchmarks/",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--benchmarks"):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `pytest tests/benchmarks --benchmarks`")
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(skip)


TINY = ReleaseSpec(
    name="tiny",
    version="test",
    seed=7,
    morphology_counts={"bulge": 10, "disc": 10, "bulge+disc": 14, "irregular": 10},
    n_blends={"train": 60, "val": 20, "test": 40},
)


@pytest.fixture(scope="session")
def tiny_spec() -> ReleaseSpec:
    return TINY


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory):
    """A generated 44-galaxy, 120-blend release folder (made once per session)."""
    from challenge.pipeline.files import generate_release

    out = tmp_path_factory.mktemp("releases") / "tiny"
    generate_release(TINY, out, chunk_size=16, workers=1)
    return out


@pytest.fixture(scope="session")
def mini_spec() -> ReleaseSpec:
    return preset("mini")


@pytest.fixture(scope="session")
def mini_release(tmp_path_factory):
    """The frozen mini release (200 galaxies, 1,000 blends), generated once per session."""
    from challenge.pipeline.files import generate_release

    out = tmp_path_factory.mktemp("releases") / "mini"
    generate_release(preset("mini"), out, workers=2)
    return out


@pytest.fixture
def columns80(monkeypatch):
    """The CLI at 80 columns (``COLUMNS=80``); returns a check that no table cell was cut.

    The CLI's consoles exist before the test, so their width is set directly; typer's help
    console reads ``COLUMNS``.
    """
    from challenge.cli import base

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    for console in (base.console, base.err_console):
        monkeypatch.setattr(console, "_width", 80)

    def check(output: str) -> None:
        assert "…" not in output, output
        table_lines = [ln for ln in output.splitlines() if "─" in ln or "│" in ln]
        assert all(len(ln) <= 80 for ln in table_lines), output

    return check
