"""Where a Docker engine exists, the spec's pinned official images serve the clients.

testcontainers is used only here, and only when `docker info` answers: the
machines that develop and test this project have the Docker client but no
engine, so this module is skipped there with the client's own reason. On a
laptop or CI runner with Docker it starts the spec's Redis image and drives
the backbone's Redis cache against it, exactly as the docker target would.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from backbone.bars import Bar
from backbone.cache.redis import RedisCache
from backbone.settings import RedisConnectionSettings
from infra.spec import build_spec


def _no_engine_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no Docker client on PATH, so no Docker engine to run containers"
    probe = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if probe.returncode != 0:
        why = (probe.stderr or probe.stdout).strip().splitlines()
        return f"no Docker engine answers `docker info` ({why[0] if why else 'no output'})"
    return None


_REASON = _no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


def test_the_pinned_redis_image_serves_the_backbone_cache() -> None:
    from testcontainers.redis import RedisContainer  # only where an engine exists

    image = build_spec("docker-probe").images.redis
    assert not image.endswith(":latest") and ":" in image
    password = secrets.token_urlsafe(16)
    with RedisContainer(image, password=password) as container:
        settings = RedisConnectionSettings(
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(6379)),
            username="default",
            password=password,
        )
        bar = Bar("EURUSD", "1d", datetime(2024, 1, 2, tzinfo=UTC), 1.1, 1.2, 1.0, 1.15, 10)
        cache = RedisCache(settings, namespace=f"probe-{secrets.token_hex(3)}")
        try:
            assert cache.get_latest("EURUSD", "1d", lambda: bar) == bar  # miss, filled
            assert cache.get_latest("EURUSD", "1d", lambda: None) == bar  # hit
            stats = cache.stats()
            assert (stats.hits, stats.misses) == (1, 1)
        finally:
            cache.close()
