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
