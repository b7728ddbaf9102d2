"""Every service's configuration, rendered once, as pure functions.

Each function takes the spec (``backbone_infra.spec``), what differs per node and per
target (node index, listen and announce addresses, ports, data directory) and
the secrets it must embed, and returns the text of one file. No I/O, no
Pulumi: the local provisioner (``backbone_infra.targets.local``) writes the text to
0600 files for its processes; the Docker and Kubernetes components
(``backbone_infra.components``) mount it into containers that run the binaries with
explicit commands and config paths. The same renderer therefore configures
what is tested locally and what ships.

Modules, one per service:

``backbone_infra.render.redis``
    ``redis_conf(spec, *, bind, port, announce_host, data_dir, primary,
    password, admin_password)`` -> ``redis.conf``;
    ``sentinel_conf(...)`` -> ``sentinel.conf``; ``acl_users(...)``.
``backbone_infra.render.kafka``
    ``render_server_properties(spec, *, node, ports, hosts, bind_host, data_dir,
    client_password, admin_password, external)`` -> ``server.properties`` (JAAS
    of every listener inline); ``storage_format_argfile(...)`` -> the ``java
    @argfile`` that formats a node's storage with its SCRAM users;
    ``jvm_command(...)`` -> the node's command line; ``jmx_exporter_rules()`` ->
    ``backbone_infra/kafka/jmx-exporter.yml``, the one rule set every target ships.
``backbone_infra.render.postgres``
    ``postgresql_conf(spec, *, listen, timescaledb, synchronous)`` -> settings
    appended to ``initdb``'s ``postgresql.conf``; ``pg_hba_conf(spec, *,
    network)``; ``bootstrap_statements(spec, *, password_verifier,
    replication_verifier)`` -> the roles and the database;
    ``scram_verifier(password)``; ``synchronous_standby_names(spec)``.
``backbone_infra.render.exporters``
    ``redis_exporter_args(spec, *, redis_uri, listen, password_file, sentinel)``,
    ``redis_exporter_passwords(uri, password)``, ``postgres_exporter_args(*,
    listen)``, ``postgres_exporter_env(*, server, password_file)``: the
    exporters' command lines, the same locally and in the sidecars.
``backbone_infra.render.prometheus``
    ``render_prometheus_config(targets, *, scrape_interval_s,
    evaluation_interval_s, rule_files, external_labels)`` -> the
    ``prometheus.yml`` document; ``prometheus_yaml(config)`` -> its text;
    ``alert_rules()`` -> ``backbone_infra/monitoring/rules.yml``; the scrape job names
    (``JOB_*``) the rules and dashboards select on. Writing and ``promtool``
    checks are :mod:`backbone_infra.monitoring.promtool`.

Differences between targets are arguments, and the ones that are intended
are listed in ``docs/environments.md``.
"""
