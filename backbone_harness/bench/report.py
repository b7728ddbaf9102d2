"""``performance.md``: the figures of one benchmark run, each beside its ceiling.

Rendering only (no measuring): a pure function of the run's JSON, so the page
can be regenerated from ``performance.json`` and tested on fixture data.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_markdown"]

_TARGETS = {"tier0_bars_per_s": 50_000, "p99_latency_ms_at_5000_bars_per_s": 500}


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _figure_rows(figures: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| path | ours | value | ceiling | ceiling value | ratio | load average (1, 5, 15 min) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        if "error" in f:
            rows.append(f"| {f['path']} | failed: {f['error']} | — | — | — | — | — |")
            continue
        ratio = f"{f['ratio']:.0%}" if f.get("ratio") is not None else "—"
        load = ", ".join(f"{x:.2f}" for x in f["load_average"])
        rows.append(
            f"| {f['path']} | {f['ours']} | {_num(f['value'])} {f['unit']} | {f['ceiling']} | "
            f"{_num(f['ceiling_value'])} {f['unit']} | **{ratio}** | {load} |"
        )
    return rows


def _points_table(section: dict[str, Any], x_key: str, x_label: str) -> list[str]:
    rows = [f"| {x_label} | bars/s | p99 (ms) | load average |", "| --- | --- | --- | --- |"]
    for p in section.get("points", []):
        load = ", ".join(f"{x:.2f}" for x in p["load_average"])
        rows.append(f"| {p[x_key]:,} | {_num(p['bars_per_s'])} | {_num(p['p99_ms'])} | {load} |")
    return rows


def _bottleneck_rows(bottlenecks: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| path | bottleneck (most own time) | then |",
        "| --- | --- | --- |",
    ]
    for path, hot in bottlenecks.items():
        if not hot:
            continue
        first, rest = hot[0], hot[1:]
        then = "; ".join(
            f"`{h['function']}` {h['share_of_own_time']:.0%} ({h.get('kind', '?')})" for h in rest
        )
        rows.append(
            f"| {path} | `{first['function']}` ({first['share_of_own_time']:.0%} of own time, "
            f"{first.get('kind', '?')}) | {then or '—'} |"
        )
    return rows


def _details(r: dict[str, Any]) -> list[str]:
    lines = ["", "## How each figure was measured", ""]
    prod = r.get("producer", {})
    if "ours" in prod:
        ours, tool = prod["ours"], prod["kafka_tool"]
        lines.append(
            f"- **Producer.** Both sides: record size {tool['record_bytes']:,} B (the mean of "
            f"our encoded bar records), acks=all, idempotence on, linger.ms/batch.size/in-flight "
            f"equal, no compression, same broker and partition count. Each first sent for "
            f"{ours['warmup_s']:g} s of warm-up that is thrown away, then was measured: ours "
            f"{ours['measured_s']} s ({ours['records']:,} records, "
            f"{ours['bars_per_s']:,} bars/s), ProducerPerformance {tool['measured_s']} s "
            f"({tool['records']:,} records, its own 5 s windows after the warm-up; avg latency "
            f"{tool['avg_latency_ms']} ms). Kafka 4.1's tool has no warm-up option, so its "
            "windows that began inside the warm-up are dropped. Both count only acknowledged "
            "records: our measured time runs until the last record sent is acknowledged, "
            "so it is longer than the sending phase when kafka-python had queued ahead."
        )
    st = r.get("store", {})
    if "ours" in st:
        lines.append(
            f"- **Store.** {st['ours']['rows']:,} new rows per method, batches of "
            f"{st['ours']['batch_size']:,}; the COPY ceilings stream rows formatted before the "
            "clock starts, in one transaction; the unindexed table is `LIKE bars` without its "
            "key or partitions, dropped afterwards."
        )
    e2e = r.get("end_to_end", {})
    if "bars_per_s" in e2e:
        lines.append(
            f"- **Tier 1 end to end.** {e2e['bars']:,} new bars, one `backbone consume` process; "
            "the clock runs from the first send to the last store commit. Stored "
            f"{e2e['stored']:,}, reconciles: {e2e['reconciles']}; average Kafka record "
            f"{e2e['record_bytes_avg']:,} B."
        )
    rp = r.get("replay", {})
    if "bars_per_s" in rp:
        lines.append(
            f"- **Replay.** `backbone.replay.replay` of {rp['sent']:,} freshly stored bars, "
            "including its scan of the topics for bars already present "
            f"({rp['scanned_records']:,} records read)."
        )
    ca = r.get("cache", {})
    if "reads" in ca:
        lines.append(
            f"- **Cache.** {ca['reads']:,} reads of one cached key by each client, one at a time "
            "on one connection (redis-benchmark `-c 1`); `-c 50` is redis-benchmark's default. "
            "A `latest()` hit is one round trip carrying two commands (GET, and the ZADD that "
            "keeps the LRU index), then decoding the bar and counting the hit."
        )
    cc = r.get("consumer_counts", {})
    if cc.get("points"):
        lines.append(
            f"- **Consumer count** ({cc['stack']} stack): for each count a new group whose "
            "offsets are first committed at the topics' ends, so members that rebalance late "
            f"miss nothing; {cc['points'][0]['bars']:,} new bars per point, from the first send "
            "to the last store commit of any member; p99 is the worst member's, send → stored, "
            "with the producer sending as fast as it can."
        )
    lat = r.get("latency", {})
    if "latency_ms" in lat:
        ms = lat["latency_ms"]
        lines.append(
            f"- **Latency** at {lat['achieved_bars_per_s']:,} bars/s ({lat['bars']:,} bars in "
            f"20 ms ticks): p50 {ms['p50']} ms, p95 {ms['p95']} ms, p99 {ms['p99']} ms "
            f"(target ≤ {_TARGETS['p99_latency_ms_at_5000_bars_per_s']} ms at 5,000 bars/s); "
            f"{lat['measured']}."
        )
    t0 = r.get("tier0", {})
    if t0:
        lines.append(
            f"- **Tier 0** (no services: DuckDB, memory cache, in-process bus): "
            f"{t0['bars_per_s']:,} bars/s over {t0['bars']:,} bars (target ≥ "
            f"{_TARGETS['tier0_bars_per_s']:,}), reconciles: {t0['reconciles']}."
        )
    return lines


def render_markdown(r: dict[str, Any]) -> str:
    """The human-readable report of one run."""
    m, v = r["machine"], r["versions"]
    plots = r.get("plots", {})
    lines = [
        "# Performance",
        "",
        f"Produced by `harness bench perf{' --quick' if r['mode'] == 'quick' else ''}` on "
        f"{r['date']} ({r['mode']} run). Benchmarks, not timed tests.",
        "",
        "**Read the ratios, not the rates.** This machine is shared (2 cores; other "
        "sessions run tests on it at the same time), so absolute rates move with their "
        "load, by several times between runs. Every figure below was measured in this one "
        "run, seconds from its ceiling, on the same stack, and each row carries the load "
        "average at the moment it was taken.",
        "",
        "## Machine",
        "",
        f"- {m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']}, CPU {m['cpu_model']}",
        f"- load average at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in sorted(v.items())),
        "",
        "## Each path against its ceiling",
        "",
        *_figure_rows(r["figures"]),
        *_details(r),
        "",
        "## Bottlenecks (from cProfile)",
        "",
        "A profiled pass of each path, separate from the timed one. Own time: time spent "
        "in the function itself, not in what it calls; C calls (socket I/O, JSON) show by "
        "name. For the end-to-end path it is the consumer process's profile (start-up "
        "imports left out). A path whose top entry is *I/O or wait* is bound by the server "
        "or the network round trip it waits on (a lock is kafka-python's sender or fetcher "
        "thread doing that I/O); *CPU* means Python work in that function.",
        "",
        *_bottleneck_rows(r.get("bottlenecks", {})),
    ]
    for key, x_key, x_label, png in (
        ("batch_sizes", "batch_size", "batch size", "performance-batch-size.png"),
        ("consumer_counts", "consumers", "consumers", "performance-consumers.png"),
    ):
        section = r.get(key)
        if not section:
            continue
        lines += [
            "",
            f"## {section['path']}: bars/s and p99 against {x_label} ({section['stack']} stack)",
            "",
            *_points_table(section, x_key, x_label),
        ]
        if png in plots and not plots[png].startswith("skipped"):
            lines += ["", f"![{section['path']} against {x_label}]({png})"]
        elif png in plots:
            lines += ["", f"Plot {plots[png]}."]
    lines += ["", "Raw figures: `performance.json` beside this file.", ""]
    return "\n".join(lines)
