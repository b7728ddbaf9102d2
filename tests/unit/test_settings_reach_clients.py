"""Every connection field, from every source, reaches the client object built from it.

Each scenario sets *every* field of the three connection sections to a value
unlike its default, through one source at a time: arguments, the environment,
``config.yaml`` and the outputs document (which carries the document fields;
the client knobs then keep their defaults). The clients are then built the way
the runtime builds them, as real objects that have not connected yet: the
``redis.Redis`` (and ``Sentinel``) of :func:`backbone.cache.redis.redis_client`,
the psycopg pool of :func:`backbone.store.timescale.store_pool`, and the keyword
arguments :func:`backbone.stream.producer.kafka_client_config` hands to
``KafkaProducer``/``KafkaConsumer`` (a Kafka client needs a broker to be built:
``tests/integration/test_settings_live.py`` builds those against a real one).
What each client holds must equal what was set.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel
from redis.connection import SSLConnection

from backbone.cache.redis import redis_client
from backbone.connections import (
    TOPIC_NAMES,
    KafkaConnection,
    RedisConnection,
    TimescaleConnection,
    parse_document,
)
from backbone.settings import (
    BackboneSettings,
    KafkaConnectionSettings,
    RedisConnectionSettings,
    TimescaleConnectionSettings,
    load_settings,
)
from backbone.store.timescale import store_pool
from backbone.stream.producer import kafka_client_config

SOURCES = ("arguments", "environment", "config.yaml", "document")
TEST_CA_NAME = "backbone-test-ca"

#: Fields that are an input form rather than a client setting (checked on their own below).
INPUT_FORMS = {"redis": {"url"}}
#: Fields only a connected client shows; tests/integration/test_settings_live.py checks them.
LIVE_ONLY = {"timescale": {"timescaledb"}}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer config.yaml or BACKBONE_* variable leaks into these tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BACKBONE_") or name == "DATA_BACKBONE_MODE":
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A self-signed CA certificate, so a loaded CA file can be told from the defaults."""
    where = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={TEST_CA_NAME}", "-keyout", str(where / "ca.key"),
         "-out", str(where / "ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(where / "ca.pem")


def topics(prefix: str) -> dict[str, dict[str, Any]]:
    return {
        logical: {"name": f"{prefix}.{logical}", "partitions": 7, "replication_factor": 2}
        for logical in TOPIC_NAMES
    }


def scenario_tls(ca: str) -> dict[str, dict[str, Any]]:
    """Standalone Redis over TLS, Kafka SASL_SSL, two PostgreSQL hosts."""
    return {
        "redis": {
            "mode": "standalone", "host": "10.1.2.3", "port": 6390, "username": "cache-user",
            "password": "redis-pw-Zq81", "db": 5, "tls": True, "ssl_cafile": "/etc/ca/redis.pem",
            "ssl_verify": False, "socket_timeout": 1.5, "max_connections": 9,
        },
        "kafka": {
            "bootstrap_servers": ["10.0.0.5:9093", "10.0.0.6:9094"],
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
            "username": "kafka-user", "password": "kafka-pw-Lm22", "ssl_cafile": ca,
            "topics": topics("tls"), "ssl_verify": False, "request_timeout_seconds": 12.5,
            "group_prefix": "desk-a.",
        },
        "timescale": {
            "hosts": [{"host": "10.2.0.1", "port": 5433}, {"host": "10.2.0.2", "port": 5434}],
            "dbname": "marketdata", "user": "bars", "password": "pg-pw-Xk93",
            "sslmode": "verify-full", "timescaledb": True, "sslrootcert": "/etc/ca/pg-root.crt",
            "pool_min_size": 2, "pool_max_size": 11, "connect_timeout_seconds": 9,
        },
    }  # fmt: skip


def scenario_sentinel(ca: str) -> dict[str, dict[str, Any]]:
    """Redis behind Sentinels, Kafka SASL over plain TCP, one PostgreSQL host."""
    return {
        "redis": {
            "mode": "sentinel",
            "sentinels": [{"host": "10.3.0.1", "port": 26379}, {"host": "10.3.0.2", "port": 26380}],
            "master_name": "bars-primary", "username": "cache-user", "password": "redis-pw-Q1",
            "sentinel_password": "sentinel-pw-Q2", "db": 2, "tls": True, "ssl_cafile": ca,
            "ssl_verify": True, "socket_timeout": 0.7, "max_connections": 4,
        },
        "kafka": {
            "bootstrap_servers": ["10.0.1.5:19092"], "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512", "username": "k2", "password": "kafka-pw-Q3",
            "ssl_cafile": ca, "topics": topics("plain"), "ssl_verify": True,
            "request_timeout_seconds": 45.0, "group_prefix": "md_",
        },
        "timescale": {
            "hosts": [{"host": "db.internal", "port": 6543}], "dbname": "bars2", "user": "u2",
            "password": "pg-pw-Q4", "sslmode": "require", "timescaledb": False,
            "sslrootcert": "/srv/root.crt", "pool_min_size": 3, "pool_max_size": 3,
            "connect_timeout_seconds": 2,
        },
    }  # fmt: skip


SCENARIOS: dict[str, Callable[[str], dict[str, dict[str, Any]]]] = {
    "tls": scenario_tls,
    "sentinel": scenario_sentinel,
}
SECTIONS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "redis": (RedisConnection, RedisConnectionSettings),
    "kafka": (KafkaConnection, KafkaConnectionSettings),
    "timescale": (TimescaleConnection, TimescaleConnectionSettings),
}


def document_part(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` the outputs document carries for ``section``."""
    document_class = SECTIONS[section][0]
    return {k: v for k, v in values.items() if k in document_class.model_fields}


def env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def settings_from(
    source: str,
    sections: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> BackboneSettings:
    """Settings with ``sections`` given through ``source`` only."""
    if source == "arguments":
        return load_settings(**sections)
    if source == "environment":
        for section, values in sections.items():
            for field, value in values.items():
                monkeypatch.setenv(f"BACKBONE_{section}__{field}".upper(), env_text(value))
        return load_settings()
    if source == "config.yaml":
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(sections))
        return load_settings(config_file=path)
    assert source == "document"
    document = parse_document(
        {
            "schema": "backbone.connections/v1",
            "stack": "reach",
            "environment": "kubernetes",
            "tier": "institutional",
            **{name: document_part(name, values) for name, values in sections.items()},
        }
    )
    return load_settings(document)


def expected(source: str, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """What the client must hold: the values set, or, for the document, its fields
    and the knobs' defaults."""
    if source != "document":
        return values
    settings_class = SECTIONS[section][1]
    defaults = {
        name: info.get_default(call_default_factory=True)
        for name, info in settings_class.model_fields.items()
    }
    return {**defaults, **document_part(section, values)}


# --- what each client holds ---------------------------------------------------------------


def seen_by_redis(conn: RedisConnectionSettings) -> dict[str, Any]:
    """The settings as the redis-py objects hold them (nothing connects)."""
    client, sentinel = redis_client(conn)
    pool = client.connection_pool
    kw = pool.connection_kwargs
    seen: dict[str, Any] = {
        "username": kw.get("username"),
        "password": kw.get("password"),
        "db": kw.get("db"),
        "socket_timeout": kw.get("socket_timeout"),
        "max_connections": pool.max_connections,
        "tls": issubclass(pool.connection_class, SSLConnection),
    }
    assert kw.get("socket_connect_timeout") == kw.get("socket_timeout")
    if seen["tls"]:
        seen["ssl_cafile"] = kw.get("ssl_ca_certs")
        verify = kw.get("ssl_cert_reqs") == "required"
        assert kw.get("ssl_check_hostname") is verify
        seen["ssl_verify"] = verify
    if sentinel is None:
        seen.update(mode="standalone", host=kw.get("host"), port=kw.get("port"))
    else:
        to_sentinels = [s.connection_pool.connection_kwargs for s in sentinel.sentinels]
        seen.update(
            mode="sentinel",
            master_name=getattr(pool, "service_name", None),
            sentinels=[{"host": s["host"], "port": s["port"]} for s in to_sentinels],
            sentinel_password=to_sentinels[0].get("password"),
        )
    return seen


def _accepted_prefix(conn: KafkaConnectionSettings) -> str:
    """The shortest group-id prefix ``check_group`` accepts, found by asking it."""
    probe = conn.group_prefix + "g"
    for end in range(len(probe) + 1):
        try:
            conn.check_group(probe[:end] + "\x00")
        except ValueError:
            continue
        return probe[:end]
    raise AssertionError("check_group accepts no group")


def seen_by_kafka(conn: KafkaConnectionSettings) -> dict[str, Any]:
    """The settings as kafka-python's constructor receives them."""
    cfg = kafka_client_config(conn, client_id="reach")
    seen: dict[str, Any] = {
        "bootstrap_servers": cfg["bootstrap_servers"],
        "security_protocol": cfg["security_protocol"],
        "request_timeout_seconds": cfg["request_timeout_ms"] / 1000,
        # The producer and consumer name their topics through conn.topic().
        "topics": {
            logical: {
                "name": conn.topic(logical),
                "partitions": conn.topics[logical].partitions,
                "replication_factor": conn.topics[logical].replication_factor,
            }
            for logical in conn.topics
        },
        # BarConsumer checks its group id with conn.check_group: the prefix it takes.
        "group_prefix": _accepted_prefix(conn),
    }
    if "sasl_mechanism" in cfg:
        seen.update(
            sasl_mechanism=cfg["sasl_mechanism"],
            username=cfg["sasl_plain_username"],
            password=cfg["sasl_plain_password"],
        )
    context = cfg.get("ssl_context")
    if context is not None:
        names = [dict(pair for rdn in c["subject"] for pair in rdn) for c in context.get_ca_certs()]
        loaded = any(n.get("commonName") == TEST_CA_NAME for n in names)
        seen["ssl_cafile"] = conn.ssl_cafile if loaded else None
        verify = context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is verify
        seen["ssl_verify"] = verify
    return seen


def seen_by_postgres(conn: TimescaleConnectionSettings) -> dict[str, Any]:
    """The settings as the (unopened) psycopg pool holds them."""
    pool = store_pool(conn)
    dsn = conninfo_to_dict(pool.conninfo)
    assert isinstance(pool.kwargs, dict)
    hosts = str(dsn["host"]).split(",")
    ports = [int(p) for p in str(dsn["port"]).split(",")]
    return {
        "hosts": [{"host": h, "port": p} for h, p in zip(hosts, ports, strict=True)],
        "dbname": dsn["dbname"],
        "user": dsn["user"],
        "password": pool.kwargs.get("password"),
        "sslmode": dsn["sslmode"],
        "sslrootcert": dsn.get("sslrootcert"),
        "connect_timeout_seconds": int(dsn["connect_timeout"]),
        "pool_min_size": pool.min_size,
        "pool_max_size": pool.max_size,
    }


SEEN: dict[str, Callable[[Any], dict[str, Any]]] = {
    "redis": seen_by_redis,
    "kafka": seen_by_kafka,
    "timescale": seen_by_postgres,
}


def comparable(values: dict[str, Any], section: str, seen: dict[str, Any]) -> dict[str, Any]:
    """``values`` as a client holds them: secrets in clear, only what the client shows."""
    out = {}
    for field, value in values.items():
        if field not in seen:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, dict) and section == "kafka":
            value = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in value.items()}
        elif isinstance(value, list):
            value = [v.model_dump() if isinstance(v, BaseModel) else v for v in value]
        out[field] = value
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("source", SOURCES)
def test_every_field_from_every_source_reaches_its_client(
    source: str,
    scenario: str,
    ca_file: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sections = SCENARIOS[scenario](ca_file)
    settings_ = settings_from(source, sections, monkeypatch, tmp_path)
    for section, values in sections.items():
        conn = getattr(settings_, section)
        assert conn is not None, f"{section} was not configured from {source}"
        seen = SEEN[section](conn)
        want = comparable(expected(source, section, values), section, seen)
        assert {k: seen[k] for k in want} == want, f"{section} from {source}"


def test_the_scenarios_exercise_every_field(ca_file: str) -> None:
    """A new field fails here until a scenario sets it and a client is shown to hold it."""
    for section, (_, settings_class) in SECTIONS.items():
        fields = set(settings_class.model_fields)
        set_, seen = set(), set()
        for build in SCENARIOS.values():
            values = build(ca_file)[section]
            set_ |= set(values)
            seen |= set(SEEN[section](settings_class.model_validate(values)))
        assert set_ == fields - INPUT_FORMS.get(section, set()), (
            f"{section}: fields no scenario sets"
        )
        shown = seen | INPUT_FORMS.get(section, set()) | LIVE_ONLY.get(section, set())
        assert shown == fields, f"{section}: fields no client is shown to hold"


def test_the_settings_extend_the_document_sections() -> None:
    """One model per service: the settings class *is* a document section plus knobs."""
    for document_class, settings_class in SECTIONS.values():
        assert issubclass(settings_class, document_class)
        assert set(document_class.model_fields) <= set(settings_class.model_fields)


def test_a_document_section_becomes_settings_with_every_field(ca_file: str) -> None:
    for section, values in scenario_tls(ca_file).items():
        document_class, settings_class = SECTIONS[section]
        part = document_class.model_validate(document_part(section, values))
        settings_ = settings_class.from_section(part)  # type: ignore[attr-defined]
        for field in document_class.model_fields:
            assert getattr(settings_, field) == getattr(part, field), f"{section}.{field}"


# --- Redis URLs -----------------------------------------------------------------------------


URLS = {
    "redis://cache-user:p%40ss@10.9.8.7:6400/3": {
        "mode": "standalone", "host": "10.9.8.7", "port": 6400, "username": "cache-user",
        "password": "p@ss", "db": 3, "tls": False,
    },
    "rediss://:only-pw@cache.example:6380": {
        "mode": "standalone", "host": "cache.example", "port": 6380, "username": None,
        "password": "only-pw", "db": 0, "tls": True,
    },
    "redis://[::1]": {"mode": "standalone", "host": "::1", "port": 6379, "tls": False},
    "redis+sentinel://u:pw@10.0.0.1:26379,10.0.0.2:26380/bars-primary/4": {
        "mode": "sentinel", "master_name": "bars-primary", "username": "u", "password": "pw",
        "db": 4, "tls": False,
        "sentinels": [{"host": "10.0.0.1", "port": 26379}, {"host": "10.0.0.2", "port": 26380}],
    },
}  # fmt: skip


@pytest.mark.parametrize("source", [s for s in SOURCES if s != "document"])
@pytest.mark.parametrize("url", sorted(URLS))
def test_a_redis_url_from_any_source_configures_the_client(
    source: str, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_ = settings_from(
        source, {"redis": {"url": url, "max_connections": 6}}, monkeypatch, tmp_path
    )
    assert settings_.redis is not None
    seen = seen_by_redis(settings_.redis)
    assert {k: seen[k] for k in URLS[url]} == URLS[url]
    assert seen["max_connections"] == 6
    assert "pw" not in repr(settings_) and "p@ss" not in repr(settings_)


def test_a_url_overrides_the_fields_it_carries_and_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text(
        "redis:\n  host: 10.0.0.9\n  port: 7000\n  username: from-yaml\n  password: yaml-pw\n"
    )
    monkeypatch.setenv("BACKBONE_REDIS__URL", "redis://10.0.0.1:6379")
    redis_ = load_settings().redis
    assert redis_ is not None
    assert (redis_.host, redis_.port) == ("10.0.0.1", 6379)
    assert redis_.username == "from-yaml" and redis_.password is not None


@pytest.mark.parametrize(
    "url",
    ["http://h:1", "redis+sentinel://h:26379", "redis://", "redis://a:1,b:2", "h:6379"],
)
def test_a_bad_redis_url_is_refused_without_echoing_it(url: str) -> None:
    from backbone.settings import SettingsError

    with pytest.raises(SettingsError, match=r"redis\.url") as caught:
        load_settings(redis={"url": url.replace("h:", "h-secret-pw:")})
    assert "secret-pw" not in str(caught.value)


_NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(
    username=_NAME,
    password=_NAME,
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    port=st.integers(1, 65535),
    db=st.integers(0, 15),
    tls=st.booleans(),
    max_connections=st.integers(1, 10_000),
    socket_timeout=st.floats(0.01, 120, allow_nan=False),
)
def test_any_redis_url_and_knobs_reach_redis_py(
    username: str,
    password: str,
    host: str,
    port: int,
    db: int,
    tls: bool,
    max_connections: int,
    socket_timeout: float,
) -> None:
    scheme = "rediss" if tls else "redis"
    url = f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{host}:{port}/{db}"
    conn = RedisConnectionSettings(
        url=url, max_connections=max_connections, socket_timeout=socket_timeout
    )
    seen = seen_by_redis(conn)
    assert seen == {
        **seen,
        "mode": "standalone",
        "host": host,
        "port": port,
        "username": username,
        "password": password,
        "db": db,
        "tls": tls,
        "max_connections": max_connections,
        "socket_timeout": socket_timeout,
    }


# --- the documentation ----------------------------------------------------------------------


def documented_rows() -> dict[str, list[str]]:
    """``docs/configuration.md``: field name -> the cells of its table row."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells[0].count("`") == 2:
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_configuration_doc_lists_every_field_and_where_it_comes_from() -> None:
    from backbone.cache.policy import CachePolicy

    nested = {"cache": CachePolicy, **{name: pair[1] for name, pair in SECTIONS.items()}}
    wanted = {name for name in BackboneSettings.model_fields if name not in nested}
    for prefix, model in nested.items():
        wanted |= {f"{prefix}.{field}" for field in model.model_fields}
    rows = documented_rows()
    assert set(rows) >= wanted, f"undocumented: {sorted(wanted - set(rows))}"
    assert not {r for r in rows if "." in r or r in BackboneSettings.model_fields} - wanted
    for section, (document_class, _) in SECTIONS.items():
        for name, cells in rows.items():
            if name.startswith(f"{section}."):
                in_document = name.split(".", 1)[1] in document_class.model_fields
                assert cells[0] == ("yes" if in_document else "no"), name
