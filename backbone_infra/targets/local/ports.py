"""Free loopback ports for a local stack.

A port is chosen by binding ``127.0.0.1:0`` and closing; another process can
still take it before the service binds, so renderers treat "address already in
use" at start as retryable and ask for a fresh port (see ``is_port_conflict``).
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "PortAllocator", "is_port_conflict"]

LOOPBACK = "127.0.0.1"

_CONFLICT_MARKERS = (
    "address already in use",
    "addrinuse",
    "could not bind",
    "bindexception",
)


def is_port_conflict(log_text: str) -> bool:
    """Whether a service's log says it lost a port race."""
    low = log_text.lower()
    return any(marker in low for marker in _CONFLICT_MARKERS)


class PortAllocator:
    """Hands out distinct free loopback ports; never the same one twice."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def allocate(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in self._given:
                self._given.add(port)
                return port
        raise RuntimeError("no free loopback port after 100 tries")
