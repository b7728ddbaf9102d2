"""``python -m backbone_harness.load --outputs PATH [--profile P] [--workers N] ...``.

Runs one bounded Locust run against the stack the outputs document describes
and prints the :class:`~backbone_harness.load.run.LoadResult` as JSON on stdout.
``--profile``: ``produce`` (feed handlers through ``BarProducer``, as the
ingest writer), ``read``
(trading users through ``Backbone``) or ``both``. ``--workers N`` makes this
process Locust's master and starts N worker processes; a worker is this same
command with ``--worker-of PORT`` (it prints nothing).
``--seconds`` bounds the run; SIGTERM ends it earlier, still printing the result
(``harness drill run --load`` runs the load this way across a drill's fault).
Locust is imported first, so its gevent patching precedes every other import.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import locust  # noqa: F401  (first: patches the standard library with gevent)

from backbone.connections import load_document
from backbone.job_logins import harness_section
from backbone_harness.load.run import run_load, run_worker
from backbone_harness.load.users import MarketDataFeedUser, bound_to

PROFILES = ("produce", "read", "both")


def _user_classes(args: argparse.Namespace) -> list[Any]:
    doc = load_document(args.outputs)
    classes: list[Any] = []
    if args.profile in ("produce", "both"):
        # Feed handlers only produce: they log in as the ingest writer when the
        # document names one (least privilege, docs/security.md).
        if doc.kafka is None:
            raise SystemExit(f"{args.outputs} describes no Kafka; run the load on a Tier 1 stack")
        classes.append(bound_to(MarketDataFeedUser, harness_section(doc, "producer")))
    if args.profile in ("read", "both"):
        from backbone_harness.load.reads import bound_reader

        classes.append(bound_reader(str(args.outputs), args.hit_ratio))
    return classes


def _seed(outputs: str) -> None:
    from backbone.settings import TimescaleConnectionSettings
    from backbone.store.timescale import TimescaleStore
    from backbone_harness.load.reads import seed_read_data

    doc = load_document(outputs)
    if doc.timescale is None:
        raise SystemExit(f"{outputs} describes no PostgreSQL; the read profile needs a store")
    # Seeding writes bars: the consumer's login, as Backbone's store.
    with TimescaleStore(
        TimescaleConnectionSettings.from_section(harness_section(doc, "store"), pool_max_size=1)
    ) as store:
        seed_read_data(store)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backbone_harness.load")
    parser.add_argument("--outputs", required=True, help="the stack's outputs.json")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--spawn-rate", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--profile", choices=PROFILES, default="produce")
    parser.add_argument("--hit-ratio", type=float, default=0.9)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--histograms",
        action="store_true",
        help="keep each timeline interval's response-time histogram (for a drill's phases)",
    )
    parser.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    classes = _user_classes(args)
    if args.worker_of is not None:
        run_worker(classes, args.worker_of)
        return 0
    if args.profile in ("read", "both"):
        _seed(args.outputs)
    worker_args = [
        "--outputs", str(args.outputs), "--profile", args.profile,
        "--hit-ratio", str(args.hit_ratio),
    ]  # fmt: skip
    result = run_load(
        classes,
        users=args.users,
        spawn_rate=args.spawn_rate,
        seconds=args.seconds,
        workers=args.workers,
        worker_args=worker_args,
        histograms=args.histograms,
    )
    json.dump(result.as_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
