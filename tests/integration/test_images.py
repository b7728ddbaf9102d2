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
