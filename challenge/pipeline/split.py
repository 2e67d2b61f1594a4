"""Galaxy-disjoint split of the parent catalogue.

Test galaxies are drawn first (``test_fraction`` of all galaxies, rounded up, by galaxy id); the
rest form the train/val pool. Train and val blends are both drawn from that pool, test blends only
from the test galaxies, so no galaxy is seen in training and at test time.

The draw is a permutation of the sorted unique galaxy ids by NumPy's legacy ``RandomState``,
whose stream NumPy keeps fixed across versions (NEP 19), so a frozen release's split never moves
with a library upgrade. It is the draw scikit-learn's ``GroupShuffleSplit`` made for the frozen
releases (v1, mini), which is how they were split; tests check both against the committed tables.
"""

from __future__ import annotations

import math

import numpy as np

TRAIN_VAL = "train/val"
TEST = "test"


def split_galaxies(galaxy_ids: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Label each galaxy ``"test"`` or ``"train/val"``; shape (n_galaxies,) of str.

    Rows sharing a galaxy id always share a label.
    """
    galaxy_ids = np.asarray(galaxy_ids)
    groups, group_of_row = np.unique(galaxy_ids, return_inverse=True)
    random_state = int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])
    n_test = math.ceil(test_fraction * len(groups))
    test_groups = np.random.RandomState(random_state).permutation(len(groups))[:n_test]
    labels = np.full(len(galaxy_ids), TRAIN_VAL, dtype=object)
    labels[np.isin(group_of_row.ravel(), test_groups)] = TEST
    return labels.astype(str)


def pool_for(split: str) -> str:
    """The galaxy pool a blend split draws from."""
    return TEST if split == "test" else TRAIN_VAL
