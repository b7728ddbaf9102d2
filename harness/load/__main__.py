"""``python -m harness.load --outputs PATH [--users N] [--spawn-rate R] [--seconds S]``.

Runs one bounded Locust run against the stack the outputs document describes
and prints the :class:`~harness.load.run.LoadResult` as JSON on stdout.
Locust is imported first, so its gevent patching precedes every other import.
"""

from __future__ import annotations

import argparse
import json
import sys

import locust  # noqa: F401  (first: patches the standard library with gevent)

from backbone.connections import load_document
from harness.load.run import run_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.load")
    parser.add_argument("--outputs", required=True, help="the stack's outputs.json")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--spawn-rate", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    doc = load_document(args.outputs)
    if doc.kafka is None:
        print(
            f"{args.outputs} describes no Kafka; run the load test on a Tier 1 stack",
            file=sys.stderr,
        )
        return 2
    result = run_load(doc.kafka, users=args.users, spawn_rate=args.spawn_rate, seconds=args.seconds)
    json.dump(result.as_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
