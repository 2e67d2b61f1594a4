"""``python -m challenge.cli``: the ``blendbench`` command."""

from challenge.cli import app

app(prog_name="blendbench")
