#!/usr/bin/env bash
# Toxiproxy, the TCP proxy the network-fault drills put between the clients and
# a service (cut the path, add latency). Not in Debian; its server is a Go
# module, built once with the Go toolchain into a cache directory outside the
# repository (~50 s cold; Go's module cache keeps the sources). A versioned
# binary name makes a second run a no-op. Without Go the step is skipped and
# the network drills say how to get it.
set -euo pipefail

VERSION="v2.5.0"
DIR="${BACKBONE_CACHE:-$HOME/.cache/backbone}/toxiproxy"
BIN="$DIR/toxiproxy-server-$VERSION"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

[ -x "$BIN" ] && exit 0
GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
if [ -z "$GO" ]; then
  say "skipping Toxiproxy: no Go toolchain (install Go to run the network-partition and network-latency drills)"
  exit 0
fi

say "building Toxiproxy $VERSION into $DIR"
mkdir -p "$DIR/bin"
if ! GOBIN="$DIR/bin" "$GO" install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" \
    >"$DIR/build.log" 2>&1; then
  say "could not build Toxiproxy (see $DIR/build.log); the network drills will say so"
  exit 0
fi
mv "$DIR/bin/server" "$BIN"
