"""Toxiproxy, driven from Python: a TCP proxy the network drills put on a client path.

``scripts/setup.d/40-toxiproxy.sh`` builds the server once into the cache
(``~/.cache/backbone/toxiproxy``). :class:`Toxiproxy` starts it on a free
loopback port for one drill and stops it after (a context manager, like a
testcontainer); :meth:`Toxiproxy.proxy` opens a listener that forwards to an
upstream address, and :meth:`Toxiproxy.add_toxic` / :meth:`remove_toxic`
degrade that path (``timeout``: a partition; ``latency``: a slow link).
Its HTTP API takes a handful of JSON calls, so the standard library's
``urllib`` drives it: no client library (PyPI's ``toxiproxy-python`` is old).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TOXIPROXY_VERSION", "Proxy", "Toxiproxy", "ToxiproxyMissingError", "toxiproxy_binary"]

TOXIPROXY_VERSION = "v2.5.0"
LOOPBACK = "127.0.0.1"


class ToxiproxyMissingError(RuntimeError):
    """The Toxiproxy server is not built; the message says how to build it."""


def toxiproxy_binary() -> Path:
    """The server built by ``scripts/setup.d/40-toxiproxy.sh``."""
    cache = Path(os.environ.get("BACKBONE_CACHE", Path.home() / ".cache" / "backbone"))
    path = cache / "toxiproxy" / f"toxiproxy-server-{TOXIPROXY_VERSION}"
    if not path.is_file():
        raise ToxiproxyMissingError(
            f"Toxiproxy {TOXIPROXY_VERSION} is not built ({path} missing); run `make setup` "
            "(or `bash scripts/setup.d/40-toxiproxy.sh`, which needs the Go toolchain)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Proxy:
    """One proxied path: clients connect to ``listen``, Toxiproxy forwards to ``upstream``."""

    name: str
    host: str
    port: int
    upstream: str


class Toxiproxy:
    """A Toxiproxy server of one drill, on a free loopback port, with its log in ``log``."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Toxiproxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 15.0) -> None:
        binary = toxiproxy_binary()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [str(binary), "-host", LOOPBACK, "-port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Toxiproxy exited with {self._process.returncode} on start; see {self.log}"
                )
            try:
                self._call("GET", "/version")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Toxiproxy did not answer on {LOOPBACK}:{self.port}; see {self.log}")

    def stop(self) -> None:
        """Stop the server: every proxied connection closes with it."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"Toxiproxy refused {method} {path}: {exc.code} {exc.read()[:200]!r}"
            ) from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:  # /version answers plain text
            return raw.decode(errors="replace")

    def proxy(
        self, name: str, upstream_host: str, upstream_port: int, *, listen_port: int | None = None
    ) -> Proxy:
        """Open a loopback listener forwarding to ``upstream_host:upstream_port``, on
        ``listen_port`` (where clients were told to connect) or a free port."""
        upstream = f"{upstream_host}:{upstream_port}"
        port = listen_port or _free_port()
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": f"{LOOPBACK}:{port}", "upstream": upstream, "enabled": True},
        )
        return Proxy(name=name, host=LOOPBACK, port=port, upstream=upstream)

    def add_toxic(self, proxy: Proxy, name: str, kind: str, stream: str, **attributes: int) -> None:
        """Add a toxic (``timeout``, ``latency`` ...) on ``stream`` (``upstream`` or
        ``downstream``), for every connection of ``proxy``, open or new."""
        self._call(
            "POST",
            f"/proxies/{proxy.name}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": 1.0,
             "attributes": attributes},
        )  # fmt: skip

    def remove_toxic(self, proxy: Proxy, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy.name}/toxics/{name}")

    def toxics(self, proxy: Proxy) -> list[str]:
        return [t["name"] for t in self._call("GET", f"/proxies/{proxy.name}/toxics")]
