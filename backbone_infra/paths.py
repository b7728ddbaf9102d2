"""Where a project's state and caches live: never inside the installed package.

``BACKBONE_HOME`` names the project directory; without it, the nearest
directory at or above the current one that holds ``Pulumi.yaml`` (a checkout of
this repository), else the current directory. Stacks go to ``HOME/.stacks``
(``HARNESS_STACKS_DIR`` overrides), caches to ``HOME/.cache``
(``HARNESS_CACHE_DIR`` overrides), status pages to ``HOME/docs/status``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "cache_dir", "project_home", "status_dir"]

#: Environment variable naming the project directory.
HOME_ENV = "BACKBONE_HOME"
#: A file that marks a checkout of this repository.
_MARKER = "Pulumi.yaml"


def project_home() -> Path:
    """``$BACKBONE_HOME``, else the checkout around the current directory, else it."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / _MARKER).is_file():
            return candidate
    return here


def cache_dir() -> Path:
    """``$HARNESS_CACHE_DIR``, else ``<project>/.cache``."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    return Path(env).resolve() if env else project_home() / ".cache"


def status_dir() -> Path:
    """``<project>/docs/status``: where the measured status pages are committed."""
    return project_home() / "docs" / "status"
