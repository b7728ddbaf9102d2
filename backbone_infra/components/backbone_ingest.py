"""``BackboneIngest``: the backbone's own processes in a container stack.

- ``kafka-lag`` (every container target): ``backbone lag-exporter``, broker-side
  consumer lag for Prometheus (job ``kafka-lag``); kafka_exporter's metrics and
  credentials handling differ from what the rules expect, so every environment
  runs the same exporter.
- ``backbone-ingest`` (Kubernetes): ``backbone consume``, the Tier 1 consumer,
  a Deployment serving ``/metrics`` behind the Service ``backbone-ingest`` that
  the scrape config already targets. Docker stacks address clients outside the network
  (published ports), so their consumer runs on the host and Prometheus scrapes
  it through ``host.docker.internal``.

Credentials travel as secret files: the lag exporter's Kafka settings
(``BACKBONE_CONFIG``) and the consumer's outputs document, which is the
``consumer`` job's (``backbone.job_outputs.job_document``): its own logins only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import yaml

from backbone_infra.components.certificates import TLS_DIR, StackCertificates
from backbone_infra.render.certificates import CA_FILE
from backbone_infra.render.kafka import security_protocol
from backbone_infra.render.prometheus import JOB_BACKBONE, JOB_KAFKA_LAG
from backbone_infra.spec import StackSpec
from backbone_infra.targets.workload import Backend, Container, Probe, StatefulService, secret_file

__all__ = ["CONSUMER", "LAG_EXPORTER", "BackboneIngest", "BackboneIngestArgs"]

LAG_EXPORTER = "kafka-lag"
#: The name the scrape config's backbone target resolves to (``backend.backbone_metrics_target``).
CONSUMER = "backbone-ingest"
SECRET_DIR = "/run/secrets/backbone"
#: The image's user (``Containerfile``).
BACKBONE_UID = 10001


@dataclass(frozen=True)
class BackboneIngestArgs:
    spec: StackSpec
    backend: Backend
    #: In-network ``host:port`` of every broker.
    kafka_bootstrap: Sequence[str]
    kafka_username: str
    kafka_sasl_mechanism: str
    kafka_password: pulumi.Input[str]
    #: The connections document (with secrets) for the consumer; ``None``: no consumer here.
    document: pulumi.Output[dict[str, Any]] | None
    #: The stack's certificates (the CA is mounted; ``None`` only with ``--no-tls``).
    certificates: StackCertificates | None = None


def _metrics_probe(port: int) -> Probe:
    # The image has Python, not wget: the same check works as a Docker health check.
    url = f"http://127.0.0.1:{port}/metrics"
    return Probe(
        command=(
            "python",
            "-c",
            f"import urllib.request; urllib.request.urlopen({url!r}, timeout=4)",
        )
    )


def _service(
    spec: StackSpec, name: str, port: int, job: str, args: tuple[str, ...], **kw: Any
) -> StatefulService:
    return StatefulService(
        name=name,
        replicas=1,
        client_ports={},
        metrics_port=port,
        metrics_job=job,
        storage="1Gi",
        fs_group=BACKBONE_UID,
        client=True,
        stateless=True,
        containers=(
            Container(
                name=name,
                image=spec.images.backbone,
                ports={"metrics": port},
                args=args,
                probe=_metrics_probe(port),
                resources=spec.resources,
                # Scratch space (an emptyDir in Kubernetes): nothing must persist.
                data_dir="/var/lib/backbone",
                uid=BACKBONE_UID,
                **kw,
            ),
        ),
    )


class BackboneIngest(pulumi.ComponentResource):
    """The lag exporter everywhere, and the consumer where clients run in the network."""

    services: list[StatefulService]

    def __init__(
        self, name: str, args: BackboneIngestArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("backbone:infra:BackboneIngest", name, None, opts)
        spec, m = args.spec, args.spec.monitoring
        certs = args.certificates
        ca_mount = (certs.ca_file(),) if certs is not None else ()
        settings = pulumi.Output.from_input(args.kafka_password).apply(
            lambda password: yaml.safe_dump(
                {
                    "kafka": {
                        "bootstrap_servers": list(args.kafka_bootstrap),
                        "security_protocol": security_protocol(certs is not None),
                        "sasl_mechanism": args.kafka_sasl_mechanism,
                        "username": args.kafka_username,
                        "password": password,
                        "ssl_cafile": f"{TLS_DIR}/{CA_FILE}" if certs is not None else None,
                    }
                }
            )
        )
        lag_port = str(m.lag_exporter_port)
        lag = _service(
            spec,
            LAG_EXPORTER,
            m.lag_exporter_port,
            JOB_KAFKA_LAG,
            ("--log-format", "json", "lag-exporter", "--host=0.0.0.0", f"--port={lag_port}"),
            env={"BACKBONE_CONFIG": f"{SECRET_DIR}/lag-exporter.yaml"},
            files=(secret_file(SECRET_DIR, "lag-exporter.yaml", settings), *ca_mount),
        )
        self.services = [lag]
        if args.document is not None:
            outputs = args.document.apply(lambda doc: json.dumps(doc, indent=2))
            self.services.append(
                _service(
                    spec,
                    CONSUMER,
                    m.backbone_metrics_port,
                    JOB_BACKBONE,
                    ("--log-format", "json", "consume", "--outputs", f"{SECRET_DIR}/outputs.json"),
                    env={
                        "BACKBONE_METRICS_HOST": "0.0.0.0",
                        "BACKBONE_METRICS_PORT": str(m.backbone_metrics_port),
                    },
                    files=(secret_file(SECRET_DIR, "outputs.json", outputs), *ca_mount),
                )
            )
        self.resources = [
            r for svc in self.services for r in args.backend.stateful_service(svc, self).resources
        ]
        self.register_outputs({"services": [svc.name for svc in self.services]})
