"""Galaxy sources: where the isolated galaxy stamps of a release come from.

``synthetic`` (GalSim models, the embedded default) draws galaxies in the catalogue stage;
the real-galaxy sources (``cosmos``, ``candels-npy``, ``fits-stamps``) read stamps from files,
which :func:`load_real_stamps` dispatches to. ``instrument`` holds what custom sources
(``fits-stamps``, ``candels-npy``) declare about their stamps and how they reach the release grid.
"""

from __future__ import annotations

from challenge.contract.release import ReleaseSpec
from challenge.pipeline.sources.real import RealStamp


def load_real_stamps(spec: ReleaseSpec) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """Stamps of a real-galaxy source on the release grid and the (id, reason) of those rejected
    while loading (at most ``spec.max_galaxies`` input rows when set)."""
    if spec.source == "cosmos":
        from challenge.pipeline.sources.cosmos import load_cosmos

        return load_cosmos(spec, spec.source_path or None, spec.max_galaxies)
    if spec.source == "candels-npy":
        from challenge.pipeline.sources.real import load_candels_npy

        return load_candels_npy(spec.source_path, spec)
    if spec.source == "fits-stamps":
        from challenge.pipeline.sources.instrument import check_instrument
        from challenge.pipeline.sources.real import load_fits_stamps

        check_instrument(spec)
        return load_fits_stamps(spec.source_path, spec)
    raise ValueError(f"{spec.source!r} is not a real-galaxy source")


__all__ = ["RealStamp", "load_real_stamps"]
