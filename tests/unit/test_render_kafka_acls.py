"""The Kafka ACLs: the application principal gets its topics and groups, nothing else."""

from __future__ import annotations

from kafka.admin import ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourceType

from backbone_infra.render.kafka import (
    KafkaNodePorts,
    render_server_properties,
    storage_format_args,
)
from backbone_infra.render.kafka_acls import (
    AUTHORIZER_CLASS,
    CONSUMER_PRODUCES,
    WRITER_PRODUCES,
    acl_cli_args,
    application_acls,
    consumer_acls,
    kafka_python_acls,
    monitor_acls,
    stack_acls,
    writer_acls,
)
from backbone_infra.spec import build_spec


def test_the_application_gets_read_write_describe_on_spec_topics_and_read_on_its_groups() -> None:
    spec = build_spec("t", size="ha").kafka
    rules = application_acls(spec)
    assert {r.principal for r in rules} == {f"User:{spec.username}"}
    topics = {t.name for t in spec.topics}
    assert {(r.name, r.operation) for r in rules if r.resource == "TOPIC"} == {
        (t, op) for t in topics for op in ("READ", "WRITE", "DESCRIBE")
    }
    assert {(r.name, r.pattern, r.operation) for r in rules if r.resource == "GROUP"} == {
        (spec.group_prefix, "PREFIXED", "READ")
    }
    acls = kafka_python_acls(rules)
    assert all(a.permission_type is ACLPermissionType.ALLOW for a in acls)
    forbidden = {ACLOperation.DELETE, ACLOperation.ALTER, ACLOperation.ALTER_CONFIGS,
                 ACLOperation.CREATE, ACLOperation.ALL}  # fmt: skip
    assert not {a.operation for a in acls} & forbidden
    assert {a.resource_pattern.resource_type for a in acls} == {
        ResourceType.TOPIC,
        ResourceType.GROUP,
    }


def test_the_monitoring_principal_may_only_describe() -> None:
    spec = build_spec("t", size="ha").kafka
    rules = monitor_acls(spec)
    assert {r.principal for r in rules} == {f"User:{spec.monitor_username}"}
    assert {r.operation for r in rules} == {"DESCRIBE"}
    assert {(r.resource, r.name) for r in rules} == {
        *(("TOPIC", t.name) for t in spec.topics),
        ("GROUP", spec.group_prefix),
    }
    assert stack_acls(spec) == [
        *application_acls(spec),
        *writer_acls(spec),
        *consumer_acls(spec),
        *rules,
    ]


_FORBIDDEN = {ACLOperation.DELETE, ACLOperation.ALTER, ACLOperation.ALTER_CONFIGS,
              ACLOperation.CREATE, ACLOperation.ALL, ACLOperation.CLUSTER_ACTION}  # fmt: skip


def test_the_writer_produces_bars_and_rejects_and_reads_none() -> None:
    spec = build_spec("t", size="ha").kafka
    rules = writer_acls(spec)
    assert {r.principal for r in rules} == {f"User:{spec.writer_username}"}
    assert {(r.resource, r.name, r.operation) for r in rules} == {
        ("TOPIC", t.name, "DESCRIBE") for t in spec.topics
    } | {("TOPIC", t.name, "WRITE") for t in spec.topics if t.logical in WRITER_PRODUCES}
    # Health reports are the consumer's: an ingest process cannot write them.
    written = {r.name for r in rules if r.operation == "WRITE"}
    health = next(t.name for t in spec.topics if t.logical == "ingest_health")
    assert health not in written and len(written) == 3
    assert not {a.operation for a in kafka_python_acls(rules)} & (_FORBIDDEN | {ACLOperation.READ})


def test_the_consumer_reads_the_bar_topics_commits_groups_and_produces_only_reports() -> None:
    spec = build_spec("t", size="ha").kafka
    rules = consumer_acls(spec)
    assert {r.principal for r in rules} == {f"User:{spec.consumer_username}"}
    by_topic = {t.logical: t.name for t in spec.topics}
    written = {r.name for r in rules if r.operation == "WRITE"}
    assert written == {by_topic[logical] for logical in CONSUMER_PRODUCES}
    read = {r.name for r in rules if r.resource == "TOPIC" and r.operation == "READ"}
    assert read == {by_topic["daily_bars"], by_topic["intraday_bars"]}
    assert not read & written
    assert {(r.name, r.pattern, r.operation) for r in rules if r.resource == "GROUP"} == {
        (spec.group_prefix, "PREFIXED", "READ")
    }
    assert not {a.operation for a in kafka_python_acls(rules)} & _FORBIDDEN


def test_the_job_users_are_formatted_into_the_metadata_and_the_plain_table() -> None:
    spec = build_spec("t").kafka
    jobs = {spec.writer_username: "w", spec.consumer_username: "c2"}
    args = storage_format_args(spec, config="c", cluster_id="x", client_password="c",
                               admin_password="a", extra_users=jobs)  # fmt: skip
    for user, pw in jobs.items():
        assert f"{spec.sasl_mechanism}=[name={user},password={pw}]" in args
    plain = spec.model_copy(update={"sasl_mechanism": "PLAIN"})
    ports = {1: KafkaNodePorts(client=1, internal=2, controller=3, metrics=4)}
    text = render_server_properties(plain, node=1, ports=ports, data_dir="/d",
                                    client_password="c", admin_password="a",
                                    extra_users=jobs)  # fmt: skip
    assert f'user_{spec.writer_username}="w"' in text
    assert f'user_{spec.consumer_username}="c2"' in text


def test_the_monitoring_user_is_formatted_into_the_metadata_only_when_given() -> None:
    spec = build_spec("t").kafka
    base = storage_format_args(spec, config="c", cluster_id="x", client_password="c",
                               admin_password="a")  # fmt: skip
    with_monitor = storage_format_args(spec, config="c", cluster_id="x", client_password="c",
                                       admin_password="a", monitor_password="m")  # fmt: skip
    assert with_monitor[: len(base)] == base
    assert with_monitor[len(base):] == [
        "--add-scram", f"{spec.sasl_mechanism}=[name={spec.monitor_username},password=m]"
    ]  # fmt: skip


def test_every_node_runs_the_authorizer_with_only_admin_as_super_user() -> None:
    spec = build_spec("t").kafka
    ports = {1: KafkaNodePorts(client=1, internal=2, controller=3, metrics=4)}
    text = render_server_properties(
        spec, node=1, ports=ports, data_dir="/d", client_password="c", admin_password="a"
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert props["authorizer.class.name"] == AUTHORIZER_CLASS
    assert props["super.users"] == f"User:{spec.admin_username}"
    assert props["allow.everyone.if.no.acl.found"] == "false"


def test_the_cli_form_adds_one_allow_rule() -> None:
    rule = application_acls(build_spec("t").kafka)[0]
    args = acl_cli_args(rule)
    assert args[:3] == ["--add", "--allow-principal", rule.principal]
    assert args[-4:] == ["--topic", rule.name, "--resource-pattern-type", "literal"]
    assert "--operation" in args and args[args.index("--operation") + 1] == "Read"


def test_the_cli_form_grants_groups_by_the_stack_prefix() -> None:
    spec = build_spec("t").kafka
    (group_rule,) = [r for r in application_acls(spec) if r.resource == "GROUP"]
    assert acl_cli_args(group_rule)[-4:] == [
        "--group",
        spec.group_prefix,
        "--resource-pattern-type",
        "prefixed",
    ]
    (acl,) = kafka_python_acls([group_rule])
    assert acl.resource_pattern.pattern_type is ACLResourcePatternType.PREFIXED
