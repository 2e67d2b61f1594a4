"""A submission is read from its own files only: links, virtual datasets, external storage and
plugin filters that reach other files are refused in one line that quotes none of them."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_hostile import _one_line_error
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.errors import SubmissionError
from challenge.contract.submission import read_submission

runner = CliRunner()

SECRET_ID = 424242424242  # the int64 the secret file's first bytes decode to
SECRET_TEXT = "hunter2-do-not-print"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand", n=12)


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Path:
    """A folder outside every submission: a binary, a CSV-shaped and a TOML-shaped secret."""
    root = tmp_path_factory.mktemp("vault_topsecret")
    (root / "secret.bin").write_bytes(np.full(24, SECRET_ID, "<i8").tobytes()
                                      + SECRET_TEXT.encode())
    (root / "secret.csv").write_text("blend_id,flux_central,flux_companion,note\n"
                                     f"{SECRET_ID},1,1,{SECRET_TEXT}\n"
                                     f"{SECRET_ID},1,1,{SECRET_TEXT}\n")
    (root / "secret.toml").write_text(f'name = "{SECRET_TEXT}"\nrelease = "hand"\n')
    return root


def _environ_entries() -> list[str]:
    """Some entries of this process's /proc/self/environ (empty where there is none)."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return []
    entries = [e.decode("utf-8", "replace") for e in raw.split(b"\0") if len(e) > 8]
    return entries[:20]


def _forbidden(release, vault) -> list[str]:
    truth = release[0] / "test_truth.h5"
    return [str(SECRET_ID), SECRET_TEXT, str(vault), vault.name, str(truth), "test_truth",
            "/proc", "environ", "\x00", *_environ_entries()]


def assert_refused(path: Path, release, vault, names: str) -> str:
    """``path`` is refused by read_submission and by the CLI (exit 2), in one line that names
    ``names`` and quotes no other file's bytes or path."""
    with pytest.raises(SubmissionError) as info:
        read_submission(path)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert names in msg, msg
    for bad in _forbidden(release, vault):
        assert bad not in msg, (bad, msg)
    result = runner.invoke(app, ["score", str(path), "--data", str(release[0]), "--n-boot", "0"])
    line = _one_line_error(result)
    assert names in line, line
    for bad in _forbidden(release, vault):
        assert bad not in line, (bad, line)
    return msg


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "sub"
    folder.mkdir()
    return folder


def _truth_offset(truth: Path, name: str) -> tuple[int, int]:
    with h5py.File(truth, "r") as f:
        ds = f[name]
        return int(ds.id.get_offset()), int(ds.id.get_storage_size())


# ---------------------------------------------------------------------------------------------
# the prediction file and submission.toml themselves


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("target", ["truth", "secret.bin", "missing.h5"])
def test_prediction_symlink_out_of_the_folder(release, vault, tmp_path, target, relative):
    folder = _folder(tmp_path)
    dest = release[0] / "test_truth.h5" if target == "truth" else vault / target
    link = folder / "predictions.h5"
    link.symlink_to(os.path.relpath(dest, folder) if relative else dest)
    msg = assert_refused(folder, release, vault, "predictions.h5")
    # the same words whether the target exists or not: no probing of other files
    assert "points outside the submission folder" in msg


def test_csv_symlinks_to_environ_and_secret(release, vault, tmp_path):
    folder = _folder(tmp_path)
    link = folder / "predictions.csv"
    if Path("/proc/self/environ").exists():
        link.symlink_to("/proc/self/environ")
        assert_refused(folder, release, vault, "predictions.csv")
        link.unlink()
    link.symlink_to(os.path.relpath(vault / "secret.csv", folder))
    assert_refused(folder, release, vault, "predictions.csv")


def test_link_through_a_linked_folder_is_resolved(release, vault, tmp_path):
    folder = _folder(tmp_path)
    (folder / "data").symlink_to(release[0], target_is_directory=True)
    (folder / "predictions.h5").symlink_to("data/test_truth.h5")
    assert_refused(folder, release, vault, "points outside the submission folder")


def test_link_loop_fifo_and_directory_refused(release, vault, tmp_path):
    folder = _folder(tmp_path)
    (folder / "predictions.h5").symlink_to("predictions.h5")
    assert_refused(folder, release, vault, "predictions.h5")
    (folder / "predictions.h5").unlink()
    (folder / "predictions.h5").mkdir()
    msg = assert_refused(folder, release, vault, "predictions.h5")
    assert "not a regular file" in msg
    if hasattr(os, "mkfifo"):
        (folder / "predictions.h5").rmdir()
        os.mkfifo(folder / "predictions.h5")  # opening it would block
        assert "not a regular file" in assert_refused(folder, release, vault, "predictions.h5")


def test_metadata_symlink_out_of_the_folder(release, vault, tmp_path):
    folder = _folder(tmp_path)
    _, ids, flux, _ = release
    write_h5(folder / "predictions.h5", ids, flux)
    (folder / "submission.toml").symlink_to(vault / "secret.toml")
    assert_refused(folder, release, vault, "submission.toml")
    (folder / "submission.toml").unlink()
    (folder / "submission.toml").symlink_to("/proc/self/environ")
    assert_refused(folder, release, vault, "submission.toml")


# ---------------------------------------------------------------------------------------------
# HDF5 objects that read other files


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("field", ["blend_id", "flux"])
def test_external_link_refused(release, vault, tmp_path, field, relative):
    folder = _folder(tmp_path)
    folder_rel, ids, flux, _ = release
    truth = folder_rel / "test_truth.h5"
    target = os.path.relpath(truth, folder) if relative else str(truth)
    with h5py.File(folder / "predictions.h5", "w") as f:
        data = {"blend_id": ids, "flux": flux}
        for name in ("blend_id", "flux"):
            f[name] = h5py.ExternalLink(target, f"/{name}") if name == field else data[name]
        f.attrs["release"] = "hand"
    msg = assert_refused(folder, release, vault, f"field '{field}'")
    assert "external link" in msg


def test_external_link_deep_in_an_unread_group_refused(release, vault, tmp_path):
    folder = _folder(tmp_path)
    _, ids, flux, _ = release
    write_h5(folder / "predictions.h5", ids, flux)
    with h5py.File(folder / "predictions.h5", "a") as f:
        f.create_group("extra")["notes"] = h5py.ExternalLink(str(vault / "secret.bin"), "/x")
    assert_refused(folder, release, vault, "field 'extra/notes'")


@pytest.mark.parametrize("relative", [False, True])
def test_virtual_dataset_from_another_file_refused(release, vault, tmp_path, relative):
    folder = _folder(tmp_path)
    folder_rel, ids, flux, _ = release
    truth = folder_rel / "test_truth.h5"
    layout = h5py.VirtualLayout(shape=flux.shape, dtype="f8")
    source = os.path.relpath(truth, folder) if relative else str(truth)
    layout[...] = h5py.VirtualSource(source, "flux", shape=flux.shape)
    with h5py.File(folder / "predictions.h5", "w") as f:
        f["blend_id"] = ids
        f.create_virtual_dataset("flux", layout, fillvalue=0)
        f.attrs["release"] = "hand"
    msg = assert_refused(folder, release, vault, "field 'flux'")
    assert "virtual dataset" in msg


def test_virtual_source_in_the_folder_that_links_out_refused(release, vault, tmp_path):
    folder = _folder(tmp_path)
    folder_rel, ids, flux, _ = release
    with h5py.File(folder / "src.h5", "w") as f:
        f["data"] = h5py.ExternalLink(str(folder_rel / "test_truth.h5"), "/flux")
    layout = h5py.VirtualLayout(shape=flux.shape, dtype="f8")
    layout[...] = h5py.VirtualSource("src.h5", "data", shape=flux.shape)
    with h5py.File(folder / "predictions.h5", "w") as f:
        f["blend_id"] = ids
        f.create_virtual_dataset("flux", layout, fillvalue=0)
        f.attrs["release"] = "hand"
    msg = assert_refused(folder, release, vault, "field 'flux'")
    assert "source file refers to other files" in msg


@pytest.mark.parametrize("source", [".", "src.h5"])
def test_virtual_source_with_external_storage_refused(release, vault, tmp_path, monkeypatch,
                                                      source):
    # HDF5 looks up a virtual source's raw file in the working directory: the release here
    folder = _folder(tmp_path)
    folder_rel, ids, flux, _ = release
    offset, size = _truth_offset(folder_rel / "test_truth.h5", "flux")
    (folder / "test_truth.h5").write_bytes(b"\0" * (offset + size))
    with h5py.File(folder / source if source != "." else folder / "predictions.h5", "a") as f:
        f.create_dataset("raw", shape=flux.shape, dtype="f8",
                         external=[("test_truth.h5", offset, size)])
    layout = h5py.VirtualLayout(shape=flux.shape, dtype="f8")
    layout[...] = h5py.VirtualSource(source, "raw", shape=flux.shape)
    with h5py.File(folder / "predictions.h5", "a") as f:
        f["blend_id"] = ids
        f.create_virtual_dataset("flux", layout, fillvalue=0)
        f.attrs["release"] = "hand"
    monkeypatch.chdir(folder_rel)
    msg = assert_refused(folder / "predictions.h5", release, vault, "field 'flux'")
    assert "virtual dataset whose source" in msg


def test_external_storage_at_another_files_offsets_refused(release, vault, tmp_path):
    folder = _folder(tmp_path)
    folder_rel, ids, flux, _ = release
    truth = folder_rel / "test_truth.h5"
    id_offset, id_size = _truth_offset(truth, "blend_id")
    with h5py.File(folder / "predictions.h5", "w") as f:  # the truth's ids, absolute path
        f.create_dataset("blend_id", shape=ids.shape, dtype="i8",
                         external=[(str(truth), id_offset, id_size)])
        f["flux"] = flux
        f.attrs["release"] = "hand"
    assert "external dataset" in assert_refused(folder, release, vault, "field 'blend_id'")
    with h5py.File(folder / "predictions.h5", "w") as f:  # the secret's bytes, relative path
        f.create_dataset("blend_id", shape=ids.shape, dtype="i8",
                         external=[(os.path.relpath(vault / "secret.bin", folder), 0, ids.nbytes)])
        f["flux"] = flux
        f.attrs["release"] = "hand"
    assert_refused(folder, release, vault, "field 'blend_id'")  # not "duplicate blend_id 4242"
    os.symlink(vault / "secret.bin", folder / "raw.bin")  # through a link in the folder
    with h5py.File(folder / "predictions.h5", "w") as f:
        f["blend_id"] = ids
        f.create_dataset("flux", shape=flux.shape, dtype="f8",
                         external=[("raw.bin", 0, flux.nbytes)])
        f.attrs["release"] = "hand"
    assert_refused(folder, release, vault, "field 'flux'")


def test_plugin_filter_refused(release, vault, tmp_path):
    folder = _folder(tmp_path)
    _, ids, flux, _ = release
    with h5py.File(folder / "predictions.h5", "w") as f:
        f["blend_id"] = ids
        ds = f.create_dataset("flux", shape=flux.shape, dtype="f8", chunks=flux.shape,
                              compression=32015, allow_unknown_filter=True)
        ds.id.write_direct_chunk((0, 0), flux.tobytes())
        f.attrs["release"] = "hand"
    msg = assert_refused(folder, release, vault, "field 'flux'")
    assert "filter 32015" in msg


# ---------------------------------------------------------------------------------------------
# the submission's own files still read


def _scores(folder: Path, release) -> None:
    result = runner.invoke(app, ["score", str(folder), "--data", str(release[0]),
                                 "--n-boot", "0"])
    assert result.exit_code == 0, result.output


def test_builtin_filters_soft_links_and_inner_symlinks_read(release, tmp_path):
    folder = _folder(tmp_path)
    _, ids, flux, masks = release
    (folder / "data").mkdir()
    real = folder / "data" / "real.h5"
    with h5py.File(real, "w") as f:
        f.create_dataset("blend_id", data=ids, compression="gzip", shuffle=True, fletcher32=True)
        f.create_dataset("values/flux", data=flux, compression="lzf", fletcher32=True)
        f["flux"] = h5py.SoftLink("/values/flux")  # a soft link names this file's own data
        f.create_dataset("masks", data=masks, compression="gzip", shuffle=True,
                         chunks=(4, 2, 32, 32))
        f.attrs["release"] = "hand"
    (folder / "predictions.h5").symlink_to("data/real.h5")  # a link inside the folder
    (folder / "submission.toml").write_text('name = "own-files"\n')
    sub = read_submission(folder)
    assert sub.name == "own-files" and sub.path == folder / "predictions.h5"
    np.testing.assert_allclose(sub.flux, flux)
    _scores(folder, release)


def test_virtual_and_external_data_in_the_folder_read_from_the_folder(release, tmp_path,
                                                                       monkeypatch):
    folder = _folder(tmp_path)
    _, ids, flux, _ = release
    with h5py.File(folder / "src.h5", "w") as f:
        f["data"] = flux
    ids.astype("<i8").tofile(folder / "ids.bin")
    layout = h5py.VirtualLayout(shape=flux.shape, dtype="f8")
    layout[...] = h5py.VirtualSource("src.h5", "data", shape=flux.shape)
    with h5py.File(folder / "predictions.h5", "w") as f:
        f.create_dataset("blend_id", shape=ids.shape, dtype="<i8",
                         external=[("ids.bin", 0, ids.nbytes)])
        f.create_virtual_dataset("flux", layout, fillvalue=0)
        f.attrs["release"] = "hand"
    decoy = tmp_path / "cwd"  # same file names in the working directory: never read
    decoy.mkdir()
    (ids[::-1] + 1).astype("<i8").tofile(decoy / "ids.bin")
    with h5py.File(decoy / "src.h5", "w") as f:
        f["data"] = flux * 7
    monkeypatch.chdir(decoy)
    sub = read_submission(folder)
    np.testing.assert_array_equal(sub.blend_id, ids)
    np.testing.assert_allclose(sub.flux, flux)
    _scores(folder, release)
