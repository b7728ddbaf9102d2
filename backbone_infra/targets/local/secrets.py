"""Generated credentials of one local stack.

Kept only in ``.stacks/NAME/secrets.json`` (mode 0600) and in the outputs
document (also 0600). Never on a command line, in a process environment that
is logged, or in a report.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backbone_infra.spec import KafkaSpec

__all__ = ["StackSecrets"]

SECRETS_FILE = "secrets.json"


def _token() -> str:
    # URL-safe and free of quotes/colons, so it fits every config syntax.
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class StackSecrets:
    redis_password: str = field(default_factory=_token)
    redis_admin_password: str = field(default_factory=_token)
    #: The read-only ``exporter`` ACL user of ``redis_exporter``.
    redis_exporter_password: str = field(default_factory=_token)
    kafka_password: str = field(default_factory=_token)
    kafka_admin_password: str = field(default_factory=_token)
    #: The lag exporter's ``backbone-monitor`` SCRAM user (DESCRIBE only).
    kafka_monitor_password: str = field(default_factory=_token)
    postgres_password: str = field(default_factory=_token)
    postgres_superuser_password: str = field(default_factory=_token)
    #: The read-only ``<user>_reader`` role.
    postgres_reader_password: str = field(default_factory=_token)
    #: ``postgres_exporter``'s ``<user>_monitor`` role (``pg_monitor``).
    postgres_monitor_password: str = field(default_factory=_token)
    replication_password: str = field(default_factory=_token)
    #: One principal per job (issue 11): the ingest writer's and the consumer
    #: group member's Kafka users, the consumer's and the reader's Redis users,
    #: the writer's and the consumer's PostgreSQL roles (the reader's role is
    #: ``postgres_reader_password``).
    kafka_writer_password: str = field(default_factory=_token)
    kafka_consumer_password: str = field(default_factory=_token)
    redis_consumer_password: str = field(default_factory=_token)
    redis_reader_password: str = field(default_factory=_token)
    postgres_writer_password: str = field(default_factory=_token)
    postgres_consumer_password: str = field(default_factory=_token)
    #: Sentinel's ``requirepass``: its own token, so that a job's document (which
    #: must carry it to discover the primary) holds no other principal's password.
    #: ``None`` (stacks created before 2026-12-02): the same as ``redis_password``,
    #: until a rotation of the Redis user pins the old value here, so the
    #: Sentinels, which cannot hold two passwords, are not touched.
    redis_sentinel_password: str | None = field(default_factory=_token)

    @property
    def sentinel_password(self) -> str:
        """The password every Sentinel requires (clients get it as ``sentinel_password``)."""
        return (
            self.redis_password
            if self.redis_sentinel_password is None
            else (self.redis_sentinel_password)
        )

    def kafka_job_users(self, spec: KafkaSpec) -> dict[str, str]:
        """The per-job Kafka users (writer, consumer) and their passwords, as the
        renderers take them (``extra_users``)."""
        return {
            spec.writer_username: self.kafka_writer_password,
            spec.consumer_username: self.kafka_consumer_password,
        }

    def generated(self) -> dict[str, str]:
        """Every password of the stack by field name (for scans and rotation)."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, str)}

    def __repr__(self) -> str:
        return "StackSecrets(<hidden>)"

    def save(self, stack_dir: Path) -> Path:
        """Write ``secrets.json`` (0600) atomically: a reader during a rotation
        sees the old file or the new one, never half of one."""
        path = stack_dir / SECRETS_FILE
        stack_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, stack_dir: Path) -> StackSecrets:
        stored = json.loads((stack_dir / SECRETS_FILE).read_text())
        loaded = cls(**stored)
        if set(asdict(loaded)) - set(stored):
            # A stack made before a field existed (the job principals): keep the
            # generated value, so every later load agrees. Its services know the
            # new users only once the stack is recreated (docs/security.md).
            loaded.save(stack_dir)
        return loaded

    @classmethod
    def load_or_create(cls, stack_dir: Path) -> StackSecrets:
        if (stack_dir / SECRETS_FILE).exists():
            return cls.load(stack_dir)
        created = cls()
        created.save(stack_dir)
        return created
