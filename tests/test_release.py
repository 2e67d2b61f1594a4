"""The frozen release: the pairing rule, galaxy-disjointness, masks, determinism, errors."""

import h5py
import numpy as np
import pytest
from astropy.table import Table

from challenge.contract.errors import ReleaseError
from challenge.contract.release import PRESETS, ReleaseSpec, preset, read_table, resolve_release
from challenge.pipeline.blending import blend_image, shift_image, sky_noise
from challenge.pipeline.catalogue import slot_morphologies
from challenge.pipeline.files import (
    export_blends,
    generate_release,
    remove_stale_partials,
    verify_release,
)
from challenge.pipeline.pairs import shift_bounds


def tables(folder):
    return {s: read_table(folder, f"pairs_{s}.ecsv") for s in ("train", "val", "test")}


def test_shift_pads_with_zeros_and_never_wraps():
    image = np.arange(16, dtype=np.float32).reshape(4, 4) + 1
    shifted = shift_image(image, dx=1, dy=-2)
    assert np.array_equal(shifted[:2, 1:], image[2:, :3])
    assert np.all(shifted[2:, :] == 0) and np.all(shifted[:, 0] == 0)
    assert np.all(shift_image(image, 4, 0) == 0)


def test_shift_bounds_follow_the_candels_blender_rule():
    lo, hi = shift_bounds(3.0, 5.0)
    assert (lo, hi) == (5.0, 12.0)
    lo, hi = shift_bounds(1.0, 6.0)  # bounds cross: lower = 0.8 x upper
    assert hi == 4.0 and lo == pytest.approx(3.2)
    assert shift_bounds(30.0, 40.0)[1] == 64.0


def test_v1_morphology_mix_is_the_papers():
    morphs = slot_morphologies(preset("v1"))
    counts = {m: morphs.count(m) for m in set(morphs)}
    assert counts == {"bulge": 352, "disc": 433, "bulge+disc": 702, "irregular": 432}
    assert preset("v1").n_blends == {"train": 20_000, "val": 5_000, "test": 5_000}


def test_committed_v1_tables_keep_the_rules():
    folder, info = resolve_release("v1")
    galaxies = Table.read(folder / "galaxies.ecsv")
    assert len(galaxies) == 1919
    assert {m: int(np.sum(galaxies["morphology"] == m)) for m in info.spec.morphology_counts} == (
        info.spec.morphology_counts
    )
    test_ids = set(galaxies["galaxy_id"][galaxies["split"] == "test"])
    assert len(test_ids) == round(0.2 * 1919)
    for split, pairs in tables(folder).items():
        assert len(pairs) == info.spec.n_blends[split]
        used = set(pairs["central_id"]) | set(pairs["companion_id"])
        assert used <= test_ids if split == "test" else not (used & test_ids)


def test_tiny_release_obeys_every_rule(tiny_release, tiny_spec):
    galaxies = Table.read(tiny_release / "galaxies.ecsv")
    test_ids = set(galaxies["galaxy_id"][galaxies["split"] == "test"])
    r_e = dict(zip(galaxies["galaxy_id"], galaxies["r_e_px"], strict=True))
    ids = []
    for split, pairs in tables(tiny_release).items():
        ids += list(pairs["blend_id"])
        used = set(pairs["central_id"]) | set(pairs["companion_id"])
        assert (used <= test_ids) if split == "test" else not (used & test_ids)
        assert np.all(pairs["central_id"] != pairs["companion_id"])
        assert np.all(np.abs(pairs["mag_central"] - pairs["mag_companion"]) < 2)
        lo, hi = shift_bounds(
            [r_e[g] for g in pairs["central_id"]], [r_e[g] for g in pairs["companion_id"]]
        )
        d = np.hypot(pairs["dx"], pairs["dy"])
        assert np.all((d >= lo - 1e-9) & (d <= hi + 1e-9))
        assert np.allclose(pairs["distance_px"], d)
    assert len(ids) == len(set(ids)) == sum(tiny_spec.n_blends.values())


def test_blends_and_masks_are_the_shifted_stamps(tiny_release, tiny_spec):
    pairs = Table.read(tiny_release / "pairs_train.ecsv")
    with h5py.File(tiny_release / "galaxies.h5") as g, h5py.File(tiny_release / "train.h5") as f:
        row = {int(i): k for k, i in enumerate(g["galaxy_id"][:])}
        stamps, gmasks = g["stamps"][:], g["masks"][:]
        images, masks = f["images"][:], f["masks"][:]
        assert np.array_equal(f["blend_id"][:], pairs["blend_id"])
        flux = f["flux"][:]
    assert np.all(np.isfinite(images)) and images.dtype == np.float32
    assert set(np.unique(masks)) <= {0, 1} and masks.dtype == np.uint8
    assert np.allclose(flux[:, 0], pairs["flux_central"])
    for i in (0, 5, len(pairs) - 1):
        p = pairs[i]
        c, k = row[int(p["central_id"])], row[int(p["companion_id"])]
        expected = blend_image(
            stamps[c],
            stamps[k],
            int(p["dx"]),
            int(p["dy"]),
            tiny_spec.sky_sigma,
            int(p["noise_seed"]),
        )
        assert np.array_equal(images[i], expected)
        assert np.array_equal(masks[i, 0], gmasks[c])
        assert np.array_equal(masks[i, 1], shift_image(gmasks[k], int(p["dx"]), int(p["dy"])))
        assert masks[i, 1].sum() > 0  # the companion's segment moved with it


def test_sky_noise_has_the_release_sigma_and_its_own_seed():
    a = sky_noise(11, (128, 128), 0.012)
    assert a.shape == (2, 128, 128) and a.std() == pytest.approx(0.012, rel=0.02)
    assert np.array_equal(a, sky_noise(11, (128, 128), 0.012))
    assert not np.array_equal(a, sky_noise(12, (128, 128), 0.012))


def test_model_flux_matches_catalogue_magnitudes(tiny_release):
    galaxies = Table.read(tiny_release / "galaxies.ecsv")
    # sep's truth flux is below the model (Kron apertures miss the wings), never far above.
    ratio = galaxies["flux"] / galaxies["model_flux"]
    assert 0.75 < np.median(ratio) < 1.0 and np.all(ratio < 1.2)


def test_same_release_regardless_of_chunks_and_workers(tiny_release, tiny_spec, tmp_path):
    again = generate_release(tiny_spec, tmp_path / "again", chunk_size=7, workers=2)
    for name in ("train.h5", "test_blends.h5", "test_truth.h5", "galaxies.h5"):
        with h5py.File(tiny_release / name) as a, h5py.File(again / name) as b:
            assert set(a) == set(b)
            for key in a:
                assert np.array_equal(a[key][:], b[key][:]), (name, key)
    for name in ("galaxies.ecsv", "pairs_test.ecsv", "release.toml"):
        assert (tiny_release / name).read_text() == (again / name).read_text()


def test_regenerated_mini_is_the_frozen_mini(mini_release):
    report = verify_release(mini_release)
    assert report.ok, report.problems
    assert len(report.checked) > 20


def test_verify_names_a_changed_array(tiny_release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_release, copy)
    with h5py.File(copy / "test_blends.h5", "r+") as f:
        f["images"][3, 10, 10] += 1.0
    report = verify_release(copy)
    assert not report.ok
    assert any("test_blends.h5: array 'images'" in p for p in report.problems)


def test_verify_reports_a_corrupted_hdf5_file(tiny_release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_release, copy)
    data = (copy / "val.h5").read_bytes()
    (copy / "val.h5").write_bytes(data[: len(data) // 3])
    report = verify_release(copy)
    assert any(p.startswith("val.h5: unreadable HDF5") for p in report.problems)


def test_verify_reports_a_missing_file_once(tiny_release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_release, copy)
    (copy / "test_truth.h5").unlink()
    report = verify_release(copy)
    assert [p for p in report.problems if "test_truth.h5" in p] == [
        "test_truth.h5: file missing; regenerate the release"
    ]


def test_unfinished_folders_of_killed_runs_are_removed_only_when_their_process_is_gone(tmp_path):
    import os
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid, live_pid = int(finished.stdout), os.getppid()
    dead = tmp_path / f".rel.partial-{dead_pid}"
    live = tmp_path / f".other.partial-{live_pid}"
    odd = tmp_path / ".rel.partial-notapid"
    for folder in (dead, live, odd):
        folder.mkdir()
        (folder / "galaxies.ecsv").write_text("half-written")
    assert remove_stale_partials(tmp_path / "rel") == [dead]
    assert not dead.exists() and live.is_dir() and odd.is_dir()
    assert remove_stale_partials(tmp_path / "missing" / "rel") == []


def test_unknown_release_and_non_empty_output_are_clear_errors(tiny_spec, tmp_path):
    with pytest.raises(ReleaseError, match="unknown release 'v9'.*mini, v1"):
        preset("v9")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ReleaseError, match="not empty"):
        generate_release(tiny_spec, tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReleaseError, match="cannot write"):
        generate_release(tiny_spec, tmp_path / "file" / "release")


def test_a_failed_generation_leaves_nothing_behind(tiny_spec, tmp_path, monkeypatch):
    import challenge.pipeline.chunks as chunks

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(chunks, "materialise", broken)
    with pytest.raises(RuntimeError):
        generate_release(tiny_spec, tmp_path / "rel")
    assert list(tmp_path.iterdir()) == []


def test_export_round_trips_in_every_format(tiny_release, tmp_path):
    from astropy.io import fits

    with h5py.File(tiny_release / "test_blends.h5") as f:
        images, ids = f["images"][:], f["blend_id"][:]
    (h5,) = export_blends(tiny_release, "test", "h5", tmp_path)
    with h5py.File(h5) as f:
        assert np.array_equal(f["images"][:], images) and f.attrs["release"] == "tiny"
    (cube,) = export_blends(tiny_release, "test", "fits", tmp_path)
    with fits.open(cube) as hdul:
        assert np.array_equal(hdul[0].data, images)
        assert np.array_equal(hdul["BLEND_ID"].data["blend_id"], ids)
    npy, npy_ids = export_blends(tiny_release, "test", "npy", tmp_path)
    assert np.array_equal(np.load(npy), images) and np.array_equal(np.load(npy_ids), ids)
    with pytest.raises(ReleaseError, match="unknown export format"):
        export_blends(tiny_release, "test", "jpeg", tmp_path)


def test_spec_round_trips_through_release_toml(tiny_release, tiny_spec):
    _, info = resolve_release(tiny_release)
    assert info.spec == tiny_spec
    assert ReleaseSpec.from_dict(PRESETS["v1"].to_dict()) == PRESETS["v1"]
