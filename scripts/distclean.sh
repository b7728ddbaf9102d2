#!/usr/bin/env bash
# `make distclean`: remove every cache this project made, saying what and how big.
# Shared caches (Maven's ~/.m2, Go's module cache) lose only this project's entries.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
CACHE=${BACKBONE_CACHE:-$HOME/.cache/backbone}

remove() { # remove PATH WHAT
  [ -e "$1" ] || [ -L "$1" ] || return 0
  say "removing $2: $1 ($(du -sh "$1" 2>/dev/null | cut -f1))"
  chmod -R u+w "$1" 2>/dev/null || true
  rm -rf "$1"
}

remove .stacks "local stacks' state"
remove .cache "the PostgreSQL template cluster and build outputs"
remove build "generated reports"
remove backbone_infra/kafka/target "Maven's build folder"
remove "$CACHE" "Kafka jars, the Pulumi CLI build, the TimescaleDB oracle"
m2=${MAVEN_REPO:-$HOME/.m2/repository}
for group in org/apache/kafka io/prometheus/jmx; do
  remove "$m2/$group" "Maven artifacts of $group"
done
if command -v go >/dev/null 2>&1; then
  gomod=$(go env GOMODCACHE 2>/dev/null)
  for mod in github.com/pulumi github.com/!shopify cache/download/github.com/pulumi cache/download/github.com/!shopify; do
    [ -n "$gomod" ] && remove "$gomod/$mod" "Go modules $mod"
  done
fi
if command -v podman >/dev/null 2>&1; then
  images=$(podman images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep '^localhost/backbone-' || true)
  if [ -n "$images" ]; then
    say "removing the project's container images: $(echo "$images" | wc -l) images"
    echo "$images" | xargs podman rmi -f >/dev/null 2>&1 || true
  fi
fi
remove backbone_infra/.venv "the link to .venv"
remove .venv "the Python virtual environment"
say "distclean done; \`make setup\` makes everything again (about 20 min cold)"
