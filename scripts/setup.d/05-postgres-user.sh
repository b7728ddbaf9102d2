#!/usr/bin/env bash
# PostgreSQL refuses to run as root. Local stacks run their postgres processes
# as a dedicated, login-less system user; this creates it once (idempotent).
set -euo pipefail
PG_USER=${BACKBONE_PG_USER:-backbone-pg}

if id -u "$PG_USER" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  # Not root: the harness then runs PostgreSQL as the current (non-root) user.
  exit 0
fi
printf '\033[1m[setup]\033[0m creating system user %s for local PostgreSQL\n' "$PG_USER"
useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
  --user-group "$PG_USER"
