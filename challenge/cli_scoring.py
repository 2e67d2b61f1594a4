from challenge.cli_app import app  # noqa: F401
