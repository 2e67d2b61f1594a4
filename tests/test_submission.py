"""Submission reading and validation: a bad file is rejected with a message, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import SubmissionError
from challenge.contract.submission import match_to_release, read_submission

N, SIZE = 6, 16
IDS = 500 + 7 * np.arange(N, dtype=np.int64)
FLUX = np.linspace(10, 60, 2 * N).reshape(N, 2)
runner = CliRunner()


def write(path: Path, **over) -> Path:
    """A valid predictions.h5, with any dataset / attribute replaced (None drops it)."""
    fields = {
        "blend_id": IDS,
        "flux": FLUX,
        "masks": np.zeros((N, 2, SIZE, SIZE), np.float32),
        "flux_err": np.ones((N, 2)),
        "detection": np.full(N, 2, np.int8),
    }
    attrs = {"release": "hand", "name": "mine"}
    for k, v in over.items():
        (attrs if k in attrs else fields)[k] = v
    with h5py.File(path, "w") as f:
        for k, v in fields.items():
            if v is not None:
                f[k] = v
        for k, v in attrs.items():
            if v is not None:
                f.attrs[k] = v
    return path


def check(sub):
    return match_to_release(sub, IDS, "hand", SIZE)


def rejects(path: Path, match: str):
    with pytest.raises(SubmissionError, match=match) as info:
        check(read_submission(path))
    assert path.name in str(info.value)
    return str(info.value)


def test_valid_hdf5(tmp_path):
    masks = np.zeros((N, 2, SIZE, SIZE), np.float32)
    masks[:, 0, :4, :4] = 0.7
    masks[:, 1, :4, :4] = 0.3
    sub = read_submission(
        write(tmp_path / "p.h5", masks=masks, blend_id=IDS[::-1], flux=FLUX[::-1])
    )
    assert sub.name == "mine" and sub.release == "hand" and sub.n == N
    assert sub.masks.dtype == bool and sub.masks[0, 0].sum() == 16 and sub.masks[0, 1].sum() == 0
    order = check(sub)
    np.testing.assert_array_equal(sub.blend_id[order], IDS)
    np.testing.assert_allclose(sub.flux[order], FLUX)


@pytest.mark.parametrize(
    "fmt,suffix", [("ascii.csv", ".csv"), ("ascii.ecsv", ".ecsv"), ("fits", ".fits")]
)
def test_tables(tmp_path, fmt, suffix):
    t = Table(
        {
            "blend_id": IDS,
            "flux_central": FLUX[:, 0],
            "flux_companion": FLUX[:, 1],
            "flux_err_central": np.ones(N),
            "flux_err_companion": np.ones(N),
        }
    )
    if fmt != "ascii.csv":
        t.meta["release"] = "hand"
    path = tmp_path / f"predictions{suffix}"
    t.write(path, format=fmt)
    if fmt == "ascii.csv":
        (tmp_path / "submission.toml").write_text('release = "hand"\nname = "tab"\n')
    sub = read_submission(path)
    check(sub)
    assert sub.flux_err is not None and sub.masks is None
    np.testing.assert_allclose(sub.flux, FLUX)


def test_table_errors(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("blend_id,flux_central\n1,2\n")
    with pytest.raises(SubmissionError, match="flux_companion"):
        read_submission(path)
    path.write_text("blend_id,flux_central,flux_companion\n1,2,\n2,3,4\n")
    with pytest.raises(SubmissionError, match="empty values for blend_id 1"):
        read_submission(path)
    path.write_text("blend_id,flux_central,flux_companion\n1,2,abc\n")
    with pytest.raises(SubmissionError, match="flux"):
        read_submission(path)
    path.write_text("blend_id,flux_central,flux_companion\n1.5,2,3\n")
    with pytest.raises(SubmissionError, match="blend_id.*integer"):
        read_submission(path)
    path.write_text("blend_id,flux_central,flux_companion\n1,2,3\n")
    with pytest.raises(SubmissionError, match="no release declared"):
        match_to_release(read_submission(path), np.array([1]), "hand")


@pytest.mark.parametrize(
    "over,match",
    [
        (
            {
                "blend_id": IDS[:-1],
                "flux": FLUX[:-1],
                "masks": None,
                "flux_err": None,
                "detection": None,
            },
            f"missing: blend_id {IDS[-1]}",
        ),
        ({"blend_id": np.r_[IDS[:-1], IDS[0]]}, f"duplicate blend_id {IDS[0]}"),
        ({"blend_id": np.r_[IDS[:-1], 99]}, "missing"),
        ({"blend_id": IDS.astype(float)}, "blend_id.*integer"),
        ({"blend_id": None}, "'blend_id'.*missing"),
        ({"flux": None}, "'flux'.*missing"),
        ({"flux": FLUX[:, :1]}, r"shape \(6, 1\)"),
        ({"flux": FLUX.astype("S8")}, "flux"),
        (
            {"flux": np.where(np.arange(2 * N).reshape(N, 2) == 5, np.nan, FLUX)},
            f"NaN or inf for blend_id {IDS[2]}",
        ),
        ({"flux": np.where(np.arange(2 * N).reshape(N, 2) == 0, np.inf, FLUX)}, "NaN or inf"),
        ({"flux_err": np.zeros((N, 2))}, "flux_err.*<= 0"),
        ({"flux_err": np.ones((N, 3))}, "flux_err"),
        ({"masks": np.full((N, 2, SIZE, SIZE), 1.5, np.float32)}, r"outside \[0, 1\]"),
        ({"masks": np.full((N, 2, SIZE, SIZE), np.nan, np.float32)}, "masks.*NaN"),
        ({"masks": np.full((N, 2, SIZE, SIZE), 2, np.uint8)}, r"outside \[0, 1\]"),
        ({"masks": np.zeros((N, 2, SIZE, SIZE + 1))}, "masks"),
        ({"masks": np.zeros((N, 2, 8, 8))}, "8x8 px"),
        ({"masks": np.zeros((N, SIZE, SIZE))}, "masks"),
        ({"detection": np.full(N, 7)}, r"detection.*-1\.\.3"),
        ({"detection": np.full(N, -2)}, r"detection.*-1\.\.3"),
        ({"detection": np.ones(N, float)}, "detection.*integer"),
        ({"release": "v1"}, "release 'v1'.*'hand'"),
        ({"release": None}, "no release declared"),
    ],
)
def test_hdf5_errors(tmp_path, over, match):
    rejects(write(tmp_path / "predictions.h5", **over), match)


def test_unknown_blend_id(tmp_path):
    ids = np.r_[IDS, 12345]
    flux = np.r_[FLUX, [[1.0, 1.0]]]
    msg = rejects(
        write(
            tmp_path / "p.h5", blend_id=ids, flux=flux, masks=None, flux_err=None, detection=None
        ),
        "not in the test set",
    )
    assert "12345" in msg and "drop them" in msg


def test_unreadable_files(tmp_path):
    good = write(tmp_path / "good.h5")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    rejects(trunc, "trunc.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    rejects(junk, "not a readable HDF5 file")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(SubmissionError, match="empty.csv"):
        read_submission(empty)
    with pytest.raises(SubmissionError, match="no such file"):
        read_submission(tmp_path / "absent.h5")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SubmissionError, match="no prediction file"):
        read_submission(tmp_path / "nothing")


def test_group_instead_of_dataset(tmp_path):
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f.create_group("blend_id")
        f["flux"] = FLUX
    rejects(path, "group")


def test_metadata_errors(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    write(folder / "predictions.h5")
    (folder / "submission.toml").write_text("name = [unclosed\n")
    with pytest.raises(SubmissionError, match="submission.toml.*TOML"):
        read_submission(folder)
    (folder / "submission.toml").write_text('release = "other"\n')
    with pytest.raises(SubmissionError, match="make them agree"):
        read_submission(folder)


# ---------------------------------------------------------------------------------------------
# property tests: semantic corruptions are always rejected, byte damage never crashes

CORRUPTIONS = (
    "drop_row",
    "dup_id",
    "new_id",
    "nan_flux",
    "inf_flux",
    "flux_shape",
    "flux_dtype",
    "ids_float",
    "mask_range",
    "mask_nan",
    "mask_shape",
    "err_neg",
    "det_range",
    "release",
    "no_flux",
    "truncate",
)


def corrupt(path: Path, kind: str, row: int, col: int, value: float):
    flux = FLUX.copy()
    ids = IDS.copy()
    masks = np.zeros((N, 2, SIZE, SIZE), np.float32)
    if kind == "drop_row":
        return write(
            path,
            blend_id=np.delete(ids, row),
            flux=np.delete(flux, row, 0),
            masks=None,
            flux_err=None,
            detection=None,
        )
    if kind == "dup_id":
        ids[row] = ids[(row + 1) % N]
        return write(path, blend_id=ids)
    if kind == "new_id":
        ids[row] = 10**6 + row
        return write(path, blend_id=ids)
    if kind in ("nan_flux", "inf_flux"):
        flux[row, col] = np.nan if kind == "nan_flux" else np.inf * (1 if value > 0 else -1)
        return write(path, flux=flux)
    if kind == "flux_shape":
        return write(path, flux=flux[:, :1] if value > 0 else flux[:-1])
    if kind == "flux_dtype":
        return write(path, flux=flux.astype(complex) if value > 0 else flux.astype("S8"))
    if kind == "ids_float":
        return write(path, blend_id=ids + 0.5)
    if kind == "mask_range":
        masks[row, col, 0, 0] = 1 + abs(value) + 1e-3 if value >= 0 else -abs(value) - 1e-3
        return write(path, masks=masks)
    if kind == "mask_nan":
        masks[row, col, 1, 1] = np.nan
        return write(path, masks=masks)
    if kind == "mask_shape":
        return write(path, masks=masks[:, :, :-1, :])
    if kind == "err_neg":
        err = np.ones((N, 2))
        err[row, col] = -abs(value)
        return write(path, flux_err=err)
    if kind == "det_range":
        det = np.full(N, 2)
        det[row] = 4 + int(abs(value))
        return write(path, detection=det)
    if kind == "release":
        return write(path, release="v1" if value > 0 else None)
    if kind == "no_flux":
        return write(path, flux=None)
    if kind == "truncate":
        write(path)
        data = path.read_bytes()
        cut = int((0.05 + 0.9 * (abs(value) % 1)) * len(data))
        path.write_bytes(data[:cut])
        return path
    raise AssertionError(kind)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(CORRUPTIONS),
    row=st.integers(0, N - 1),
    col=st.integers(0, 1),
    value=st.floats(-10, 10, allow_nan=False),
)
def test_corruptions_always_rejected(tmp_path, kind, row, col, value):
    path = corrupt(tmp_path / "predictions.h5", kind, row, col, value)
    with pytest.raises(SubmissionError) as info:
        check(read_submission(path))
    assert "predictions.h5" in str(info.value)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_byte_damage_never_crashes(tmp_path, data):
    path = write(tmp_path / "predictions.h5")
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 20))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    try:
        sub = read_submission(path)
        check(sub)
    except SubmissionError as err:
        assert "predictions.h5" in str(err)
    else:  # damage that leaves a valid file must leave valid values
        assert np.isfinite(sub.flux).all() and len(np.unique(sub.blend_id)) == N


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def hand_folder(tmp_path):
    from test_scoring import hand_release

    folder, ids, flux, _ = hand_release(tmp_path / "rel", n=N, masks=False)
    return folder, ids, flux


@pytest.mark.parametrize(
    "over,match",
    [
        ({"flux": "nan"}, "NaN or inf"),
        ({"release": "v1"}, "release"),
        ({"drop": True}, "missing"),
    ],
)
def test_cli_rejects_with_exit_2(hand_folder, tmp_path, over, match):
    folder, ids, flux = hand_folder
    if "flux" in over:
        flux = flux.copy()
        flux[1, 0] = np.nan
    if "drop" in over:
        ids, flux = ids[1:], flux[1:]
    path = write(
        tmp_path / "predictions.h5",
        blend_id=ids,
        flux=flux,
        masks=None,
        flux_err=None,
        detection=None,
        release=over.get("release", "hand"),
    )
    out = tmp_path / "out.json"
    res = runner.invoke(app, ["score", str(path), "--data", str(folder), "--json", str(out)])
    assert res.exit_code == 2, res.output
    assert "predictions.h5" in res.output and match in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_cli_truncated_file(hand_folder, tmp_path):
    folder, ids, flux = hand_folder
    path = write(tmp_path / "predictions.h5", blend_id=ids, flux=flux)
    shutil.copy(path, tmp_path / "full.h5")
    path.write_bytes(path.read_bytes()[:300])
    res = runner.invoke(app, ["score", str(path), "--data", str(folder)])
    assert res.exit_code == 2 and "predictions.h5" in res.output
