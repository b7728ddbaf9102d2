#!/usr/bin/env bash
# The project's container images (images/<service>/Containerfile), built on a
# Debian base made here with debootstrap, or reused: each tag is a hash of its
# Containerfile, pinned package versions, inputs and base, so a second run
# builds nothing (a few seconds). Cold: about 3 minutes on 2 cores.
# Skipped, with the engine's reason, where podman cannot run containers.
set -uo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

reason=$(.venv/bin/python -c 'from backbone_harness.containers.engine import no_engine_reason as r; print(r() or "")')
if [ -n "$reason" ]; then
  say "skipping the container images: $reason"
  exit 0
fi
if ! .venv/bin/python -m backbone_harness.containers.images; then
  say "the container images did not build (see above); the container tests will fail until they do"
  exit 2
fi
