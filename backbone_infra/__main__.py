"""Pulumi entry point (``main: backbone_infra/`` in ``Pulumi.yaml``): read config once, run.

Everything else lives in :mod:`backbone_infra.program`, which the unit tests call
directly under Pulumi's mocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Pulumi runs this directory as a script; make the repository importable even
# when the project is not installed into the virtualenv.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from backbone_infra.config import read_config  # noqa: E402
from backbone_infra.program import run  # noqa: E402

run(read_config())
