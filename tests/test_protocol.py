"""The method protocol: any callable in, a valid submission out."""

import textwrap

import h5py
import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.submission import read_submission
from challenge.loaders.protocol import Batch, MethodError, check_output, load_method, run_method
from challenge.scoring.scores import load_truth, score

runner = CliRunner()

TOY = '''
import numpy as np


def half_and_half(batch, context):
    """Half of the stamp's total counts to each galaxy."""
    total = batch.images.astype(np.float64).sum(axis=(1, 2))
    return {"flux": np.stack([total / 2, total / 2], axis=1)}


def wrong_shape(batch, context):
    return {"flux": np.ones((len(batch.blend_id), 3))}


def with_nan(batch, context):
    flux = np.ones((len(batch.blend_id), 2))
    flux[1, 0] = np.nan
    return {"flux": flux}
'''


@pytest.fixture()
def toy_module(tmp_path, monkeypatch):
    (tmp_path / "toy_method.py").write_text(textwrap.dedent(TOY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "toy_method"


def test_toy_method_scores_exactly_as_hand_computed(tiny_release, toy_module, tmp_path):
    out = tmp_path / "sub"
    result = runner.invoke(app, ["run", f"{toy_module}:half_and_half", "--data",
                                 str(tiny_release), "--out", str(out), "--batch-size", "7"])
    assert result.exit_code == 0, result.output
    with h5py.File(tiny_release / "test_blends.h5") as f:
        half = f["images"][:].astype(np.float64).sum(axis=(1, 2)) / 2
    pairs = Table.read(tiny_release / "pairs_test.ecsv")
    truth = np.column_stack([pairs["flux_central"], pairs["flux_companion"]])
    expected = 100 * np.mean(np.abs(half[:, None] - truth) / truth)
    sub = read_submission(out)
    assert np.allclose(sub.flux, np.column_stack([half, half]))
    got = score(sub, load_truth(tiny_release), n_boot=50).to_dict()["overall"]["both"]["mape"]
    assert got == pytest.approx(expected, rel=1e-12)
    assert "Half of the stamp" in (out / "submission.toml").read_text()


def test_batches_and_workers_do_not_change_the_outputs(tiny_release, toy_module):
    method = load_method(f"{toy_module}:half_and_half")
    a = run_method(method, tiny_release, batch_size=40)
    b = run_method(method, tiny_release, batch_size=9)
    assert np.array_equal(a.blend_id, b.blend_id)
    assert np.array_equal(a.outputs["flux"], b.outputs["flux"])


@pytest.mark.parametrize(
    "callable_, message",
    [
        ("wrong_shape", "'flux' has shape (40, 3), expected (40, 2)"),
        ("with_nan", "'flux' has NaN/inf for batch rows [1]"),
        ("missing", "has no attribute 'missing'"),
    ],
)
def test_protocol_breaches_are_clear_errors(tiny_release, toy_module, tmp_path, callable_, message):
    result = runner.invoke(app, ["run", f"{toy_module}:{callable_}", "--data", str(tiny_release),
                                 "--out", str(tmp_path / "s"), "--batch-size", "40"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_bad_import_and_bad_outputs():
    with pytest.raises(MethodError, match="MODULE:CALLABLE"):
        load_method("no_colon")
    with pytest.raises(MethodError, match="cannot import module"):
        load_method("not_a_module_xyz:f")
    with pytest.raises(MethodError, match="dict with at least 'flux'"):
        check_output([1, 2], 2, 128, "here")
    batch = Batch(np.arange(2), np.zeros((2, 8, 8), np.float32), np.ones(2))
    out = check_output({"flux": np.ones((2, 2)), "masks": np.zeros((2, 2, 8, 8))}, 2, 8, "x")
    assert out["masks"].shape == (2, 2, 8, 8) and len(batch.blend_id) == 2
