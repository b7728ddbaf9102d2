#!/usr/bin/env bash
# One idempotent set-up for a fresh machine of this kind; `make demo` and
# `make test` both run it. Each step checks before it installs, and downloads
# are cached (pip's cache, ~/.m2, the Go module cache), so a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMP_DIR=.venv/.stamps

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup: cannot install $1 without root; run: sudo $2" >&2
    exit 2
  fi
}

# --- Debian packages: services the local environment runs --------------------
APT_PKGS=(redis-server redis-sentinel prometheus prometheus-redis-exporter prometheus-postgres-exporter prometheus-alertmanager iproute2)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}" "apt-get update && apt-get install -y ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # Debian may start system services on install where an init runs them; the
  # harness never uses them, and never kills what it did not start.
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
  if ! { .venv/bin/pip install -q --upgrade pip \
        && .venv/bin/pip install -q -c constraints.txt -e ".[dev]"; } >.venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    echo "setup: installing the Python dependencies failed (log: .venv/pip-install.log)" >&2
    exit 2
  fi
  rm -f "$STAMP_DIR"/pip-*; touch "$STAMP_DIR/pip-$req_hash"
fi

# Pulumi's Python dynamic providers resolve `virtualenv` relative to `main:`
# (infra/), not to Pulumi.yaml (pulumi/pulumi#7061); a link makes both work.
[ -e infra/.venv ] || ln -s ../.venv infra/.venv

# --- Further components (each script is idempotent and caches its downloads) -
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  bash "$step"
done
say "ready"
