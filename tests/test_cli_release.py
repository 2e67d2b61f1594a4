"""The release commands through typer's CliRunner: exit codes and messages."""

import h5py
from typer.testing import CliRunner

from challenge.cli import app

runner = CliRunner()


def test_generate_unknown_release_exits_2_with_one_line(tmp_path):
    result = runner.invoke(app, ["generate", "--release", "v7", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown release 'v7'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_verify_info_show_export_on_a_release(tiny_release, tmp_path):
    result = runner.invoke(app, ["verify", str(tiny_release)])
    assert result.exit_code == 0 and "verified" in result.output
    result = runner.invoke(app, ["info", str(tiny_release)])
    assert result.exit_code == 0 and "irregular" in result.output
    result = runner.invoke(app, ["show", str(tiny_release), "--out", str(tmp_path / "fig")])
    assert result.exit_code == 0
    for name in ("blends_test.png", "galaxies.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(
        app, ["export", str(tiny_release), "--format", "npy", "--out", str(tmp_path / "exp")]
    )
    assert result.exit_code == 0 and (tmp_path / "exp" / "test_images.npy").exists()


def test_verify_of_a_corrupted_release_exits_2(tiny_release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_release, copy)
    with h5py.File(copy / "train.h5", "r+") as f:
        del f["masks"]
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 2
    assert "train.h5: dataset 'masks' missing" in result.output
    assert "Traceback" not in result.output


def test_verify_of_a_folder_that_is_no_release_exits_2(tmp_path):
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "no release.toml" in result.output
