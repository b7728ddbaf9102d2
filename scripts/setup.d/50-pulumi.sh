#!/usr/bin/env bash
# The Pulumi CLI, built from its Go modules (scripts/build-pulumi.sh) into
# ${BACKBONE_CACHE:-$HOME/.cache/backbone}/pulumi-vVERSION. A no-op once built.
# A failed build does not fail the set-up: the build script leaves FAILED (the
# reason) and build.log next to where the CLI goes, and the tests that need the
# CLI skip with that reason (backbone_harness.pulumi_cli.build_failure).
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -d /usr/local/go/bin ] && PATH="$PATH:/usr/local/go/bin"
. scripts/lib.sh
mkdir -p "${BACKBONE_CACHE:-$HOME/.cache/backbone}"
if ! run_logged "building the Pulumi CLI (cold: about 10 min on 2 cores)" \
    "${BACKBONE_CACHE:-$HOME/.cache/backbone}/pulumi-setup.log" bash scripts/build-pulumi.sh; then
  printf '\033[1m[setup]\033[0m %s\n' "the Pulumi CLI did not build; the pulumi_cli tests will skip (see the FAILED file and build.log it names)"
fi
exit 0
