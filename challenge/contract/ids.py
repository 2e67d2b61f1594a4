"""Finding blends and galaxies by id: one sorted lookup for every stage that matches tables."""

from __future__ import annotations

import numpy as np


def id_positions(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each id of ``wanted`` is in ``ids``.

    Args:
        ids: (n,) ids, any order; a repeated id is found at its first position.
        wanted: ids to look up, any shape.

    Returns:
        ``(positions, found)``, both of ``wanted``'s shape: the index into ``ids`` of each wanted
        id, and whether it is there at all (where it is not, the position is meaningless).
    """
    ids, wanted = np.asarray(ids), np.asarray(wanted)
    if ids.size == 0:
        return np.zeros(wanted.shape, np.intp), np.zeros(wanted.shape, bool)
    sorter = np.argsort(ids, kind="stable")
    pos = sorter[np.minimum(np.searchsorted(ids, wanted, sorter=sorter), ids.size - 1)]
    return pos, ids[pos] == wanted
