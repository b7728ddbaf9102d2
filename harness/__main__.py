"""``python -m harness`` is the ``harness`` command."""

from __future__ import annotations

from harness.cli import app

app(prog_name="harness")
