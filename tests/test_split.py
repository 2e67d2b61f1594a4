"""The galaxy-disjoint split: drawn with NumPy's frozen legacy stream, as the frozen releases."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from challenge.contract.release import committed_dir, preset
from challenge.pipeline.split import TEST, TRAIN_VAL, split_galaxies


@pytest.mark.parametrize("name", ["v1", "mini", "cosmos-example"])
def test_committed_splits_are_reproduced(name):
    """The committed split of every frozen release comes out of split_galaxies unchanged."""
    galaxies = Table.read(committed_dir(name) / "galaxies.ecsv")
    spec = preset(name)
    labels = split_galaxies(np.asarray(galaxies["galaxy_id"]), spec.test_fraction, spec.seed)
    np.testing.assert_array_equal(labels, np.asarray(galaxies["split"]))


def test_v1_split_counts():
    galaxies = Table.read(committed_dir("v1") / "galaxies.ecsv")
    labels = split_galaxies(np.asarray(galaxies["galaxy_id"]), 0.2, preset("v1").seed)
    assert int(np.sum(labels == TEST)) == 384 and set(labels) == {TEST, TRAIN_VAL}


@pytest.mark.parametrize("n, fraction", [(3, 0.5), (44, 0.2), (100, 0.33), (1919, 0.2)])
def test_same_draw_as_scikit_learns_group_shuffle_split(n, fraction):
    """The draw GroupShuffleSplit made when the frozen releases were split (ids grouped)."""
    from sklearn.model_selection import GroupShuffleSplit

    rng = np.random.default_rng(n)
    for ids in (rng.permutation(10 * n)[:n], rng.integers(0, n, 2 * n)):  # unique, repeated
        state = int(np.random.SeedSequence(5, spawn_key=(1,)).generate_state(1)[0])
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=state)
        _, test_rows = next(splitter.split(ids, groups=ids))
        expected = np.full(len(ids), TRAIN_VAL, dtype=object)
        expected[test_rows] = TEST
        np.testing.assert_array_equal(split_galaxies(ids, fraction, 5), expected.astype(str))


def test_rows_of_one_galaxy_share_a_label():
    ids = np.repeat(np.arange(30), 3)
    labels = split_galaxies(ids, 0.2, 11).reshape(30, 3)
    assert (labels == labels[:, :1]).all() and int(np.sum(labels[:, 0] == TEST)) == 6
