"""``python -m backbone_harness`` is the ``harness`` command."""

from __future__ import annotations

from backbone_harness.cli import app

app(prog_name="harness")
