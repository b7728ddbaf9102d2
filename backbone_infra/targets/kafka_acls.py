"""Granting the application principal its Kafka ACLs, as the admin user.

Every target that provisions topics with kafka-python (the local processes,
the podman containers) calls :func:`grant_stack_acls` right after
creating the topics; the Pulumi targets run the same rules through
``kafka-acls.sh`` (:func:`infra.render.kafka_acls.acl_cli_args`). The rules
themselves are rendered once, in :mod:`backbone_infra.render.kafka_acls`.
"""

from __future__ import annotations

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from backbone_infra.render.kafka_acls import kafka_python_acls, stack_acls
from backbone_infra.spec import KafkaSpec

__all__ = ["grant_stack_acls"]


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
