"""Hostile input: user text with markup and escape sequences, virtual / external HDF5 datasets,
tiny files declaring huge shapes. Every input is printed as typed or refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scoring import hand_release, write_h5
from typer.testing import CliRunner

from challenge.cli import app
from challenge.cli.base import plain
from challenge.contract.errors import ReleaseError, SubmissionError
from challenge.contract.submission import read_submission

runner = CliRunner()

# Text a user controls, with what the terminal must show for it.
HOSTILE = ["foo[/]", "[bold]x", "a[/b]", "[central, companion]", "x\\", ":smile:",
           "\x1b[31mred\x1b[0m", "bell\x07\rover", "[link=http://x]y[/link]", "a$\\frac{$b"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return hand_release(tmp_path_factory.mktemp("rel") / "hand", n=12)


def _clean(result, code: int | tuple[int, ...] = (0, 2)) -> str:
    """The output of a command that must end with a code, no traceback, no raw escape."""
    codes = (code,) if isinstance(code, int) else code
    assert result.exit_code in codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    return result.output


def _one_line_error(result) -> str:
    out = _clean(result, 2)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


def test_plain_shows_control_characters():
    assert plain("\x1b[31mred") == "\\x1b[31mred"
    assert plain("a\tb\nc") == "a\tb\nc"
    assert plain("[bold]x[/]") == "[bold]x[/]"


@pytest.mark.parametrize("text", HOSTILE)
def test_score_prints_names_from_every_source_as_typed(release, tmp_path, text):
    folder, ids, flux, _ = release
    # the name as an HDF5 attribute, in a folder whose path holds the same text
    d = tmp_path / text.replace("/", "_").replace("\\", "_").replace("\x00", "")
    d.mkdir()
    write_h5(d / "predictions.h5", ids, flux, name=text)
    out = _clean(runner.invoke(app, ["score", str(d), "--data", str(folder), "--n-boot", "0"]), 0)
    assert plain(text) in out
    # the name in submission.toml (TOML escapes the control characters)
    (d / "predictions.h5").unlink()
    write_h5(d / "predictions.h5", ids, flux)
    (d / "submission.toml").write_text(f"name = {json.dumps(text)}\n")
    out = _clean(runner.invoke(app, ["score", str(d), "--data", str(folder), "--n-boot", "0"]), 0)
    assert plain(text) in out
    # the release attribute: refused, the text quoted in one line
    write_h5(d / "predictions.h5", ids, flux, release=text)
    (d / "submission.toml").unlink()
    line = _one_line_error(runner.invoke(app, ["score", str(d), "--data", str(folder)]))
    assert "predictions are for release" in line


@pytest.mark.parametrize("text", HOSTILE)
def test_table_column_names_print_as_typed(release, tmp_path, text):
    folder, ids, flux, _ = release
    path = tmp_path / "p.csv"
    Table({"blend_id": ids, "flux_central": flux[:, 0], text: flux[:, 1]}).write(
        path, format="ascii.csv")
    line = _one_line_error(runner.invoke(app, ["score", str(path), "--data", str(folder)]))
    if "\r" not in text:  # a CR in a CSV header breaks the row: refused otherwise
        assert "flux_companion" in line and "missing column" in line and plain(text) in line


def test_own_hints_keep_brackets(release, tmp_path):
    folder, ids, flux, _ = release
    path = write_h5(tmp_path / "p.h5", ids, flux[:, :1])
    line = _one_line_error(runner.invoke(app, ["score", str(path), "--data", str(folder)]))
    assert "write one [central, companion] row per blend_id" in line


def test_compare_prints_hostile_names(release, tmp_path):
    folder, ids, flux, _ = release
    a = write_h5(tmp_path / "a.h5", ids, flux, name="foo[/]\x1b[2J")
    b = write_h5(tmp_path / "b.h5", ids, flux * 1.1, name="[bold]b")
    out = _clean(runner.invoke(app, ["compare", str(a), str(b), "--data", str(folder),
                                     "--n-boot", "10"]), 0)
    assert "foo[/]\\x1b[2J" in out and "[bold]b" in out


def test_one_bad_folder_does_not_take_the_leaderboard_down(release, tmp_path):
    folder, ids, flux, _ = release
    subs = tmp_path / "subs"
    for i, text in enumerate(HOSTILE):
        d = subs / f"m{i}[bold]"
        d.mkdir(parents=True)
        write_h5(d / "predictions.h5", ids, flux * (1 + 0.01 * i), name=text)
    bad = subs / "broken[b]\x1b[31m"
    bad.mkdir()
    (bad / "predictions.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    result = runner.invoke(app, ["leaderboard", "--data", str(folder), "--submissions",
                                 str(subs), "--out", str(tmp_path / "lb"), "--n-boot", "0"])
    out = _clean(result, 0)
    assert "skipped broken[b]\\x1b[31m" in out
    assert (tmp_path / "lb" / "leaderboard.csv").is_file()


# ---------------------------------------------------------------------------------------------
# virtual and external datasets


def _virtual(path: Path, name: str, source: Path, shape, dtype="f8") -> None:
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[...] = h5py.VirtualSource(str(source.name), "data", shape=shape)
    with h5py.File(path, "a") as f:
        f.create_virtual_dataset(name, layout, fillvalue=0)


def test_virtual_dataset_with_missing_source_is_refused(release, tmp_path):
    folder, ids, flux, _ = release
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = flux
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["blend_id"] = ids
        f.attrs["release"] = "hand"
    _virtual(path, "flux", src, flux.shape)
    assert np.allclose(read_submission(path).flux, flux)  # a readable source is fine
    src.unlink()
    with pytest.raises(SubmissionError, match="'flux'.*virtual dataset whose source"):
        read_submission(path)
    line = _one_line_error(runner.invoke(app, ["score", str(path), "--data", str(folder)]))
    assert "virtual" in line


def test_external_dataset_with_missing_file_is_refused(release, tmp_path):
    _, ids, flux, _ = release
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["blend_id"] = ids
        f.create_dataset("flux", shape=flux.shape, dtype="f8",
                         external=[("raw.bin", 0, flux.nbytes)])
        f.attrs["release"] = "hand"
    with pytest.raises(SubmissionError, match="external dataset"):
        read_submission(path)
    (tmp_path / "raw.bin").write_bytes(b"\0" * 8)
    with pytest.raises(SubmissionError, match="shorter than declared"):
        read_submission(path)


def test_dangling_links_name_the_field(release, tmp_path):
    _, ids, flux, _ = release
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["blend_id"] = ids
        f["flux"] = h5py.ExternalLink("gone.h5", "/flux")
        f["flux_err"] = h5py.SoftLink("/nowhere")
        f.attrs["release"] = "hand"
    with pytest.raises(SubmissionError, match="field 'flux': a link whose target"):
        read_submission(path)


def test_truth_masks_virtual_with_missing_source_refused(tmp_path):
    from challenge.scoring.scores import load_truth, score

    folder, ids, flux, masks = hand_release(tmp_path / "rel", n=8)
    src = tmp_path / "rel" / "masks_src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = masks
    with h5py.File(folder / "test_truth.h5", "a") as f:
        del f["masks"]
    _virtual(folder / "test_truth.h5", "masks", src, masks.shape, "u1")
    src.unlink()
    sub_path = write_h5(tmp_path / "p.h5", ids, flux, masks=masks)
    t = load_truth(folder)
    with pytest.raises(ReleaseError, match="'masks' is a virtual dataset"):
        score(read_submission(sub_path), t, n_boot=0)


# ---------------------------------------------------------------------------------------------
# tiny files declaring huge shapes


def huge_masks_file(path: Path, ids, flux, n: int, size: int = 2048) -> Path:
    """A few-KB HDF5 declaring masks (n, 2, size, size), all chunks unwritten."""
    write_h5(path, ids, flux)
    with h5py.File(path, "a") as f:
        f.create_dataset("masks", shape=(n, 2, size, size), dtype="f4",
                         chunks=(1, 1, 64, 64), compression="gzip", fillvalue=0.5)
    return path


def huge_ids_file(path: Path, n: int = 10**8) -> Path:
    """A few-KB HDF5 declaring n blend ids and (n, 2) fluxes."""
    with h5py.File(path, "w") as f:
        f.create_dataset("blend_id", shape=(n,), dtype="i8", chunks=(2**16,), compression="gzip")
        f.create_dataset("flux", shape=(n, 2), dtype="f8", chunks=(2**16, 2), compression="gzip")
        f.attrs["release"] = "hand"
    return path


def test_huge_declared_shapes_refused_before_reading(release, tmp_path):
    folder, ids, flux, _ = release
    big = huge_masks_file(tmp_path / "masks.h5", ids, flux, len(ids))
    many = huge_ids_file(tmp_path / "ids.h5")
    assert big.stat().st_size < 1_000_000 and many.stat().st_size < 1_000_000
    line = _one_line_error(runner.invoke(app, ["score", str(big), "--data", str(folder)]))
    assert "'masks': declares shape" in line and "32, 32" in line
    line = _one_line_error(runner.invoke(app, ["score", str(many), "--data", str(folder)]))
    assert "declares 100,000,000 rows" in line


def test_huge_chunks_and_huge_flux_refused(release, tmp_path):
    _, ids, flux, _ = release
    path = write_h5(tmp_path / "p.h5", ids, flux)
    with h5py.File(path, "a") as f:
        f.create_dataset("masks", shape=(len(ids), 2, 32, 32), dtype="f8",
                         chunks=(len(ids), 2, 32, 32), compression="gzip")
    read_submission(path)  # 0.2 MB chunks are fine
    with h5py.File(path, "a") as f:
        del f["masks"]
        f.create_dataset("masks", shape=(2000, 2, 2048, 2048), dtype="f4",
                         chunks=(4, 2, 2048, 2048), compression="gzip")
    with pytest.raises(SubmissionError, match="'masks': chunks .* 128 MiB each"):
        read_submission(path)
    big = flux.copy()
    big[3, 1] = 1.7e308
    with pytest.raises(SubmissionError, match="beyond 1e\\+30 counts \\(e.g. 1.7e\\+308\\) for "
                       "blend_id 1009"):
        read_submission(write_h5(tmp_path / "q.h5", ids, big))


# ---------------------------------------------------------------------------------------------
# a corpus of malformed files: every one is refused with exactly one line on the terminal


def _table(ids, flux, **extra):
    cols = {"blend_id": ids, "flux_central": flux[:, 0], "flux_companion": flux[:, 1]}
    cols.update(extra)
    return Table(cols)


def malformed_corpus(root: Path, ids, flux) -> dict[str, tuple[Path, str]]:
    """name -> (file, a piece of the expected one-line message)."""
    corpus: dict[str, tuple[Path, str]] = {}

    def add(name, path, expect):
        corpus[name] = (path, expect)

    for name, file, content, expect in [
        ("txt", "predictions.txt", b"this is not a table\n{]\n", "not a table astropy can read"),
        ("json", "p.json", b'{"blend_id": [1, 2], "flux": [[1, 2]]}', "not a table astropy"),
        ("empty CSV", "empty.csv", b"", "No header line"),
        ("header-only CSV", "header_only.csv", b"blend_id,flux_central,flux_companion\n",
         "blend_id"),
        ("binary CSV", "binary.csv", bytes(range(256)) * 4, "UnicodeDecodeError"),
        ("HDF5 signature only", "magic_only.h5", b"\x89HDF\r\n\x1a\n" + b"\xff" * 100,
         "not a readable HDF5 file"),
    ]:
        (root / file).write_bytes(content)
        add(name, root / file, expect)
    p = root / "userblock.h5"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["blend_id"], f["flux"] = ids, flux[:, :1]
    add("user block HDF5", p, "field 'flux': shape")
    p = root / "userblock.csv"
    with h5py.File(p, "w", userblock_size=512) as f:
        f["blend_id"] = ids
    add("user block HDF5 named .csv", p, "field 'flux': missing")
    p = root / "overflow.csv"
    rows = [f"{b},{f[0]},{f[1]}\n" for b, f in zip(ids, flux, strict=True)]
    rows[0] = "9" * 30 + rows[0][rows[0].index(","):]
    p.write_text("blend_id,flux_central,flux_companion\n" + "".join(rows))
    add("int overflow in CSV", p, "blend_id")
    p = root / "truncated.fits"
    _table(ids, flux).write(p)
    p.write_bytes(p.read_bytes()[:4000])
    add("truncated FITS", p, "")
    for name, file, blend_id, flux_ds, expect in [
        ("empty blend_id", "empty_id.h5", h5py.Empty("i8"), flux,
         "field 'blend_id': an empty dataset"),
        ("dangling link", "dangling.h5", h5py.SoftLink("/nowhere"), flux,
         "field 'blend_id': a link whose target cannot be opened"),
        ("external link", "external_link.h5", ids, h5py.ExternalLink("gone.h5", "/flux"),
         "field 'flux': a link whose target cannot be opened"),
        ("string ids", "strings.h5", ids.astype("S8"), flux, "field 'blend_id': dtype |S8"),
        ("compound flux", "compound.h5", ids,
         np.zeros(len(ids), dtype=[("a", "f8"), ("b", "f8")]), "field 'flux': dtype"),
    ]:
        with h5py.File(root / file, "w") as f:
            f["blend_id"], f["flux"] = blend_id, flux_ds
        add(name, root / file, expect)
    p = root / "bom.csv"
    _table(ids, flux).write(p, format="ascii.csv")
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    add("BOM in CSV (no release)", p, "field 'release': no release declared")
    p = root / "nan.fits"
    bad = flux.copy()
    bad[2, 0] = np.nan
    _table(ids, bad).write(p)
    add("NaN in FITS", p, "field 'flux': NaN or inf for blend_id 1006")
    p = root / "huge.csv"
    bad = flux.copy()
    bad[0, 1] = 1.7e308
    _table(ids, bad).write(p, format="ascii.csv")
    add("flux 1.7e308", p, "beyond 1e+30 counts")
    p = root / "group.h5"
    with h5py.File(p, "w") as f:
        f.create_group("blend_id")
        f["flux"] = flux
    add("blend_id a group", p, "is a group")
    p = root / "release_bytes.h5"
    write_h5(p, ids, flux, release=None)
    with h5py.File(p, "a") as f:
        f.attrs["release"] = np.void(b"\xff\xfe")
    add("opaque release attr", p, "release")
    p = root / "fits_no_table.fits"
    from astropy.io import fits

    fits.PrimaryHDU(np.zeros((4, 4))).writeto(p)
    add("FITS image, no table", p, "")
    return corpus


def test_malformed_corpus_refused_in_one_line(release, tmp_path):
    folder, ids, flux, _ = release
    corpus = malformed_corpus(tmp_path, ids, flux)
    refused = 0
    for name, (path, expect) in corpus.items():
        result = runner.invoke(app, ["score", str(path), "--data", str(folder)])
        out = _clean(result, 2)
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, out)
        assert expect in lines[0], (name, lines[0])
        refused += 1
    assert refused == len(corpus) == 21


# ---------------------------------------------------------------------------------------------
# hypothesis: any name prints cleanly; any corruption of a CSV is scored or refused in one line

_NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                 min_size=1, max_size=40)
_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(name=_NAMES)
def test_any_name_prints_cleanly(release, tmp_path_factory, name):
    folder, ids, flux, _ = release
    path = write_h5(tmp_path_factory.mktemp("h") / "p.h5", ids, flux, name=name)
    _clean(runner.invoke(app, ["score", str(path), "--data", str(folder), "--n-boot", "0"]), 0)


@_SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=4)),
                      min_size=1, max_size=6))
def test_corrupted_csv_scored_or_refused_in_one_line(release, tmp_path_factory, edits):
    folder, ids, flux, _ = release
    path = tmp_path_factory.mktemp("c") / "p.csv"
    _table(ids, flux).write(path, format="ascii.csv")
    data = bytearray(path.read_bytes())
    for pos, chunk in edits:
        pos %= len(data) + 1
        data[pos: pos + len(chunk)] = chunk
    path.write_bytes(bytes(data))
    (path.parent / "submission.toml").write_text('release = "hand"\n')
    result = runner.invoke(app, ["score", str(path), "--data", str(folder), "--n-boot", "0"])
    out = _clean(result)
    if result.exit_code == 2:
        assert len([line for line in out.splitlines() if line.strip()]) == 1, out


def test_release_name_with_markup_and_escapes(tmp_path):
    name = "mini[/]\x1b[31m"
    folder, ids, flux, _ = hand_release(tmp_path / "rel", n=8, name=name)
    path = write_h5(tmp_path / "p.h5", ids, flux, release=name, name="[central, companion]")
    out = _clean(runner.invoke(app, ["score", str(path), "--data", str(folder),
                                     "--n-boot", "0"]), 0)
    assert "[central, companion] on mini[/]\\x1b[31m" in out
    other = write_h5(tmp_path / "q.h5", ids, flux, release="v1")
    line = _one_line_error(runner.invoke(app, ["score", str(other), "--data", str(folder)]))
    assert "'mini[/]\\x1b[31m'" in line
