"""The Patroni renderer: one ``patroni.yml`` per node from the spec, and its timing rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backbone_infra.render.certificates import TLSFiles
from backbone_infra.render.patroni import (
    PatroniMember,
    etcd_args,
    initdb_options,
    patroni_config,
    patroni_yaml,
    postgres_parameters,
)
from backbone_infra.render.postgres import INITDB_ARGS, SUPERUSER, pg_hba_conf
from backbone_infra.spec import PatroniSpec, PostgresSpec, build_spec

_MEMBER = PatroniMember(
    name="postgres-2",
    listen="127.0.0.1:5433",
    connect_address="127.0.0.1:5433",
    rest_listen="127.0.0.1:8009",
    rest_connect_address="127.0.0.1:8009",
    data_dir="/data/postgres-2",
    bin_dir="/usr/lib/postgresql/15/bin",
    pgpass="/data/postgres-2.pgpass",
)


def _render(spec: PostgresSpec) -> dict[str, Any]:
    return patroni_config(
        spec,
        _MEMBER,
        etcd_hosts=["127.0.0.1:2379"],
        network="127.0.0.1/32",
        superuser_password="su-secret",
        replication_password="repl-secret",
        timescaledb=False,
    )


def test_the_ha_spec_renders_quorum_commit_on_any_one_standby_with_rewind() -> None:
    spec = build_spec("t", size="ha").postgres
    config = yaml.safe_load(patroni_yaml(_render(spec)))
    dcs = config["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] == "quorum" and dcs["synchronous_node_count"] == 1
    assert dcs["postgresql"]["use_pg_rewind"] is True
    # A crashed server fails over at once rather than being restarted in place
    # (quorum mode makes that safe): the postgres-primary-kill drill's target.
    assert dcs["primary_start_timeout"] == 0
    # pg_rewind needs hint bits in the WAL (no data checksums here).
    assert dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert config["name"] == "postgres-2" and config["scope"] == spec.patroni.scope  # type: ignore[union-attr]
    assert config["etcd3"]["hosts"] == ["127.0.0.1:2379"]
    assert config["postgresql"]["listen"] == "127.0.0.1:5433"
    assert config["restapi"]["connect_address"] == "127.0.0.1:8009"


def test_server_settings_are_the_plain_renderers_minus_what_patroni_owns() -> None:
    spec = build_spec("t", size="ha").postgres
    params = postgres_parameters(spec, timescaledb=True)
    # The same settings as a plain node: one rendering, not two.
    assert params["wal_level"] == "replica" and params["synchronous_commit"] == "on"
    assert params["shared_preload_libraries"] == "timescaledb"
    assert params["unix_socket_directories"] == ""
    # Patroni sets these itself: listen from `listen`, the standby list from the quorum.
    for owned in ("listen_addresses", "port", "synchronous_standby_names"):
        assert owned not in params
    assert "shared_preload_libraries" not in postgres_parameters(spec, timescaledb=False)


def test_access_rules_and_credentials_come_from_the_postgres_renderer() -> None:
    spec = build_spec("t", size="ha").postgres
    pg = _render(spec)["postgresql"]
    assert pg["pg_hba"] == pg_hba_conf(spec, network="127.0.0.1/32", tls=False).splitlines()
    auth = pg["authentication"]
    assert auth["superuser"] == {"username": SUPERUSER, "password": "su-secret"}
    assert auth["replication"] == {"username": spec.replication_user, "password": "repl-secret"}


def test_with_tls_the_node_serves_it_admits_only_it_and_patroni_verifies_it() -> None:
    spec = build_spec("t", size="ha").postgres
    files = TLSFiles(ca="/t/ca.crt", cert="/t/pg.crt", key="/t/pg.key", keystore="/t/ks.pem")
    client = {"sslmode": "verify-full", "sslrootcert": "/t/ca.crt", "sslcert": "/t/none"}
    config = patroni_config(
        spec,
        _MEMBER,
        etcd_hosts=["127.0.0.1:2379"],
        network="127.0.0.1/32",
        superuser_password="su-secret",
        replication_password="repl-secret",
        timescaledb=False,
        tls=files,
        client_ssl=client,
    )
    params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert params["ssl"] == "on" and params["ssl_key_file"] == "/t/pg.key"
    pg = config["postgresql"]
    assert pg["pg_hba"] == pg_hba_conf(spec, network="127.0.0.1/32", tls=True).splitlines()
    assert all(rule.split()[0] == "hostssl" for rule in pg["pg_hba"])
    for role in ("superuser", "replication"):
        assert client.items() <= pg["authentication"][role].items()


def test_initdb_options_are_the_plain_ones_without_what_patroni_passes() -> None:
    options = initdb_options()
    assert {"auth": "scram-sha-256"} in options and "no-sync" in options
    assert not any(isinstance(o, dict) and "username" in o for o in options)
    # Every other option survives the translation.
    assert len(options) == len([a for a in INITDB_ARGS if not a.startswith("--username")])


def test_a_spec_without_patroni_or_etcd_refuses_to_render() -> None:
    with pytest.raises(ValueError, match="runs no Patroni"):
        _render(build_spec("t").postgres)
    with pytest.raises(ValueError, match="etcd host"):
        patroni_config(
            build_spec("t", size="ha").postgres,
            _MEMBER,
            etcd_hosts=[],
            network="127.0.0.1/32",
            superuser_password="a",
            replication_password="b",
            timescaledb=False,
        )


@given(
    ttl=st.integers(min_value=20, max_value=120),
    loop_wait=st.integers(min_value=1, max_value=60),
    retry=st.integers(min_value=3, max_value=60),
)
def test_timings_are_accepted_exactly_when_patroni_would_keep_them(
    ttl: int, loop_wait: int, retry: int
) -> None:
    """Patroni silently shortens loop_wait/retry_timeout that break its rule;
    the spec refuses them instead, and renders what it accepts unchanged."""
    fits = loop_wait + 2 * retry <= ttl
    if not fits:
        with pytest.raises(ValidationError, match="loop_wait"):
            PatroniSpec(ttl_s=ttl, loop_wait_s=loop_wait, retry_timeout_s=retry)
        return
    spec = PostgresSpec(
        standbys=2, patroni=PatroniSpec(ttl_s=ttl, loop_wait_s=loop_wait, retry_timeout_s=retry)
    )
    dcs = _render(spec)["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (ttl, loop_wait, retry)
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]


def test_patronis_own_minimums_are_refused_not_adjusted() -> None:
    with pytest.raises(ValidationError):
        PatroniSpec(ttl_s=10, loop_wait_s=1, retry_timeout_s=3)  # Patroni: ttl >= 20
    with pytest.raises(ValidationError):
        PatroniSpec(retry_timeout_s=2)  # Patroni: retry_timeout >= 3
    with pytest.raises(ValidationError, match="synchronous_node_count"):
        PostgresSpec(standbys=1, patroni=PatroniSpec(synchronous_node_count=2))


def test_the_default_timings_fit_the_rule() -> None:
    p = PatroniSpec()
    assert p.loop_wait_s + 2 * p.retry_timeout_s <= p.ttl_s


def test_etcd_is_one_member_cluster_on_the_given_urls() -> None:
    args = etcd_args(
        "etcd-1", data_dir="/d", client_url="http://127.0.0.1:1", peer_url="http://127.0.0.1:2"
    )
    assert "--listen-client-urls=http://127.0.0.1:1" in args
    assert "--advertise-client-urls=http://127.0.0.1:1" in args
    assert "--initial-cluster=etcd-1=http://127.0.0.1:2" in args
    assert "--data-dir=/d" in args


def test_etcd_reached_by_name_listens_on_every_interface_and_advertises_the_name() -> None:
    """etcd binds IP addresses only: a container member listens on 0.0.0.0 and
    advertises the name its peers and Patroni dial."""
    args = etcd_args(
        "etcd-1",
        data_dir="/d",
        client_url="http://etcd-1:2379",
        peer_url="http://etcd-1:2380",
        listen_client_url="http://0.0.0.0:2379",
        listen_peer_url="http://0.0.0.0:2380",
    )
    assert "--listen-client-urls=http://0.0.0.0:2379" in args
    assert "--advertise-client-urls=http://etcd-1:2379" in args
    assert "--listen-peer-urls=http://0.0.0.0:2380" in args
    assert "--initial-advertise-peer-urls=http://etcd-1:2380" in args
    assert "--initial-cluster=etcd-1=http://etcd-1:2380" in args


def test_post_bootstrap_is_rendered_only_when_given() -> None:
    spec = build_spec("t", size="ha").postgres
    assert "post_bootstrap" not in _render(spec)["bootstrap"]
    config = patroni_config(
        spec,
        _MEMBER,
        etcd_hosts=["127.0.0.1:2379"],
        network="127.0.0.1/32",
        superuser_password="su-secret",
        replication_password="repl-secret",
        timescaledb=False,
        post_bootstrap="sh /opt/post-bootstrap.sh",
    )
    assert config["bootstrap"]["post_bootstrap"] == "sh /opt/post-bootstrap.sh"
    # The rest of the file is what the local target renders.
    del config["bootstrap"]["post_bootstrap"]
    assert config == _render(spec)
