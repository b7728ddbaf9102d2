"""``harness bench tls``: what TLS costs, measured on one machine in one run.

Two minimal local stacks run side by side, one with TLS (the default) and
one brought up with ``tls=False`` (what ``harness up --no-tls`` makes, which
exists for this measurement only). The same paths are measured on each, in
alternating order round after round so that both see the same neighbours'
load:

* **Tier 1 end to end**: bars/s from the first send to the last store commit
  (:func:`backbone_harness.bench.tier1.bench_end_to_end`): every hop — the
  producer to Kafka, the consumer from Kafka, PostgreSQL, Redis — is TLS or not.
* **Producer**: :class:`~backbone.stream.producer.BarProducer` alone, bars/s
  (:func:`backbone_harness.bench.producer.bench_our_producer`).

The medians per variant and their ratio go into ``tls.json`` and into the
"TLS cost" section of ``performance.md`` (the section between
:data:`BEGIN` and :data:`END`; the rest of the page is ``harness bench perf``'s,
which keeps this section when it rewrites the page).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbone.connections import ConnectionsDocument
from backbone_harness.bench.measure import Log, load_average
from backbone_harness.bench.producer import bench_our_producer, sample_records
from backbone_harness.bench.tier1 import bench_end_to_end
from backbone_infra.spec import build_spec
from backbone_infra.targets.local import provisioner

__all__ = ["BEGIN", "END", "keep_tls_section", "run_tls_bench", "tls_section"]

BEGIN = "<!-- harness bench tls: begin -->"
END = "<!-- harness bench tls: end -->"
VARIANTS = ("tls", "plain")


@contextlib.contextmanager
def _stacks(root: Path, log: Log) -> Iterator[dict[str, tuple[ConnectionsDocument, Path]]]:
    tag = secrets.token_hex(3)
    names = {v: f"bench-tls-{v}-{tag}" for v in VARIANTS}
    up: list[str] = []
    try:
        found: dict[str, tuple[ConnectionsDocument, Path]] = {}
        for variant, name in names.items():
            log(f"bringing up {name} ({'TLS' if variant == 'tls' else 'no TLS'})")
            up.append(name)
            stack = provisioner.up(build_spec(name, tls=variant == "tls"), root=root)
            found[variant] = (stack.document, stack.outputs_path)
        yield found
    finally:
        for name in up:
            provisioner.down(name, root=root)
            shutil.rmtree(root / name, ignore_errors=True)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else 0.0


def run_tls_bench(
    out: Path,
    *,
    bars: int = 20_000,
    rounds: int = 3,
    producer_s: float = 5.0,
    stacks_root: Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Measure both variants ``rounds`` times; write ``tls.json`` and the page's section."""
    from backbone_infra.targets.local.state import stacks_root as default_root

    root = stacks_root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # the PostgreSQL user walks through it
    records = sample_records([f"TLS{i}" for i in range(8)], 4_000)
    runs: dict[str, dict[str, list[float]]] = {
        v: {"end_to_end_bars_per_s": [], "producer_bars_per_s": []} for v in VARIANTS
    }
    loads: list[float] = []
    with _stacks(root, log) as stacks:
        for n in range(rounds):
            order = VARIANTS if n % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                doc, outputs = stacks[variant]
                e2e = bench_end_to_end(doc, outputs, bars, log)
                prod = bench_our_producer(doc, records, 1.0, producer_s, log)
                if not e2e.get("reconciles"):
                    raise RuntimeError(f"{variant}: the end-to-end run did not reconcile")
                runs[variant]["end_to_end_bars_per_s"].append(float(e2e["bars_per_s"]))
                runs[variant]["producer_bars_per_s"].append(float(prod["bars_per_s"]))
                loads.append(load_average()[0])
                log(f"round {n + 1} {variant}: {e2e['bars_per_s']} bars/s end to end, "
                    f"{prod['bars_per_s']} bars/s producer")  # fmt: skip
    medians = {v: {k: _median(xs) for k, xs in runs[v].items()} for v in VARIANTS}
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "bars_per_run": bars,
        "rounds": rounds,
        "runs": runs,
        "medians": medians,
        "tls_over_plain": {
            k: round(medians["tls"][k] / medians["plain"][k], 3) if medians["plain"][k] else None
            for k in medians["tls"]
        },
        "load_average_1m": {"min": min(loads), "max": max(loads)} if loads else {},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "tls.json").write_text(json.dumps(report, indent=2) + "\n")
    page = out / "performance.md"
    old = page.read_text() if page.exists() else ""
    page.write_text(_with_section(old, tls_section(report)))
    return report


def tls_section(report: dict[str, Any]) -> str:
    """The "TLS cost" section of ``performance.md`` for a :func:`run_tls_bench` report."""
    med, ratio = report["medians"], report["tls_over_plain"]
    load = report["load_average_1m"]
    rows = [
        ("Tier 1 end to end (bars/s)", "end_to_end_bars_per_s"),
        ("producer alone (bars/s)", "producer_bars_per_s"),
    ]
    lines = [
        BEGIN,
        "## TLS cost",
        "",
        f"`harness bench tls`, {report['date']}: two minimal local stacks on this machine in one "
        f"run, one with TLS (the default) and one without (`--no-tls`, which exists for this "
        f"measurement only); {report['rounds']} rounds in alternating order, "
        f"{report['bars_per_run']:,} bars per end-to-end run; medians. Load average (1 min) "
        f"{load.get('min', 0):.1f} to {load.get('max', 0):.1f} during the runs. "
        "Raw figures: `tls.json`.",
        "",
        "| path | with TLS, median (range) | without TLS, median (range) | TLS / plain |",
        "| --- | ---: | ---: | ---: |",
    ]

    def cell(variant: str, key: str) -> str:
        xs = report["runs"][variant][key]
        return f"{med[variant][key]:,.0f} ({min(xs):,.0f} to {max(xs):,.0f})"

    for label, key in rows:
        r = ratio.get(key)
        lines.append(
            f"| {label} | {cell('tls', key)} | {cell('plain', key)} | "
            f"{'n/a' if r is None else f'{r:.2f}'} |"
        )
    lines += [
        "",
        "The ranges overlap where the neighbours' load moves the figures more than TLS does;",
        "the ratio of medians is the figure to compare, and only within one run.",
    ]
    lines += [END, ""]
    return "\n".join(lines)


def _with_section(page: str, section: str) -> str:
    if BEGIN in page and END in page:
        head, _, rest = page.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + section.rstrip("\n") + tail
    return (page.rstrip("\n") + "\n\n" if page else "") + section


def keep_tls_section(old_page: str, new_page: str) -> str:
    """``new_page`` with the TLS section of ``old_page`` kept (``harness bench perf``
    rewrites the page; the TLS figures are this command's)."""
    if BEGIN not in old_page or END not in old_page:
        return new_page
    section = BEGIN + old_page.partition(BEGIN)[2].partition(END)[0] + END + "\n"
    return _with_section(new_page, section)
