#!/usr/bin/env bash
# One idempotent set-up for a fresh machine of this kind; `make demo` and
# `make test` both run it. Each step checks before it installs, and downloads
# are cached (pip's cache, ~/.m2, the Go module cache), so a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMP_DIR=.venv/.stamps

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# --- Debian packages: services the local environment runs --------------------
APT_PKGS=(redis-server redis-sentinel redis-tools prometheus prometheus-redis-exporter prometheus-postgres-exporter prometheus-alertmanager iproute2 etcd-server)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
# Kafka 4 needs Java 17+; its jars are resolved with Maven (scripts/setup.d/10-kafka.sh).
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}' || true)
{ [ -n "$java_major" ] && [ "${java_major%%.*}" -ge 17 ] 2>/dev/null; } || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: cannot install ${missing[*]} without root; run this, then make setup again:" >&2
    echo "  $(root_hint "${missing[*]}")" >&2
    exit 2
  fi
  say "installing Debian packages: ${missing[*]}"
  mkdir -p .venv
  run_logged "apt-get update" /tmp/backbone-apt-update.log apt-get update -q
  run_logged "installing ${#missing[@]} Debian packages" /tmp/backbone-apt-install.log \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian starts a system Redis, PostgreSQL, Prometheus and etcd where an init runs
  # its services. The harness never uses them (every stack starts its own on
  # free loopback ports), and they would hold the default ports and memory, so
  # the ones this step just installed are stopped and disabled. Services that
  # were installed before are not ours to touch.
  bash scripts/stop-system-services.sh "${missing[@]}"
fi

# --- Python: .venv with pinned dependencies ----------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
mkdir -p "$STAMP_DIR"
req_hash=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$STAMP_DIR/pip-$req_hash" ]; then
  say "installing Python dependencies (pinned by constraints.txt)"
  # Build-backend chatter goes to a log; on failure its tail is shown.
  run_logged "upgrading pip" .venv/pip-install.log .venv/bin/pip install -q --upgrade pip || exit 2
  run_logged "installing the Python dependencies" .venv/pip-install.log \
    .venv/bin/pip install -q -c constraints.txt -e ".[dev]" || exit 2
  rm -f "$STAMP_DIR"/pip-*; touch "$STAMP_DIR/pip-$req_hash"
fi

# Pulumi's Python dynamic providers resolve `virtualenv` relative to `main:`
# (backbone_infra/), not to Pulumi.yaml (pulumi/pulumi#7061); a link makes both work.
[ -e backbone_infra/.venv ] || ln -s ../.venv backbone_infra/.venv

# --- Further components (each script is idempotent and caches its downloads) -
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  bash "$step"
done
say "ready"
