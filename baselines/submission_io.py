"""Kept while callers move to challenge.submission_folder."""

from challenge.submission_folder import SubmissionMetadata, write_submission  # noqa: F401
