"""Reports built on the scores: the leaderboard, figures, the paper's CANDELS track and the
robustness tables of the shift tracks. Imports ``challenge.scoring``, ``challenge.contract`` and
the photometry conventions of ``challenge.pipeline.photometry``.
"""
