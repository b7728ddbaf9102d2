#!/usr/bin/env bash
# Build the Pulumi CLI from its Go modules into the backbone cache.
#
# The CLI is in no package registry this project can reach (npm's `pulumi` is
# a downloader of a prebuilt binary), but the Go module proxy serves its
# source. `go install module@version` refuses modules whose go.mod carries
# relative `replace` directives (pkg/v3 has `sdk/v3 => ../sdk`), so this
# script downloads the modules, copies them out of the read-only module cache
# into a build tree, points the replaces at the downloaded siblings and builds.
#
# Idempotent: when the installed binary already reports the wanted version it
# does nothing. GOMODCACHE and GOCACHE make a rebuild fast.
#
# Outputs, under ${BACKBONE_CACHE:-$HOME/.cache/backbone}/pulumi-v$VERSION/:
#   bin/pulumi                          the CLI, version stamped
#   bin/pulumi-resource-pulumi-python   the Python dynamic-provider launcher (from sdk/v3)
#   bin/pulumi-language-python          only when the proxy serves its module
#   BUILD_INFO                          versions, sizes and build times
#   FAILED                              present (with the reason) when the build failed
#   build.log                           the full log of the last build
#
# Exit status: 0 on success, 1 on failure (scripts/setup.d/50-pulumi.sh turns a
# failure into a recorded skip reason instead of failing the set-up).
set -euo pipefail

# pkg/v3 v3.272.0 (the pinned Python SDK's version) is not served by the Go
# module proxy; v3.274.1 is the nearest served release (see docs/pulumi-local.md).
VERSION="${PULUMI_CLI_VERSION:-3.274.1}"
CACHE="${BACKBONE_CACHE:-$HOME/.cache/backbone}"
DEST="$CACHE/pulumi-v$VERSION"
WORK="$CACHE/pulumi-build/v$VERSION"
LOG="$DEST/build.log"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
M_PKG=github.com/pulumi/pulumi/pkg/v3
M_SDK=github.com/pulumi/pulumi/sdk/v3
M_LANG=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
VERSION_VAR=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version

say() { printf '\033[1m[build-pulumi]\033[0m %s\n' "$*"; }

reports_version() { # $1: binary; true when it prints v$VERSION
  [ -x "$1" ] && [ "$("$1" version 2>/dev/null)" = "v$VERSION" ]
}

if reports_version "$DEST/bin/pulumi" && [ -x "$DEST/bin/pulumi-resource-pulumi-python" ] \
    && [ ! -f "$DEST/FAILED" ]; then
  exit 0
fi

mkdir -p "$DEST/bin"
rm -f "$DEST/FAILED"
: >"$LOG"

fail() { # $1: reason, written where the tests and the user find it
  printf '%s\n' "$1" >"$DEST/FAILED"
  say "FAILED: $1 (log: $LOG)"
  exit 1
}

[ -x "$GO" ] || fail "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.24 and rerun scripts/build-pulumi.sh"

dir_of() { # $1: module path, $2: json from `go mod download -json`; prints .Dir
  python3 - "$1" "$2" <<'EOF'
import json, sys
path, text = sys.argv[1], sys.argv[2]
dec, i, found = json.JSONDecoder(), 0, ""
while i < len(text):
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = dec.raw_decode(text, i)
    if obj.get("Path") == path:
        found = obj.get("Dir", "") if not obj.get("Error") else "ERROR: " + obj["Error"]
print(found)
EOF
}

started=$(date +%s)
say "downloading $M_PKG and $M_SDK @v$VERSION through the Go module proxy"
dl_json=$("$GO" mod download -json "$M_PKG@v$VERSION" "$M_SDK@v$VERSION" 2>>"$LOG" || true)
pkg_dir=$(dir_of "$M_PKG" "$dl_json")
sdk_dir=$(dir_of "$M_SDK" "$dl_json")
case "$pkg_dir" in ""|ERROR*) fail "cannot download $M_PKG@v$VERSION: ${pkg_dir:-no answer}";; esac
case "$sdk_dir" in ""|ERROR*) fail "cannot download $M_SDK@v$VERSION: ${sdk_dir:-no answer}";; esac

# The Python language host has its own module; the proxy may not serve it.
lang_json=$("$GO" mod download -json "$M_LANG@v$VERSION" 2>>"$LOG" || true)
lang_dir=$(dir_of "$M_LANG" "$lang_json" | tr '\n\t' '  ')

say "copying the modules into $WORK (the module cache is read-only)"
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r "$pkg_dir" "$WORK/pkg"
cp -r "$sdk_dir" "$WORK/sdk"
chmod -R u+w "$WORK"
(cd "$WORK/pkg" && "$GO" mod edit -replace "$M_SDK=$WORK/sdk")

say "downloading the CLI's dependencies"
t_deps=$(date +%s)
(cd "$WORK/pkg" && "$GO" mod download) >>"$LOG" 2>&1 || fail "go mod download of the CLI's dependencies failed"
deps_s=$(( $(date +%s) - t_deps ))

ldflags="-s -w -X $VERSION_VAR=v$VERSION"
say "building pulumi v$VERSION (a cold build takes several minutes on 2 cores)"
t_cli=$(date +%s)
(cd "$WORK/pkg" && "$GO" build -trimpath -ldflags "$ldflags" -o "$DEST/bin/pulumi.new" ./cmd/pulumi) \
  >>"$LOG" 2>&1 || fail "go build ./cmd/pulumi failed (see $LOG)"
mv -f "$DEST/bin/pulumi.new" "$DEST/bin/pulumi"
cli_s=$(( $(date +%s) - t_cli ))
reports_version "$DEST/bin/pulumi" || fail "the built CLI does not report v$VERSION: $("$DEST/bin/pulumi" version 2>&1 | head -1)"

# Python dynamic providers run as the `pulumi-python` resource plugin: a shell
# launcher that ships in sdk/v3 and runs `python3 -m pulumi.dynamic`.
install -m 0755 "$WORK/sdk/python/dist/pulumi-resource-pulumi-python" "$DEST/bin/"

lang_note="not built: $M_LANG@v$VERSION is not served by the Go module proxy (${lang_dir:-no answer}); Python programs run as Automation API inline programs, whose language runtime is served by the Python SDK itself"
lang_s=-
case "$lang_dir" in
  ""|ERROR*) rm -f "$DEST/bin/pulumi-language-python" ;;
  *)
    mkdir -p "$WORK/sdk/python/cmd"
    rm -rf "$WORK/sdk/python/cmd/pulumi-language-python"
    cp -r "$lang_dir" "$WORK/sdk/python/cmd/pulumi-language-python"
    chmod -R u+w "$WORK/sdk/python/cmd/pulumi-language-python"
    t_lang=$(date +%s)
    if (cd "$WORK/sdk/python/cmd/pulumi-language-python" \
        && "$GO" mod edit -replace "$M_SDK=$WORK/sdk" -replace "$M_PKG=$WORK/pkg" \
        && "$GO" build -trimpath -ldflags "$ldflags" -o "$DEST/bin/pulumi-language-python" .) >>"$LOG" 2>&1; then
      lang_s=$(( $(date +%s) - t_lang ))
      lang_note="built from $M_LANG@v$VERSION"
    else
      lang_note="build of $M_LANG@v$VERSION failed (see $LOG)"
    fi
    ;;
esac

total_s=$(( $(date +%s) - started ))
src_kb=$(du -sk "$pkg_dir" "$sdk_dir" | awk '{s+=$1} END {print s}')
modcache=$("$GO" env GOMODCACHE)
{
  echo "version=v$VERSION"
  echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "go=$("$GO" env GOVERSION)"
  echo "deps_download_seconds=$deps_s"
  echo "cli_build_seconds=$cli_s"
  echo "language_python_build_seconds=$lang_s"
  echo "total_seconds=$total_s"
  echo "pulumi_source_kib=$src_kb"
  echo "gomodcache_kib=$(du -sk "$modcache" 2>/dev/null | cut -f1)"
  echo "pulumi_binary_bytes=$(stat -c %s "$DEST/bin/pulumi")"
  echo "language_python=$lang_note"
} >"$DEST/BUILD_INFO"
say "pulumi v$VERSION installed in $DEST/bin (CLI build ${cli_s}s, total ${total_s}s)"
say "python language host: $lang_note"
