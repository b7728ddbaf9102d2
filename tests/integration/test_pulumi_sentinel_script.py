"""The Pulumi targets' Sentinel start script, run with a real ``redis-sentinel``.

Sentinel rewrites its ``sentinel.conf`` on its volume; the script copies the
mounted file only once, so without care a Sentinel that restarts after
``redisSentinelPassword`` changed (a rotation, or the first ``pulumi up``
that gives the Sentinels their own password) would keep requiring the old
one while the document names the new. The script keeps what Sentinel learned
and takes the passwords from the mounted file; here it runs as the container
would (``sh``, ``HOSTNAME=redis-sentinel-1``), with the container's paths
pointed at temporary directories and no TLS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from backbone.connections import HostPort
from backbone_infra.components.redis_deployment import _sentinel_script
from backbone_infra.render.redis import sentinel_conf
from backbone_infra.spec import build_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-sentinel") is None, reason="needs redis-sentinel"),
]

#: How long a Sentinel may take to answer after it starts (a ceiling, not a measurement).
READY_S = 20.0
SPEC = build_spec("pprincipals-sentinel", size="ha").redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, password: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


@contextmanager
def _sentinel(script: Path, port: int, password: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "HOSTNAME": "redis-sentinel-1"}
    proc = subprocess.Popen(["sh", str(script)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            assert proc.poll() is None, f"the Sentinel exited with {proc.returncode}"
            try:
                if _answers(port, password):
                    break
            except (redis.ConnectionError, redis.AuthenticationError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_restarted_sentinel_takes_the_new_password_and_keeps_its_state(
    tmp_path: Path,
) -> None:
    data, secrets = tmp_path / "data", tmp_path / "secrets"
    data.mkdir()
    secrets.mkdir()
    port = _free_port()
    script = tmp_path / "sentinel.sh"
    script.write_text(_sentinel_script(data_dir=str(data), secret_dir=str(secrets)))

    def mount(password: str) -> None:
        text = sentinel_conf(
            SPEC,
            bind="127.0.0.1",
            port=port,
            announce_host="127.0.0.1",
            data_dir=str(data),
            # Nothing listens there: the Sentinel serves its clients anyway.
            primary=HostPort(host="127.0.0.1", port=_free_port()),
            password=password,
            admin_password="admin-password-of-the-stack",
        )
        (secrets / "sentinel-1.conf").write_text(text)

    old, new = "old-sentinel-password-0123456789", "new-sentinel-password-9876543210"
    mount(old)
    with _sentinel(script, port, old):
        pass
    conf = data / "sentinel.conf"
    learned = [ln for ln in conf.read_text().splitlines() if ln.startswith("sentinel myid ")]
    assert learned, "Sentinel did not rewrite its configuration"

    mount(new)
    with _sentinel(script, port, new), pytest.raises(redis.AuthenticationError):
        _answers(port, old)
    text = conf.read_text()
    assert old not in text
    assert learned[0] in text.splitlines(), "the restart lost what Sentinel had written"
    assert text.count("requirepass ") == 1 and text.count("sentinel sentinel-pass ") == 1
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
