"""The Kafka ACLs of a stack: one principal per job, rendered once as plain data.

Brokers run KRaft's ``StandardAuthorizer`` (:data:`AUTHORIZER_PROPERTIES`, in
every ``server.properties`` :mod:`backbone_infra.render.kafka` renders) with
``allow.everyone.if.no.acl.found`` at its default ``false``: a principal may do
only what an ACL allows. The admin user is the only super user: brokers
(inter-broker and controller listeners) and provisioning log in as it, and it
alone creates topics.

The application principal (``spec.username``) gets, per spec topic (literal
names, so a new topic is not readable by accident): ``READ``, ``WRITE`` and
``DESCRIBE``; and ``READ`` on the stack's consumer groups. It gets no ``CREATE``,
``DELETE``, ``ALTER`` or ``ALTER_CONFIGS``, and nothing on the cluster
resource (an idempotent producer needs only ``WRITE`` on a topic since Kafka
2.8, KIP-679).

The jobs get their own principals (issue 11, least privilege):

``spec.writer_username`` (the ingest writer)
    ``WRITE`` on the bar topics and the dead-letter topic (the rejects an
    ingest produces: :data:`WRITER_PRODUCES`), ``DESCRIBE`` on every spec
    topic; no ``READ`` anywhere, no group. Not the health topic: health reports
    are the consumer's (``backbone consume`` and ``Backbone.health`` send them
    with the consumer's login), so an ingest process cannot forge them.
``spec.consumer_username`` (a consumer-group member)
    ``READ`` and ``DESCRIBE`` on the bar topics, ``READ`` on the stack's groups (join,
    commit, fetch offsets); ``WRITE`` and ``DESCRIBE`` only on the dead-letter
    and health topics (:data:`CONSUMER_PRODUCES`), which a consumer reports to
    (the runtime gives the consumer its own producer for them).

The runtime logs in as the jobs (``backbone.job_logins``), also when one
process ingests, consumes and reads (the demo, drills, benches and load runs).
The application principal (``spec.username``) stays for what no job may do:
reading the dead-letter topic (``backbone dead-letters``), clients configured
without an outputs document, and documents made before the jobs had logins.

Groups: every consumer group of a stack starts with ``spec.group_prefix``
(``backbone-``; the runtime's, and one per drill, test or load run), and the
group ACLs are ``PREFIXED`` on it: a stolen credential can join or reset the
offsets of the stack's groups only, not of another application's on the same
cluster. The clients check a group against the prefix before they join
(:meth:`backbone.connections.KafkaConnection.check_group`), so a misnamed group
is an error that names the rule rather than an authorization failure at the
first poll.

:func:`kafka_python_acls` turns the rules into kafka-python ``ACL`` objects for
``KafkaAdminClient.create_acls``; both functions are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from backbone_infra.spec import KafkaSpec

__all__ = [
    "APP_GROUP_OPERATIONS",
    "APP_TOPIC_OPERATIONS",
    "AUTHORIZER_CLASS",
    "CONSUMER_PRODUCES",
    "WRITER_PRODUCES",
    "AclRule",
    "acl_cli_args",
    "application_acls",
    "authorizer_properties",
    "consumer_acls",
    "kafka_python_acls",
    "monitor_acls",
    "stack_acls",
    "writer_acls",
]

#: KRaft's authorizer: ACLs live in the metadata log, every node enforces them.
AUTHORIZER_CLASS = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"

Operation = Literal["READ", "WRITE", "DESCRIBE"]
#: What the application may do on each of its topics (produce, consume, metadata).
APP_TOPIC_OPERATIONS: tuple[Operation, ...] = ("READ", "WRITE", "DESCRIBE")
#: What it may do on consumer groups: join, commit and fetch offsets.
APP_GROUP_OPERATIONS: tuple[Operation, ...] = ("READ",)
#: What the lag exporter's principal may do on topics and groups: offsets and
#: metadata (ListOffsets, OffsetFetch, DescribeGroups), never a record.
MONITOR_OPERATIONS: tuple[Operation, ...] = ("DESCRIBE",)
#: The logical topics a consumer produces to: rejects and its health reports.
CONSUMER_PRODUCES: frozenset[str] = frozenset({"dead_letter", "ingest_health"})
#: The logical topics the ingest writer produces to: bars and the rejects of an ingest.
WRITER_PRODUCES: frozenset[str] = frozenset({"daily_bars", "intraday_bars", "dead_letter"})


@dataclass(frozen=True)
class AclRule:
    """One ALLOW rule: ``principal`` may ``operation`` on ``resource`` ``name``
    (``pattern``: the name exactly, or every name that starts with it)."""

    principal: str
    resource: Literal["TOPIC", "GROUP"]
    name: str
    operation: Operation
    host: str = "*"
    pattern: Literal["LITERAL", "PREFIXED"] = "LITERAL"


def _group_rules(spec: KafkaSpec, principal: str, ops: tuple[Operation, ...]) -> list[AclRule]:
    """``ops`` on the stack's consumer groups: those starting with ``spec.group_prefix``."""
    return [AclRule(principal, "GROUP", spec.group_prefix, op, pattern="PREFIXED") for op in ops]


def authorizer_properties(spec: KafkaSpec) -> list[str]:
    """The ``server.properties`` lines that turn authorization on."""
    return [
        f"authorizer.class.name={AUTHORIZER_CLASS}",
        # Brokers and provisioning log in as the admin user; nobody else is super.
        f"super.users=User:{spec.admin_username}",
        "allow.everyone.if.no.acl.found=false",
    ]


def application_acls(spec: KafkaSpec) -> list[AclRule]:
    """Every ACL the application principal gets, nothing else."""
    principal = f"User:{spec.username}"
    rules = [
        AclRule(principal, "TOPIC", topic.name, op)
        for topic in spec.topics
        for op in APP_TOPIC_OPERATIONS
    ]
    return rules + _group_rules(spec, principal, APP_GROUP_OPERATIONS)


def writer_acls(spec: KafkaSpec) -> list[AclRule]:
    """The ingest writer's ACLs: produce bars and rejects (:data:`WRITER_PRODUCES`),
    describe every spec topic, read nothing.

    An idempotent producer (kafka-python's default) needs only ``WRITE`` on
    the topic since Kafka 2.8 (KIP-679): no ``IDEMPOTENT_WRITE`` on the cluster.
    """
    principal = f"User:{spec.writer_username}"
    rules: list[AclRule] = []
    for topic in spec.topics:
        ops: tuple[Operation, ...] = (
            ("WRITE", "DESCRIBE") if topic.logical in WRITER_PRODUCES else ("DESCRIBE",)
        )
        rules += [AclRule(principal, "TOPIC", topic.name, op) for op in ops]
    return rules


def consumer_acls(spec: KafkaSpec) -> list[AclRule]:
    """A consumer-group member's ACLs: read the bar topics and commit its
    group's offsets; produce only to :data:`CONSUMER_PRODUCES`."""
    principal = f"User:{spec.consumer_username}"
    rules: list[AclRule] = []
    for topic in spec.topics:
        ops: tuple[Operation, ...] = (
            ("WRITE", "DESCRIBE") if topic.logical in CONSUMER_PRODUCES else ("READ", "DESCRIBE")
        )
        rules += [AclRule(principal, "TOPIC", topic.name, op) for op in ops]
    return rules + _group_rules(spec, principal, ("READ",))


def monitor_acls(spec: KafkaSpec) -> list[AclRule]:
    """Every ACL the monitoring principal (``spec.monitor_username``) gets."""
    principal = f"User:{spec.monitor_username}"
    rules = [
        AclRule(principal, "TOPIC", topic.name, op)
        for topic in spec.topics
        for op in MONITOR_OPERATIONS
    ]
    return rules + _group_rules(spec, principal, MONITOR_OPERATIONS)


def stack_acls(spec: KafkaSpec) -> list[AclRule]:
    """Every ACL of a stack: the application's, each job's and the monitoring principal's."""
    return [
        *application_acls(spec),
        *writer_acls(spec),
        *consumer_acls(spec),
        *monitor_acls(spec),
    ]


def acl_cli_args(rule: AclRule) -> list[str]:
    """``kafka-acls.sh --add`` arguments for ``rule`` (adding an existing ACL is a
    no-op), for targets that provision with the distribution's scripts."""
    return [
        "--add",
        "--allow-principal",
        rule.principal,
        "--allow-host",
        rule.host,
        "--operation",
        rule.operation.capitalize(),
        f"--{rule.resource.lower()}",
        rule.name,
        "--resource-pattern-type",
        rule.pattern.lower(),
    ]


def kafka_python_acls(rules: list[AclRule]) -> list[ACL]:
    """The rules as kafka-python ``ACL`` objects (ALLOW, each rule's pattern type)."""
    return [
        ACL(
            principal=r.principal,
            host=r.host,
            operation=ACLOperation[r.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(
                ResourceType[r.resource], r.name, ACLResourcePatternType[r.pattern]
            ),
        )
        for r in rules
    ]
