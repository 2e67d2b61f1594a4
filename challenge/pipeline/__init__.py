"""The release pipeline: from isolated galaxies to a frozen release folder, one module per stage.

``sources`` (isolated galaxy stamps) -> ``catalogue`` (truth by ``photometry``) -> ``split``
(galaxy-disjoint) -> ``pairs`` (who blends with whom, and the shift) -> ``blending`` (images and
masks) -> ``files`` (generate, verify, export the release on disk); ``tracks`` (shift tracks of a
frozen release) and ``montage`` (figures of a release). Imports only ``challenge.contract``.
"""
