"""Release fingerprints and the frozen truth: what ``verify`` sees (any single value changed by
half the sky noise, any swap, every dataset and attribute scores depend on), what it forgives
(float32 rounding, chunks, workers), and the check of a frozen release's truth before scoring."""

from __future__ import annotations

import math
import shutil

import h5py
import numpy as np
import pytest
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scoring import write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.release import PRESETS, ReleaseInfo, committed_dir
from challenge.pipeline.files import (
    FINGERPRINT_RTOL,
    Fingerprint,
    fingerprints_differ,
    verify_release,
)

runner = CliRunner()
SIGMA = 0.012  # v1's sky noise, counts/px
SHIPPED = sorted(PRESETS)
_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _stack(n: int = 24, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size) float32 blends: a bright Gaussian galaxy plus sky noise of SIGMA."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    galaxy = 40 * np.exp(-(xx**2 + yy**2) / 12)
    noise = np.random.default_rng(seed).normal(0, SIGMA, (n, size, size))
    return (galaxy + noise).astype(np.float32)


def _fingerprint(arr: np.ndarray, block: int = 7) -> dict:
    fp = Fingerprint()
    for start in range(0, len(arr), block):
        fp.update(arr[start : start + block])
    return fp.to_dict()


STACK = _stack()
REFERENCE = _fingerprint(STACK)


def test_blocks_and_float32_rounding_do_not_change_the_verdict():
    assert fingerprints_differ(_fingerprint(STACK, block=24), REFERENCE) is None
    assert fingerprints_differ(_fingerprint(STACK, block=1), REFERENCE) is None
    # One unit in the last place, up or down, on half of all pixels: another machine's rounding.
    rng = np.random.default_rng(1)
    step = np.where(rng.random(STACK.shape) < 0.5, np.inf, -np.inf).astype(np.float32)
    moved = np.where(rng.random(STACK.shape) < 0.5, np.nextafter(STACK, step), STACK)
    assert not np.array_equal(moved, STACK)
    assert fingerprints_differ(_fingerprint(moved), REFERENCE) is None


@_SETTINGS
@given(index=st.tuples(st.integers(0, 23), st.integers(0, 31), st.integers(0, 31)),
       size=st.floats(0.5, 20.0), sign=st.sampled_from([-1, 1]))
def test_any_single_pixel_changed_by_half_sigma_is_seen_and_located(index, size, sign):
    changed = STACK.copy()
    changed[index] += np.float32(sign * size * SIGMA)
    why = fingerprints_differ(_fingerprint(changed), REFERENCE)
    assert why is not None and f"one value changed at index {index}" in why


@_SETTINGS
@given(a=st.integers(0, STACK.size - 1), b=st.integers(0, STACK.size - 1),
       gap=st.floats(0.5, 20.0))
def test_any_swap_of_two_different_pixels_is_seen(a, b, gap):
    if a == b:
        return
    ref = STACK.copy().ravel()
    ref[b] = ref[a] + np.float32(gap * SIGMA)  # two pixels at least 0.5 sigma apart
    swapped = ref.copy()
    swapped[[a, b]] = swapped[[b, a]]
    ref, swapped = ref.reshape(STACK.shape), swapped.reshape(STACK.shape)
    why = fingerprints_differ(_fingerprint(swapped), _fingerprint(ref))
    assert why is not None and why.startswith("values moved"), why


def test_values_moved_around_a_rectangle_are_seen():
    # +d, -d in one image and -d, +d at the same pixels of another: no row or column sum moves.
    changed = STACK.copy()
    d = np.float32(0.5 * SIGMA)
    changed[2, 5, 5] += d
    changed[2, 9, 9] -= d
    changed[7, 5, 5] -= d
    changed[7, 9, 9] += d
    why = fingerprints_differ(_fingerprint(changed), REFERENCE)
    assert why is not None and "weighted sum" in why


def test_integer_and_text_arrays_are_hashed_exactly():
    masks = (STACK > 1).astype(np.uint8)
    ref = _fingerprint(masks)
    assert set(ref) == {"shape", "dtype", "sha256"}
    flipped = masks.copy()
    flipped[3, 4, 5] ^= 1
    assert fingerprints_differ(_fingerprint(flipped), ref) == "content differs (SHA-256)"
    morph = np.array([[b"bulge", b"disc"], [b"disc", b"irregular"]], dtype="S10")
    assert fingerprints_differ(_fingerprint(morph[::-1].copy()), _fingerprint(morph))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_fingerprints_cover_every_truth_dataset_and_see_half_sigma(name):
    info = ReleaseInfo.read(committed_dir(name) / "release.toml")
    prints = info.fingerprints
    for dataset in ("blend_id", "flux", "model_flux", "mag", "r_e", "delta_mag", "distance_px",
                    "morphology", "masks"):
        assert f"test_truth.h5:{dataset}" in prints, dataset
    for key, fp in prints.items():
        assert "sha256" in fp or {"sum", "items", "cells", "mix"} <= set(fp), key
        if key.endswith(":images"):  # the tolerance on a blend image is far below its noise
            tolerance = FINGERPRINT_RTOL * math.sqrt(fp["sumsq"])
            assert tolerance < 0.1 * info.spec.sky_sigma, (key, tolerance)
    assert (committed_dir(name) / "release.toml").stat().st_size < 16_000  # committed: small


# ---------------------------------------------------------------------------------------------
# verify on a generated release


@pytest.fixture
def copy_of(tmp_path):
    def make(folder):
        dst = tmp_path / folder.name
        shutil.copytree(folder, dst)
        return dst

    return make


def _edit_h5(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)


def _set(f, name, index, value):
    data = f[name][()]
    data[index] = value
    f[name][...] = data


def _swap(f, name, a, b):
    data = f[name][()]
    data[a], data[b] = data[b].copy(), data[a].copy()
    f[name][...] = data


CORRUPTIONS = {
    "a pixel + 0.5 sigma": ("test_blends.h5", "array 'images' differs",
                            lambda f: _set(f, "images", (3, 10, 11), f["images"][3, 10, 11]
                                           + np.float32(0.5 * SIGMA))),
    "two pixels swapped": ("test_blends.h5", "values moved between cells",
                           lambda f: _swap(f, "images", (3, 64, 64), (3, 64, 70))),
    "two blends swapped": ("test_blends.h5", "values moved between items",
                           lambda f: _swap(f, "images", 0, 1)),
    "distance_px": ("test_truth.h5", "'distance_px' differs",
                    lambda f: _set(f, "distance_px", 0, f["distance_px"][0] + 0.01)),
    "morphology": ("test_truth.h5", "'morphology' differs",
                   lambda f: _set(f, "morphology", (0, 0), b"nothing")),
    "truth flux x1.000005": ("test_truth.h5", "'flux' differs from pairs_test.ecsv",
                             lambda f: _set(f, "flux", (2, 0), f["flux"][2, 0] * 1.000005)),
    "attribute": ("test_blends.h5", "attribute 'zero_point' is 26.0, expected 25.96",
                  lambda f: f.attrs.__setitem__("zero_point", 26.0)),
    "extra attribute": ("test_truth.h5", "unexpected attribute 'note'",
                        lambda f: f.attrs.__setitem__("note", "edited")),
    "extra dataset": ("test_truth.h5", "unexpected object 'flux_v2'",
                      lambda f: f.create_dataset("flux_v2", data=f["flux"][()] * 1.1)),
    "dataset made a group": ("test_blends.h5", "dataset 'blend_id' missing",
                             lambda f: (f.__delitem__("blend_id"), f.create_group("blend_id"))),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_verify_names_each_corruption(tiny_release, copy_of, case):
    fname, expected, edit = CORRUPTIONS[case]
    folder = copy_of(tiny_release)
    _edit_h5(folder / fname, edit)
    report = verify_release(folder)
    assert not report.ok
    assert any(p.startswith(fname) and expected in p for p in report.problems), report.problems


def test_regenerated_tiny_verifies_whatever_the_workers(tiny_release, tiny_spec, tmp_path):
    from challenge.pipeline.files import generate_release

    again = generate_release(tiny_spec, tmp_path / "again", chunk_size=32, workers=2)
    assert verify_release(again).ok
    mine, theirs = (ReleaseInfo.read(f / "release.toml").fingerprints
                    for f in (tiny_release, again))
    assert all(fingerprints_differ(mine[k], theirs[k]) is None for k in mine)


def test_pairs_test_truth_flux_x1_000005_fails_verify(mini_release, copy_of):
    folder = copy_of(mini_release)
    table = Table.read(folder / "pairs_test.ecsv")
    table["flux_central"][5] *= 1.000005
    table.write(folder / "pairs_test.ecsv", overwrite=True)
    problems = verify_release(folder).problems
    assert any(p.startswith("pairs_test.ecsv: differs from the frozen mini (column "
                            "'flux_central' differs in 1 of 200 rows") for p in problems), problems


# ---------------------------------------------------------------------------------------------
# the frozen truth is checked before every score


@pytest.fixture
def mini_truth(mini_release, tmp_path):
    """A copy of what scoring reads from the generated mini: release.toml, pairs_test.ecsv,
    test_truth.h5; and a submission of the truth fluxes x 1.05."""
    folder = tmp_path / "mini"
    folder.mkdir()
    for name in ("release.toml", "pairs_test.ecsv", "test_truth.h5"):
        shutil.copy(mini_release / name, folder / name)
    table = Table.read(folder / "pairs_test.ecsv")
    flux = np.stack([table["flux_central"], table["flux_companion"]], axis=1)
    sub = write_h5(tmp_path / "p.h5", np.asarray(table["blend_id"]), 1.05 * flux,
                   release="mini")
    return folder, sub


def _score(folder, sub):
    return runner.invoke(app, ["score", str(sub), "--data", str(folder), "--n-boot", "0"])


def test_an_untouched_frozen_release_scores(mini_truth):
    result = _score(*mini_truth)
    assert result.exit_code == 0, result.output
    assert "MAPE" in result.output


def _edit_table(folder, edit):
    table = Table.read(folder / "pairs_test.ecsv")
    edit(table)
    table.write(folder / "pairs_test.ecsv", overwrite=True)


@pytest.mark.parametrize("edit, file, expected", [
    (lambda t: t["flux_central"].__imul__(1.1), "pairs_test.ecsv",
     "column 'flux_central' differs in 200 of 200 rows"),
    (lambda t: t["blend_id"].__setitem__(7, 999_999), "pairs_test.ecsv",
     "column 'blend_id' differs in 1 of 200 rows (first: row 7, blend_id 807"),
    (lambda t: t.remove_row(3), "pairs_test.ecsv", "199 rows, expected 200"),
])
def test_score_refuses_an_edited_frozen_truth_naming_the_release_file(mini_truth, edit, file,
                                                                       expected):
    folder, sub = mini_truth
    _edit_table(folder, edit)
    result = _score(folder, sub)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / file}:"), result.output
    assert expected in lines[0]
    assert "p.h5" not in lines[0]  # the submission is not blamed
    assert "`blendbench generate --release mini --out DIR`" in lines[0]


def test_score_refuses_edited_truth_arrays_and_spec(mini_truth):
    folder, sub = mini_truth
    with h5py.File(folder / "test_truth.h5", "r+") as f:
        _set(f, "distance_px", 4, f["distance_px"][4] + 1)
    line = _score(folder, sub).output.strip()
    assert line.startswith(f"error: {folder / 'test_truth.h5'}: dataset 'distance_px' differs")
    shutil.copy(committed_dir("mini") / "release.toml", folder / "release.toml")
    toml = (folder / "release.toml").read_text().replace("sky_sigma = 0.012", "sky_sigma = 0.02")
    (folder / "release.toml").write_text(toml)
    result = _score(folder, sub)
    assert result.exit_code == 2
    assert "release.toml: not the frozen mini shipped with blendbench (sky_sigma 0.02, expected " \
           "0.012)" in result.output


def test_the_evaluator_checks_the_frozen_truth_too(mini_truth):
    from challenge.scoring.evaluator import Evaluator

    folder, _ = mini_truth
    assert Evaluator(folder, n_boot=0).release == "mini"
    _edit_table(folder, lambda t: t["mag_companion"].__setitem__(0, 20.0))
    with pytest.raises(ReleaseError, match="pairs_test.ecsv: the test truth differs from the "
                       "frozen mini.*column 'mag_companion'"):
        Evaluator(folder)


def test_fingerprints_of_an_older_blendbench_are_named_once(tiny_release, copy_of):
    import dataclasses

    folder = copy_of(tiny_release)
    info = ReleaseInfo.read(folder / "release.toml")
    old = {k: ({"shape": fp["shape"], "dtype": fp["dtype"], "sum": 1.0, "abs": 1.0,
                "sumsq": 1.0, "wsum": 1.0, "wabs": 1.0} if "sum" in fp else fp)
           for k, fp in info.fingerprints.items()}
    (folder / "release.toml").write_text(dataclasses.replace(info, fingerprints=old).to_toml())
    assert verify_release(folder).problems == [
        "release.toml: fingerprints written by an older blendbench, which missed single changed "
        "pixels; regenerate the release to verify it"
    ]
