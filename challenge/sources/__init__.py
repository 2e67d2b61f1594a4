"""Galaxy sources: where the isolated galaxy stamps of a release come from.

Each source yields isolated, centred galaxy stamps in counts on the release grid; the catalogue
stage measures their truth. ``synthetic`` (GalSim models, the embedded default) is built in.
"""

from challenge.sources.synthetic import GalaxyModel, draw_galaxy, release_psf, render_model

__all__ = ["GalaxyModel", "draw_galaxy", "render_model", "release_psf"]
