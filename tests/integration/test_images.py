"""The project's images are content-addressed and reused: a second build builds nothing.

Needs podman and the base image (``make setup`` builds both); skips with
podman's own reason where no engine can run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbone_harness.cli import app
from backbone_harness.containers import images
from backbone_harness.containers.engine import no_engine_reason, podman

_REASON = no_engine_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


def test_a_second_build_reuses_every_image() -> None:
    result = CliRunner().invoke(app, ["images", "build", "redis", "postgres"])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, ["images", "build", "redis", "postgres"])
    assert again.exit_code == 0, again.output
    assert "3 images ready, 0 built" in again.output
    for name in ("redis", "postgres"):
        ref = images.image_ref(name)
        assert podman("image", "exists", ref, check=False).returncode == 0, ref


def test_the_tag_follows_the_containerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images.build_base(lambda _msg: None)
    before = images.image_ref("redis")
    kafka = images.image_ref("kafka")
    copy = tmp_path / "images"
    shutil.copytree(images.IMAGES_DIR, copy)
    monkeypatch.setattr(images, "IMAGES_DIR", copy)
    assert images.image_ref("redis") == before  # same content, same tag
    containerfile = copy / "redis" / "Containerfile"
    containerfile.write_text(containerfile.read_text() + "LABEL changed=yes\n")
    assert images.image_ref("redis") != before
    assert images.image_ref("kafka") == kafka  # other images keep their tags


def test_an_unknown_image_is_refused_with_the_known_names() -> None:
    result = CliRunner().invoke(app, ["images", "build", "mongodb"])
    assert result.exit_code == 2
    assert "no image named 'mongodb'" in result.output and "redis" in result.output


def test_the_kafka_init_step_copies_the_pinned_jmx_agent_out_of_the_image(tmp_path: Path) -> None:
    """What the Docker and Kubernetes brokers' init step runs, in the project's Kafka
    image: the agent lands on the volume, checked against the pinned SHA-256, with
    no network (``--network none``: nothing is downloaded at pod start)."""
    from backbone_infra.components.kafka_cluster import JMX_JAR, VOLUME, _agent_script

    CliRunner().invoke(app, ["images", "build", "kafka"])
    volume = tmp_path / "volume"
    volume.mkdir()
    podman(
        "run", "--rm", "--network", "none", "--user", "root",
        "-v", f"{volume}:{VOLUME}", images.image_ref("kafka"),
        "sh", "-c", _agent_script(),
    )  # fmt: skip
    agent = volume / "jmx" / JMX_JAR
    assert agent.stat().st_size > 100_000
    assert agent.read_bytes()[:2] == b"PK"  # a jar


def test_an_image_without_the_pinned_agent_fails_the_init_step_loudly(tmp_path: Path) -> None:
    from backbone_infra.components.kafka_cluster import VOLUME, _agent_script

    done = podman(
        "run", "--rm", "--network", "none", "--user", "root",
        "-v", f"{tmp_path}:{VOLUME}", images.image_ref("redis"),
        "sh", "-c", _agent_script(),
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "the image holds no pinned jmx_prometheus_javaagent" in done.stderr


def test_the_etcd_image_runs_the_pinned_etcd_without_a_network() -> None:
    """Patroni's store on the Pulumi ha stacks: Debian's etcd-server at the host's
    version, runnable as the image's own user with no network."""
    result = CliRunner().invoke(app, ["images", "build", "etcd"])
    assert result.exit_code == 0, result.output
    pinned = images.IMAGES["etcd"].build_args()["ETCD_VERSION"]
    done = podman("run", "--rm", "--network", "none", images.image_ref("etcd"), "etcd", "--version")
    assert f"etcd Version: {pinned.split('-')[0]}" in done.stdout
    whoami = podman("run", "--rm", "--network", "none", images.image_ref("etcd"), "id", "-u")
    assert whoami.stdout.strip() == "2379"


def test_the_patroni_image_runs_the_pinned_patroni_and_follows_the_postgres_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose ha nodes' image: Patroni at constraints.txt's pin (quorum mode
    needs 4.0 or newer) beside the postgres image's PostgreSQL, with no network;
    built FROM the postgres image, so its tag changes when that image's does."""
    result = CliRunner().invoke(app, ["images", "build", "patroni"])
    assert result.exit_code == 0, result.output
    ref = images.image_ref("patroni")
    done = podman(
        "run", "--rm", "--network", "none", ref,
        "sh", "-c", "patroni --version && pg_rewind --version",
    )  # fmt: skip
    assert f"patroni {images.patroni_version()}" in done.stdout
    assert "pg_rewind (PostgreSQL) 15." in done.stdout
    copy = tmp_path / "images"
    shutil.copytree(images.IMAGES_DIR, copy)
    monkeypatch.setattr(images, "IMAGES_DIR", copy)
    assert images.image_ref("patroni") == ref  # same content, same tag
    containerfile = copy / "postgres" / "Containerfile"
    containerfile.write_text(containerfile.read_text() + "LABEL changed=yes\n")
    assert images.image_ref("patroni") != ref
