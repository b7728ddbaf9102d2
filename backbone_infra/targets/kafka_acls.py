"""Granting the application principal its Kafka ACLs, as the admin user.

Every target that provisions topics with kafka-python (the local processes,
the podman containers) calls :func:`grant_stack_acls` right after
creating the topics; the Pulumi targets run the same rules through
``kafka-acls.sh`` (:func:`infra.render.kafka_acls.acl_cli_args`). The rules
themselves are rendered once, in :mod:`backbone_infra.render.kafka_acls`.
"""

from __future__ import annotations

import time
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from backbone_infra.render.kafka_acls import kafka_python_acls, stack_acls
from backbone_infra.spec import KafkaSpec

__all__ = ["grant_stack_acls", "wait_until_authorized"]

#: How long brokers may take to apply new ACLs from the metadata log (seconds).
ACL_APPLY_TIMEOUT_S = 30.0


def grant_stack_acls(admin: KafkaAdminClient, spec: KafkaSpec) -> int:
    """Create the application's ACLs (idempotent: an existing ACL is kept);
    returns how many were requested. ``admin`` must be logged in as the super
    user. Raises the broker's error if any ACL was refused."""
    acls = kafka_python_acls(stack_acls(spec))
    result = admin.create_acls(acls)
    failed = result.get("failed", [])
    if failed:
        acl, error = failed[0]
        raise kafka_errors.KafkaError(
            f"the broker refused {len(failed)} ACL(s), first {acl}: {error!r}; "
            "check that the provisioning user is in super.users"
        )
    return len(acls)


def wait_until_authorized(
    client_config: dict[str, Any], spec: KafkaSpec, *, timeout_s: float = ACL_APPLY_TIMEOUT_S
) -> None:
    """Wait until every partition leader authorizes ``client_config``'s principal
    (one that may ``DESCRIBE`` every spec topic, the application's).

    ``CreateAcls`` returns once the controller committed the records; each
    broker applies them when it replays the metadata log, a moment later (seen:
    a 3-broker stack refused the application a ``ListOffsets`` right after
    ``harness up``). ``ListOffsets`` goes to each partition's leader, so when it
    succeeds for every partition, every leader has the ACLs (one batch).
    """
    deadline = time.monotonic() + timeout_s
    consumer = KafkaConsumer(**client_config, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t.name, p) for t in spec.topics for p in range(t.partitions)]
        while True:
            try:
                consumer.end_offsets(partitions)
                return
            except kafka_errors.TopicAuthorizationFailedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
