"""Tables that would exhaust memory before any check (compression bombs, a header of millions
of columns, billion-laughs YAML, FITS HDUs declaring gigabytes) are refused in one line before a
parser reads them, while an honest table of the same release still scores."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from test_scoring import hand_release
from typer.testing import CliRunner

from challenge.cli import app
from challenge.contract.submission import read_submission

runner = CliRunner()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand", n=30)


def _honest(ids, flux) -> str:
    rows = "".join(f"{b},{f[0]},{f[1]}\n" for b, f in zip(ids, flux, strict=True))
    return "blend_id,flux_central,flux_companion\n" + rows


def bombs(root, ids, flux, inflated_mb: int = 50) -> dict:
    """Hostile tables (each under 1 MB on disk), by name -> (path, expected message); the gzip
    bomb inflates to ``inflated_mb`` MB."""
    out = {}
    path = root / "bomb.csv"  # zeros after an honest header, gzip-compressed
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_honest(ids, flux).encode())
        zeros = b"0" * 2**20
        for _ in range(inflated_mb):
            f.write(zeros)
    out["gzip bomb"] = (path, "inflates past")
    path = root / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(10**5)) + "\n")
    out["wide header"] = (path, "is over" if path.stat().st_size > 92_000 else "columns")
    path = root / "many.csv"
    path.write_text(",".join(["blend_id", "flux_central", "flux_companion",
                              *(f"x{i}" for i in range(100))]) + "\n")
    out["100 columns"] = (path, "more than 64 columns")
    path = root / "laughs.ecsv"
    lol = ["# a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"# {chr(98 + k)}: &{chr(98 + k)} [*{chr(97 + k)}, *{chr(97 + k)}, *{chr(97 + k)}]"
        for k in range(8)]
    path.write_text("# %ECSV 1.0\n# ---\n# meta:\n" + "\n".join("#   " + line[2:] for line in lol)
                    + "\n# datatype: [{name: blend_id, datatype: int64}]\nblend_id\n1\n")
    out["billion laughs"] = (path, "YAML anchors or aliases")
    path = root / "rows.fits"  # a binary table header declaring 3e8 rows, no data
    header = fits.BinTableHDU.from_columns(
        [fits.Column("blend_id", "K", array=ids),
         fits.Column("flux_central", "D", array=flux[:, 0]),
         fits.Column("flux_companion", "D", array=flux[:, 1])]).header
    header["NAXIS2"] = 300_000_000
    with open(path, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode())
        f.write(header.tostring().encode())
    out["3e8 FITS rows"] = (path, "declares")
    path = root / "image.fits"  # a primary image HDU declaring 4 GB
    header = fits.Header({"SIMPLE": True, "BITPIX": 32, "NAXIS": 2, "NAXIS1": 32768,
                          "NAXIS2": 32768})
    path.write_bytes(header.tostring().encode())
    out["4 GB FITS image"] = (path, "declares")
    return out


def test_every_bomb_is_refused_in_one_line(release, tmp_path):
    folder, ids, flux, _ = release
    for name, (path, match) in bombs(tmp_path, ids, flux).items():
        assert path.stat().st_size < 1_000_000, name
        res = runner.invoke(app, ["score", str(path), "--data", str(folder), "--n-boot", "0"])
        assert res.exit_code == 2, (name, res.output)
        assert match in res.output and len(res.output.strip().splitlines()) == 1, (name,
                                                                                   res.output)


def test_honest_tables_still_read(release, tmp_path):
    folder, ids, flux, _ = release
    plain = tmp_path / "predictions.csv"
    plain.write_text(_honest(ids, flux))
    packed = tmp_path / "packed" / "predictions.csv"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(_honest(ids, flux).encode()))
    table = tmp_path / "t" / "predictions.fits"
    table.parent.mkdir()
    Table({"blend_id": ids, "flux_central": flux[:, 0], "flux_companion": flux[:, 1]}).write(table)
    for path in (plain, packed, table):
        sub = read_submission(path, expect=(len(ids), 32))
        assert np.allclose(sub.flux, flux), path
