"""``harness bench up``: how long stacks take to come up and go down.

Each run is the real command a user types (``python -m backbone_harness up`` / ``down``
in a subprocess, so interpreter start-up counts), timed from outside; the
per-service figures come from the stack's own ``state.json`` (local) or
``containers.json`` (compose: seconds until each node answered from the host).
For scale, each service's own start path is timed on the same machine:
``redis-server`` alone until it answers PING, and ``pg_ctl start -w`` on the
data directory the stack left behind. ``--env compose`` (or ``all``) times the
compose environment too: the project's images on podman, images reused.
Results go to ``docs/status/stack-startup.md`` and ``.json``.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from backbone_harness.errors import HarnessError
from backbone_infra.targets.local import provisioner
from backbone_infra.targets.local.ports import LOOPBACK, PortAllocator
from backbone_infra.targets.local.postgres_programs import PG_BIN, PG_USER
from backbone_infra.targets.local.state import STACKS_ENV, load_state, stacks_root

__all__ = ["run_startup_bench"]

REPO = Path(__file__).resolve().parents[2]
TARGETS_S = {"minimal": 10.0, "ha": 30.0, "down": 5.0}
#: The environments the benchmark can time.
ENVS = ("local", "compose")
Echo = Callable[[str], None]


def _cmd_version(args: list[str]) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine() -> dict[str, Any]:
    """Cores, memory, kernel, load and the versions of everything a stack runs."""
    from backbone_infra.targets.local.kafka import KAFKA_VERSION

    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "redis": _cmd_version(["redis-server", "--version"]),
            "postgres": _cmd_version([str(PG_BIN / "postgres"), "--version"]),
            "kafka": KAFKA_VERSION,
            "java": _cmd_version(["java", "-version"]),
            "python": sys.version.split()[0],
        },
    }


def _timed_cli(args: list[str], root: Path) -> float:
    env = {**os.environ, STACKS_ENV: str(root)}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "backbone_harness", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    took = time.monotonic() - began
    if proc.returncode != 0:
        raise HarnessError(f"`harness {' '.join(args)}` failed: {proc.stderr.strip()[:500]}")
    return took


def _one_run(size: str, index: int, root: Path) -> dict[str, Any]:
    name = f"bench-{size}-{index}"
    up_s = _timed_cli(["up", "--env", "local", "--size", size, "--name", name], root)
    timings = load_state(root / name).timings
    down_s = _timed_cli(["down", "--name", name], root)
    if provisioner.stack_processes(root / name):
        raise HarnessError(f"processes of {name} survived `harness down`")
    return {"up_s": round(up_s, 2), "down_s": round(down_s, 2), "timings": timings}


def _containers_of(name: str) -> list[str]:
    from backbone_harness.containers.engine import podman

    label = f"label=backbone.stack={name}"
    return podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()


def _one_compose_run(size: str, index: int, root: Path) -> dict[str, Any]:
    # Container names are engine-wide: the suffix keeps two benchmarks apart.
    name = f"bench-c{size}-{index}-{secrets.token_hex(2)}"
    try:
        up_s = _timed_cli(["up", "--env", "compose", "--size", size, "--name", name], root)
        state = json.loads((root / name / "containers.json").read_text())
    finally:
        down_s = _timed_cli(["down", "--name", name], root)
    if _containers_of(name):
        raise HarnessError(f"containers of {name} survived `harness down`")
    return {"up_s": round(up_s, 2), "down_s": round(down_s, 2), "timings": state["timings"]}


def _redis_alone(root: Path) -> float:
    """``redis-server`` with only a port, until PING answers."""
    port = PortAllocator().allocate()
    began = time.monotonic()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            try:
                if redis.Redis(host=LOOPBACK, port=port, socket_timeout=0.5).ping():
                    return time.monotonic() - began
            except redis.ConnectionError:
                time.sleep(0.01)
            if time.monotonic() - began > 30:
                raise HarnessError("redis-server alone did not answer within 30 s")
    finally:
        proc.kill()
        proc.wait()


def _pg_ctl_start(data: Path) -> float | None:
    """``pg_ctl start -w`` on a stack's (stopped) data directory."""
    if not data.is_dir():
        return None
    prefix = (
        ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups"]
        if os.geteuid() == 0
        else []
    )
    port = PortAllocator().allocate()
    pg_ctl = str(PG_BIN / "pg_ctl")
    log = data.parent / "bench-pg_ctl.log"
    began = time.monotonic()
    start = subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", f"-p {port}", "-l", str(log), "-w", "start"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    took = time.monotonic() - began
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return took if start.returncode == 0 else None


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def _sizes(
    one: Callable[[str, int, Path], dict[str, Any]], runs: int, root: Path, say: Echo, env: str
) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for size in ("minimal", "ha"):
        per_run = []
        for i in range(1, runs + 1):
            say(f"{env} {size} run {i}/{runs} ...")
            per_run.append(one(size, i, root))
            say(f"  up {per_run[-1]['up_s']}s, down {per_run[-1]['down_s']}s")
        services = sorted({k for r in per_run for k in r["timings"]})
        sizes[size] = {
            "up_s": _summary([r["up_s"] for r in per_run]),
            "down_s": _summary([r["down_s"] for r in per_run]),
            "per_service_s": {
                k: _summary([r["timings"][k] for r in per_run if k in r["timings"]])
                for k in services
            },
            "runs": per_run,
        }
    return sizes


def run_startup_bench(
    *, runs: int, output: Path, echo: Echo | None = None, envs: tuple[str, ...] = ("local",)
) -> tuple[Path, Path]:
    """Run the benchmark in ``envs``; returns the paths of the Markdown and JSON reports.

    Timing only ``compose`` keeps the local figures of the existing report
    (``output``.json) and merges the compose ones beside them.
    """
    unknown = set(envs) - set(ENVS)
    if unknown or not envs:
        raise HarnessError(f"unknown --env {sorted(unknown)}; use {', '.join(ENVS)} or all")
    say = echo or (lambda _m: None)
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="bench-", dir=stacks_root()))
    os.chmod(root, 0o711)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "runs": runs,
        "targets_s": TARGETS_S,
        "sizes": {},
    }
    js = output.with_suffix(".json")
    if "local" not in envs:
        previous = json.loads(js.read_text()) if js.is_file() else {}
        if not previous.get("sizes"):
            raise HarnessError(f"{js} holds no local figures to keep; run with --env all")
        results = previous
    try:
        if "local" in envs:
            results["sizes"] = _sizes(_one_run, runs, root, say, "local")
            say("own start paths: redis-server alone, pg_ctl start -w ...")
            own_redis = [_redis_alone(root) for _ in range(runs)]
            pg_data = root / f"bench-minimal-{runs}" / "postgres" / "postgres-1"
            own_pg = [t for t in (_pg_ctl_start(pg_data) for _ in range(runs)) if t is not None]
            results["own_start_paths_s"] = {
                "redis-server alone (to PING)": _summary(own_redis),
                **({"pg_ctl start -w (same data dir)": _summary(own_pg)} if own_pg else {}),
            }
            results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if "compose" in envs:
            results["compose"] = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "runs": runs,
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                "sizes": _sizes(_one_compose_run, runs, root, say, "compose"),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            }
    finally:
        for name in provisioner.list_stacks(root):
            provisioner.down(name, root=root)
        shutil.rmtree(root, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(results, indent=2) + "\n")
    md = output.with_suffix(".md")
    md.write_text(_markdown(results))
    return md, js


def _fmt(s: dict[str, float]) -> str:
    return f"{s['median']} ({s['min']} to {s['max']})"


def _compose_markdown(c: dict[str, Any] | None, targets: dict[str, float]) -> list[str]:
    if not c:
        return []
    lines = [
        "",
        "## Compose environment (the project's images on podman)",
        "",
        "The same two sizes as containers (`harness up --env compose`); the sections",
        "above are the local process stacks.",
        "",
        f"Measured {c['date']} by `harness bench up --env compose --runs {c['runs']}`: "
        "`harness up --env compose` with every image reused (content-addressed tags), "
        "until every node answers from the host, the topics exist and the schema is "
        "applied; `harness down` removes every container and the network. Load average "
        f"{c['load_average_at_start']} at start, {c['load_average_at_end']} at end.",
        "",
        "| size | `harness up --env compose` (s) | local target | `harness down` (s) |",
        "|---|---|---|---|",
    ]
    for size, data in c["sizes"].items():
        lines.append(
            f"| {size} | {_fmt(data['up_s'])} | ≤ {targets[size]:.0f} | {_fmt(data['down_s'])} |"
        )
    for size, data in c["sizes"].items():
        lines += [
            "",
            f"### compose {size}: seconds from the first container start until each node answered",
            "",
            "| node | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(s)} |" for k, s in data["per_service_s"].items()]
    return lines


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m["versions"]
    lines = [
        "# Stack start-up and tear-down",
        "",
        f"Measured {r['date']} by `harness bench up --runs {r['runs']}` "
        "(each figure: median, min-max over the runs; the commands run as subprocesses, "
        "so interpreter start-up is included).",
        "",
        f"- Machine: {m['cores']} cores, {m['memory_gb']} GB, kernel {m['kernel']}; "
        f"load average {m['load_average_at_start']} at start, "
        f"{m.get('load_average_at_end', '?')} at end (the machine is shared).",
        f"- Versions: {v['redis']}; {v['postgres']}; Kafka {v['kafka']}; {v['java']}; "
        f"Python {v['python']}.",
        "",
        "| size | `harness up` (s) | target | `harness down` (s) | target |",
        "|---|---|---|---|---|",
    ]

    def fmt(s: dict[str, float]) -> str:
        return f"{s['median']} ({s['min']} to {s['max']})"

    for size, data in r["sizes"].items():
        lines.append(
            f"| {size} | {fmt(data['up_s'])} | ≤ {r['targets_s'][size]:.0f} | "
            f"{fmt(data['down_s'])} | ≤ {r['targets_s']['down']:.0f} |"
        )
    for size, data in r["sizes"].items():
        lines += [
            "",
            f"## {size}: seconds to ready per service and node",
            "",
            "| service / node | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k} | {fmt(s)} |" for k, s in data["per_service_s"].items()]
    own = r.get("own_start_paths_s", {})
    if own:
        lines += [
            "",
            "## For scale: each service's own start path",
            "",
            "| start path | seconds |",
            "|---|---|",
        ]
        lines += [f"| {k} | {fmt(s)} |" for k, s in own.items()]
        minimal = r["sizes"].get("minimal", {}).get("per_service_s", {})
        ratios = []
        if "redis-1" in minimal and "redis-server alone (to PING)" in own:
            base = own["redis-server alone (to PING)"]["median"]
            ratios.append(("redis-1 node / redis-server alone", minimal["redis-1"]["median"], base))
        if "postgres-1" in minimal and "pg_ctl start -w (same data dir)" in own:
            base = own["pg_ctl start -w (same data dir)"]["median"]
            ratios.append(
                ("postgres-1 node / pg_ctl start -w", minimal["postgres-1"]["median"], base)
            )
            ratios.append(
                (
                    "postgres service (initdb, schema) / pg_ctl start -w",
                    minimal["postgres"]["median"],
                    base,
                )
            )
        if ratios:
            lines += ["", "| comparison | ratio |", "|---|---|"]
            lines += [
                f"| {label} | {a / b:.1f}x ({a} s vs {b} s) |" for label, a, b in ratios if b > 0
            ]
    lines += _compose_markdown(r.get("compose"), r["targets_s"])
    lines.append("")
    return "\n".join(lines)
