#!/usr/bin/env bash
# Opt-in: build the Kubernetes provider plugin (pulumi-resource-kubernetes) from
# its Go module, the same way scripts/build-pulumi.sh builds the CLI, into the
# CLI's bin directory. Used to render the kubernetes target's manifests without
# a cluster (`kubernetes:renderYamlToDirectory`,
# tests/integration/test_pulumi_kubernetes_render.py, which skips without it).
# Not part of `make setup`: a cold build takes ~15 minutes on 2 cores.
#
# The proxy serves the provider module only as a pseudo-version (January 2026);
# its go.mod replaces sdk/v4 with `../sdk` (pointed here at sdk/v4@v4.32.0, the
# newest served), and pins pulumi pkg/sdk v3.215.0, kept by explicit replaces
# because sdk/v4@v4.32.0 would otherwise raise sdk/v3 past what pkg v3.215.0
# compiles against. The plugin reports version 4.34.2, the pinned Python SDK's.
set -euo pipefail
PROVIDER="${PULUMI_K8S_PROVIDER_VERSION:-v4.0.0-20260115033456-f47bc2d6f199}"
K8S_SDK="${PULUMI_K8S_SDK_VERSION:-v4.32.0}"
PULUMI_PINNED=v3.215.0
REPORTS="${PULUMI_K8S_REPORTED_VERSION:-4.34.2}"
CLI_VERSION="${PULUMI_CLI_VERSION:-$(sed -n 's/^pulumi==//p' "$(cd "$(dirname "$0")/.." && pwd)/constraints.txt")}"
CACHE="${BACKBONE_CACHE:-$HOME/.cache/backbone}"
DEST="$CACHE/pulumi-v$CLI_VERSION/bin"
WORK="$CACHE/pulumi-build/kubernetes-$PROVIDER"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
STAMP="$DEST/.pulumi-resource-kubernetes.version"
say() { printf '\033[1m[build-pulumi-kubernetes]\033[0m %s\n' "$*"; }

[ -x "$DEST/pulumi-resource-kubernetes" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$PROVIDER $REPORTS" ] && exit 0
mkdir -p "$DEST" "$WORK"
dir_of() { "$GO" mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'; }
say "downloading github.com/pulumi/pulumi-kubernetes/provider/v4@$PROVIDER and sdk/v4@$K8S_SDK"
rm -rf "$WORK/provider" "$WORK/sdk"
cp -r "$(dir_of "github.com/pulumi/pulumi-kubernetes/provider/v4@$PROVIDER")" "$WORK/provider"
cp -r "$(dir_of "github.com/pulumi/pulumi-kubernetes/sdk/v4@$K8S_SDK")" "$WORK/sdk"
chmod -R u+w "$WORK"
cd "$WORK/provider"
"$GO" mod edit -replace "github.com/pulumi/pulumi-kubernetes/sdk/v4=$WORK/sdk" \
  -replace "github.com/pulumi/pulumi/sdk/v3=github.com/pulumi/pulumi/sdk/v3@$PULUMI_PINNED" \
  -replace "github.com/pulumi/pulumi/pkg/v3=github.com/pulumi/pulumi/pkg/v3@$PULUMI_PINNED"
export GOFLAGS=-mod=mod
# The plugin embeds its schema stamped with its version (the upstream Makefile's step).
(cd cmd/pulumi-resource-kubernetes && VERSION="$REPORTS" "$GO" run generate.go)
say "building pulumi-resource-kubernetes (about 15 minutes cold on 2 cores)"
t=$(date +%s)
"$GO" build -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$REPORTS" \
  -o "$DEST/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes
printf '%s %s\n' "$PROVIDER" "$REPORTS" >"$STAMP"
say "installed $DEST/pulumi-resource-kubernetes in $(( $(date +%s) - t ))s"
