"""Scoring: per-galaxy ``metrics`` (pure array functions), ``scores`` (a submission against a
release's truth: overall, binned, bootstrap intervals, paired comparison) and the ``evaluator``
(the same numbers from arrays in memory). Imports ``challenge.contract`` (and the photometry
conventions of ``challenge.pipeline.photometry``).
"""
