"""Inputs no run can use get one line and exit 2, never a silently wrong result or a hang:
masked and ragged arrays in memory, bootstrap options, radii no shift fits."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from challenge import Evaluator, SubmissionError
from challenge.cli import app
from challenge.contract.errors import ReleaseError
from challenge.contract.release import resolve_release
from challenge.contract.workspace import REFERENCES
from challenge.pipeline.pairs import draw_pairs

runner = CliRunner()


@pytest.fixture(scope="module")
def mini_arrays():
    folder, _ = resolve_release("mini")
    pairs = Table.read(folder / "pairs_test.ecsv", format="ascii.ecsv")
    flux = np.stack([pairs["flux_central"], pairs["flux_companion"]], axis=1).astype(float)
    return np.asarray(pairs["blend_id"]), flux


def test_the_evaluator_refuses_masked_and_ragged_arrays(mini_arrays):
    ids, flux = mini_arrays
    ev = Evaluator("mini", n_boot=0)
    hidden = np.ma.masked_array(flux.copy(), mask=np.zeros(flux.shape, bool))
    hidden.data[0, 0], hidden.mask[0, 0] = 1e6, True  # a masked value the score would read
    with pytest.raises(SubmissionError, match="field 'flux': a masked array"):
        ev.eval(ids, hidden)
    ragged = [list(row) for row in flux]
    ragged[3] = ragged[3][:1]
    with pytest.raises(SubmissionError, match="field 'flux'") as err:
        ev.eval(ids, ragged)
    assert "\n" not in str(err.value)
    assert ev.eval(ids, flux)["overall"]["both"]["mape"] == pytest.approx(0.0)


@pytest.mark.parametrize(("option", "value", "match"), [
    ("--n-boot", "-5", "--n-boot -5"), ("--n-boot", "1000000000", "--n-boot 1000000000"),
    ("--seed", "-1", "--seed -1"), ("--seed", str(2**40), "--seed"),
])
def test_bootstrap_options_are_bounded(option, value, match):
    for command in (["score", str(REFERENCES / "mini" / "sep")],
                    ["leaderboard", "--references-only"]):
        res = runner.invoke(app, [*command, "--data", "mini", option, value])
        assert res.exit_code == 2 and match in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1


def test_radii_no_shift_fits_stop_the_draw_with_the_reason():
    galaxies = Table({"galaxy_id": [7, 8, 9], "mag": [20.0, 20.5, 21.0],
                      "r_e_px": [0.1, 0.1, 0.1]})  # r_e given in arcsec, say
    with pytest.raises(ReleaseError, match="no integer shift fits.*galaxies 7, 8, 9.*r_e_px"):
        draw_pairs(galaxies, np.ones(3, bool), 10, seed=0, split_index=0)


METHODS = '''
import os, sys, time
import re

import numpy as np

def swallow(batch, context):
    for _ in range(100):
        try:
            time.sleep(0.5)
        except Exception:
            pass
    return {"flux": np.ones((len(batch.images), 2))}

def bare(batch, context):
    try:
        time.sleep(5)
    except BaseException:
        pass
    return {"flux": np.ones((len(batch.images), 2))}

def leave(batch, context):
    sys.exit(3)

def wander(batch, context):
    os.chdir(os.path.dirname(os.getcwd()))
    return {"flux": np.ones((len(batch.images), 2))}
'''


@pytest.mark.parametrize(("method", "match"), [
    ("swallow", "did not return within --timeout 1 s"),
    ("bare", "it caught the timeout"),
    ("leave", r"called sys.exit\(3\)"),
])
def test_no_method_swallows_its_timeout_or_ends_the_run(tiny_release, tmp_path, method, match):
    (tmp_path / "hostile_methods.py").write_text(METHODS)
    res = runner.invoke(app, ["run", f"{tmp_path / 'hostile_methods.py'}:{method}", "--data",
                              str(tiny_release), "--out", str(tmp_path / "out"),
                              "--timeout", "1"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert re.search(match, res.output), res.output
    assert not (tmp_path / "out").exists()


def test_a_method_that_changes_directory_does_not_move_the_output(tiny_release, tmp_path,
                                                                   monkeypatch):
    (tmp_path / "hostile_methods.py").write_text(METHODS)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["run", f"{tmp_path / 'hostile_methods.py'}:wander", "--data",
                              str(tiny_release), "--out", "mine"])
    assert res.exit_code == 0, res.output
    assert (work / "mine" / "predictions.h5").is_file() and not (tmp_path / "mine").exists()
    res = runner.invoke(app, ["run", f"{tmp_path / 'hostile_methods.py'}:leave", "--data",
                              str(tiny_release), "--timeout", "1e12"])
    assert res.exit_code == 2 and "--timeout" in res.output


@pytest.mark.parametrize(("args", "match"), [
    (["--blends", "1000000000,0,0"], "would take about 98.3 TB"),
    (["--seed", "-1"], "seed -1 must be"),
    (["--sky-sigma", "inf"], "sky_sigma must be finite"),
])
def test_generate_refuses_releases_no_machine_holds_before_any_work(tmp_path, args, match):
    res = runner.invoke(app, ["generate", "--source", "synthetic", "--out",
                              str(tmp_path / "rel"), *args])
    assert res.exit_code == 2 and match in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "rel").exists()


def test_generate_refuses_a_release_larger_than_the_free_space(tmp_path, monkeypatch):
    import shutil

    from challenge.contract.release import preset
    from challenge.pipeline import files

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: usage._replace(free=10**6))
    with pytest.raises(ReleaseError, match="needs about .* GB free"):
        files.generate_release(preset("mini"), tmp_path / "mini")
    assert not (tmp_path / "mini").exists()


def test_score_outputs_of_the_wrong_kind_are_refused_before_scoring(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    sep = str(REFERENCES / "mini" / "sep")
    for args, match in ((["--json", str(tmp_path)], "--json .*: a folder"),
                        (["--plots", str(afile)], "--plots .*: a file"),
                        (["--per-galaxy", str(tmp_path / "x.ecsv" )], None)):
        res = runner.invoke(app, ["score", sep, "--data", "mini", "--n-boot", "0", *args])
        if match is None:
            assert res.exit_code == 0 and (tmp_path / "x.ecsv").is_file(), res.output
        else:
            assert res.exit_code == 2 and re.search(match, res.output), res.output
            assert len(res.output.strip().splitlines()) == 1


def test_fluxes_given_as_magnitudes_get_a_warning(mini_arrays):
    ids, flux = mini_arrays
    folder, _ = resolve_release("mini")
    pairs = Table.read(folder / "pairs_test.ecsv", format="ascii.ecsv")
    mag = np.stack([pairs["mag_central"], pairs["mag_companion"]], axis=1).astype(float)
    ev = Evaluator("mini", n_boot=0)
    assert any("magnitudes?" in w for w in ev.eval(ids, mag)["warnings"])
    assert not any("magnitudes?" in w for w in ev.eval(ids, flux)["warnings"])
