"""Galaxy-disjoint split of the parent catalogue.

Test galaxies are drawn first (``test_fraction`` of all galaxies, grouped by galaxy id with
scikit-learn's ``GroupShuffleSplit``); the rest form the train/val pool. Train and val blends are
both drawn from that pool, test blends only from the test galaxies, so no galaxy is seen in
training and at test time.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

TRAIN_VAL = "train/val"
TEST = "test"


def split_galaxies(galaxy_ids: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Label each galaxy ``"test"`` or ``"train/val"``; shape (n_galaxies,) of str."""
    galaxy_ids = np.asarray(galaxy_ids)
    random_state = int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=random_state)
    _, test_idx = next(splitter.split(galaxy_ids, groups=galaxy_ids))
    labels = np.full(len(galaxy_ids), TRAIN_VAL, dtype=object)
    labels[test_idx] = TEST
    return labels.astype(str)


def pool_for(split: str) -> str:
    """The galaxy pool a blend split draws from."""
    return TEST if split == "test" else TRAIN_VAL
