"""blendbench: an open benchmark for the photometry of blended galaxy pairs.

After Boucaud et al. 2019, MNRAS 491, 2481, "Photometry of high-redshift blended galaxies using
deep learning". The package follows the data flow of the benchmark, one module per stage:

``sources`` (isolated galaxy stamps) -> ``catalogue`` (truth by sep) -> ``split`` (galaxy-disjoint)
-> ``pairs`` (who blends with whom, and the shift) -> ``blending`` (blend images and masks)
-> ``release_files`` (the frozen release on disk) -> ``submission`` -> ``metrics`` -> ``scoring``
-> ``leaderboard``.
"""

__version__ = "0.1.0"
