"""Galaxy sources: where the isolated galaxy stamps of a release come from.

``synthetic`` (GalSim models, the embedded default) draws galaxies in the catalogue stage;
the real-galaxy sources (``cosmos``, ``candels-npy``, ``fits-stamps``) read stamps from files,
which :func:`load_real_stamps` dispatches to.
"""

from __future__ import annotations

from challenge.release import ReleaseSpec
from challenge.sources.real import RealStamp


def load_real_stamps(spec: ReleaseSpec) -> tuple[list[RealStamp], list[tuple[str, str]]]:
    """Stamps of a real-galaxy source and the (id, reason) of those rejected while loading."""
    if spec.source == "cosmos":
        from challenge.sources.cosmos import load_cosmos

        return load_cosmos(spec, spec.source_path or None, spec.max_galaxies)
    if spec.source == "candels-npy":
        from challenge.sources.real import load_candels_npy

        stamps = load_candels_npy(spec.source_path, spec.stamp_size, spec.zero_point)
    elif spec.source == "fits-stamps":
        from challenge.sources.real import load_fits_stamps

        stamps = load_fits_stamps(spec.source_path, spec.stamp_size, spec.zero_point)
    else:
        raise ValueError(f"{spec.source!r} is not a real-galaxy source")
    if spec.max_galaxies > 0:
        stamps = stamps[: spec.max_galaxies]
    return stamps, []


__all__ = ["RealStamp", "load_real_stamps"]
