"""Small file-system helpers every local renderer shares.

Config files of a local stack often carry credentials (ACL passwords, JAAS
sections, exporter DSNs), so they are written readable by their owner only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from backbone_infra.errors import MissingBinaryError

__all__ = ["find_binary", "write_private"]


def find_binary(name: str) -> str:
    """The path of a program the local environment runs, on ``PATH`` or in
    ``/usr/bin`` (where Debian's packages put them even if ``PATH`` is trimmed)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        raise MissingBinaryError(name, f"{name} on PATH and /usr/bin")
    return found


def write_private(
    path: Path, text: str, *, append: bool = False, owner: tuple[int, int] | None = None
) -> Path:
    """Write ``text`` to a file only its owner can read (mode 0600).

    ``owner`` (uid, gid) hands the file to the user a service runs as.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "a" if append else "w") as fh:
        fh.write(text)
    if owner is not None:
        os.chown(path, *owner)
    return path
