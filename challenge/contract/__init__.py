"""The contract: what a release is and what a submission must be, and the kit's errors.

``errors`` (the exception hierarchy), ``release`` (the typed release spec, the presets, the
``release.toml`` record and the release folder's file layout), ``submission`` (the submission
format and its validation), ``submission_folder`` (writing one) and ``ids`` (finding blends and
galaxies by id). Read by every other part; imports nothing else of the kit.
"""
