"""Benchmarks of the stacks and the backbone: start-up (``harness bench up``) and
throughput, latency and their ceilings (``harness bench perf``). Each writes a
report with the machine, the versions and the date; no test asserts a duration."""
