"""Peer deblenders: established community tools run through the method protocol.

Two optional reference methods sit beside the sep baseline so that the leaderboard compares the
CNNs with more than SExtractor:

- ``photutils`` (:mod:`baselines.photutils_method`): multi-threshold + watershed deblending of a
  segmentation image and Kron photometry, configured as the photutils documentation recommends;
- ``scarlet2`` (:mod:`baselines.scarlet_method`): a two-source forward model (Sérsic profiles
  convolved with the release PSF) fitted by gradient descent, as in scarlet.

Both need the ``peers`` extra (``pip install -e '.[peers]'``); this module holds what they share:
the error raised when a dependency is missing and the lazy import that raises it.
"""

from __future__ import annotations

from types import ModuleType

from challenge.contract.errors import MissingExtraError, import_extra, install_hint

PEERS_INSTALL = install_hint("peers")


class PeerDependencyError(MissingExtraError):
    """A peer deblender's optional dependency (photutils, scarlet2, jax, ...) is not installed."""


def import_peer(module: str, method: str) -> ModuleType:
    """Import ``module`` for the peer method ``method``, or raise :class:`PeerDependencyError`.

    Args:
        module: dotted module name, e.g. ``"photutils.segmentation"``.
        method: the method that needs it, for the message (``"photutils"`` or ``"scarlet2"``).
    """
    try:
        return import_extra(module, "peers", f"the {method} baseline")
    except MissingExtraError as err:
        raise PeerDependencyError(str(err), err.extra) from None
