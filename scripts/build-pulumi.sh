#!/usr/bin/env bash
# Build the Pulumi CLI and the Python language host from their Go modules into
# the backbone cache.
#
# Neither is in a package registry this project can reach (npm's `pulumi` is a
# downloader of a prebuilt binary), but the Go module proxy serves their
# source. `go install module@version` refuses modules whose go.mod carries
# `replace` directives (pkg/v3 has `sdk/v3 => ../sdk`), so this script
# downloads the modules, copies them out of the read-only module cache into a
# build tree, points the replaces at the downloaded siblings and builds.
#
# Idempotent, in two independent parts (CLI; language host): each is skipped
# when its installed binary is already the wanted version. GOMODCACHE and
# GOCACHE make a rebuild fast.
#
# Outputs, under ${BACKBONE_CACHE:-$HOME/.cache/backbone}/pulumi-v$VERSION/:
#   bin/pulumi                          the CLI, version stamped
#   bin/pulumi-resource-pulumi-python   the Python dynamic-provider launcher (from sdk/v3)
#   bin/pulumi-language-python          the Python language host (see LANG_FALLBACK below)
#   bin/pulumi-language-python-exec     the host's program runner (from sdk/v3 v$VERSION)
#   BUILD_INFO                          versions, sizes and build times
#   FAILED                              present (with the reason) when the CLI build failed
#   build.log                           the full log of the last build
#
# Exit status: 0 on success, 1 when the CLI failed to build (a language host
# that fails is recorded in BUILD_INFO, not fatal: the Automation API does not
# need it). scripts/setup.d/50-pulumi.sh turns a failure into a recorded skip.
set -euo pipefail

# The CLI is built at the pinned Python SDK's version (`pulumi==` in
# constraints.txt), so engine and SDK match exactly. The pin is chosen among the
# versions both PyPI and the Go module proxy serve (see docs/pulumi-local.md).
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PINNED="$(sed -n 's/^pulumi==//p' "$REPO/constraints.txt")"
VERSION="${PULUMI_CLI_VERSION:-$PINNED}"
[ -n "$VERSION" ] || { echo "build-pulumi: no pulumi== pin in $REPO/constraints.txt" >&2; exit 1; }
if [ "${1:-}" = "--print-version" ]; then echo "$VERSION"; exit 0; fi
# The proxy serves no version of the language host's own module
# (sdk/python/cmd/pulumi-language-python/v3). Until v3.68.0 the host was part
# of the sdk/v3 module itself; v3.68.0 is the newest such release it serves.
LANG_FALLBACK="${PULUMI_LANG_FALLBACK_VERSION:-3.68.0}"
CACHE="${BACKBONE_CACHE:-$HOME/.cache/backbone}"
DEST="$CACHE/pulumi-v$VERSION"
WORK="$CACHE/pulumi-build/v$VERSION"
LOG="$DEST/build.log"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
M_PKG=github.com/pulumi/pulumi/pkg/v3
M_SDK=github.com/pulumi/pulumi/sdk/v3
M_LANG=github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3
VERSION_VAR=github.com/pulumi/pulumi/sdk/v3/go/common/version.Version
LANG_STAMP="$DEST/bin/.pulumi-language-python.version"

say() { printf '\033[1m[build-pulumi]\033[0m %s\n' "$*"; }

reports_version() { # $1: binary; true when it prints v$VERSION
  [ -x "$1" ] && [ "$("$1" version 2>/dev/null)" = "v$VERSION" ]
}
cli_ok() {
  reports_version "$DEST/bin/pulumi" && [ -x "$DEST/bin/pulumi-resource-pulumi-python" ] \
    && [ ! -f "$DEST/FAILED" ]
}
lang_ok() { [ -x "$DEST/bin/pulumi-language-python" ] && [ -f "$LANG_STAMP" ]; }

# One build at a time per cache: a second run (another make target, another
# checkout) waits here, then finds the binaries in place.
mkdir -p "$CACHE"
exec 9>"$CACHE/pulumi-build.lock"
flock 9

cli_ok && lang_ok && exit 0

mkdir -p "$DEST/bin"
: >"$LOG"

fail() { # $1: reason, written where the tests and the user find it
  printf '%s\n' "$1" >"$DEST/FAILED"
  say "FAILED: $1 (log: $LOG)"
  exit 1
}

[ -x "$GO" ] || fail "no Go toolchain found (looked for 'go' on PATH and /usr/local/go/bin/go); install Go >= 1.24 and rerun scripts/build-pulumi.sh"

dir_of() { # $1: module path, $2: json from `go mod download -json`; prints .Dir or ERROR: ...
  python3 - "$1" "$2" <<'EOF' | tr '\n\t' '  ' | sed 's/ *$//'
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
download() { # $1: module@version; prints its directory or ERROR: ...
  dir_of "${1%@*}" "$("$GO" mod download -json "$1" 2>>"$LOG" || true)"
}
seconds_since() { echo $(( $(date +%s) - $1 )); }

started=$(date +%s)
say "downloading $M_SDK@v$VERSION through the Go module proxy"
sdk_dir=$(download "$M_SDK@v$VERSION")
case "$sdk_dir" in ""|ERROR*) fail "cannot download $M_SDK@v$VERSION: ${sdk_dir:-no answer}";; esac
mkdir -p "$WORK"
if [ ! -f "$WORK/sdk/go.mod" ]; then
  rm -rf "$WORK/sdk"
  cp -r "$sdk_dir" "$WORK/sdk"
  chmod -R u+w "$WORK/sdk"
fi
ldflags="-s -w -X $VERSION_VAR=v$VERSION"

# --- the CLI ------------------------------------------------------------------
deps_s=- cli_s=- pkg_dir=
if cli_ok; then
  say "pulumi v$VERSION already installed"
else
  rm -f "$DEST/FAILED"
  say "downloading $M_PKG@v$VERSION"
  pkg_dir=$(download "$M_PKG@v$VERSION")
  case "$pkg_dir" in ""|ERROR*) fail "cannot download $M_PKG@v$VERSION: ${pkg_dir:-no answer}";; esac
  say "copying it into $WORK (the module cache is read-only)"
  rm -rf "$WORK/pkg"
  cp -r "$pkg_dir" "$WORK/pkg"
  chmod -R u+w "$WORK/pkg"
  (cd "$WORK/pkg" && "$GO" mod edit -replace "$M_SDK=$WORK/sdk")

  # Only the modules ./cmd/pulumi imports (~250 MiB of zips), not the whole
  # graph `go mod download` would fetch (test and codegen dependencies, >1 GiB).
  say "downloading the CLI's dependencies"
  t=$(date +%s)
  (cd "$WORK/pkg" && "$GO" list -deps ./cmd/pulumi >/dev/null) >>"$LOG" 2>&1 \
    || fail "downloading the CLI's dependencies failed (go list -deps ./cmd/pulumi, see $LOG)"
  deps_s=$(seconds_since "$t")

  say "building pulumi v$VERSION (a cold build takes about 10 minutes on 2 cores)"
  t=$(date +%s)
  (cd "$WORK/pkg" && "$GO" build -trimpath -ldflags "$ldflags" -o "$DEST/bin/pulumi.new" ./cmd/pulumi) \
    >>"$LOG" 2>&1 || fail "go build ./cmd/pulumi of $M_PKG@v$VERSION failed (see $LOG)"
  mv -f "$DEST/bin/pulumi.new" "$DEST/bin/pulumi"
  cli_s=$(seconds_since "$t")
  reports_version "$DEST/bin/pulumi" || fail "the built CLI does not report v$VERSION: $("$DEST/bin/pulumi" version 2>&1 | head -1)"
  # Python dynamic providers run as the `pulumi-python` resource plugin: a shell
  # launcher that ships in sdk/v3 and runs `$PULUMI_PYTHON_CMD -m pulumi.dynamic`.
  install -m 0755 "$WORK/sdk/python/dist/pulumi-resource-pulumi-python" "$DEST/bin/"
fi

# --- the Python language host -------------------------------------------------
lang_s=-
build_lang() { # $1: module dir to build in, $2: package, $3: version stamp; extra -replace args follow
  local dir=$1 pkg=$2 ver=$3
  shift 3
  local t
  t=$(date +%s)
  if (cd "$dir" && { [ $# -eq 0 ] || "$GO" mod edit "$@"; } \
      && "$GO" build -trimpath -ldflags "-s -w -X $VERSION_VAR=v$ver" \
           -o "$DEST/bin/pulumi-language-python" "$pkg") >>"$LOG" 2>&1; then
    install -m 0755 "$WORK/sdk/python/cmd/pulumi-language-python-exec" "$DEST/bin/"
    lang_s=$(seconds_since "$t")
    return 0
  fi
  return 1
}
if lang_ok; then
  lang_note=$(cat "$LANG_STAMP")
else
  rm -f "$DEST/bin/pulumi-language-python" "$LANG_STAMP"
  lang_dir=$(download "$M_LANG@v$VERSION")
  case "$lang_dir" in
    ""|ERROR*)
      say "the language host's module is not served ($M_LANG@v$VERSION); building the host of sdk/v3@v$LANG_FALLBACK"
      fb_dir=$(download "$M_SDK@v$LANG_FALLBACK")
      lang_note="not built: $M_LANG@v$VERSION is not served and $M_SDK@v$LANG_FALLBACK could not be downloaded ($fb_dir)"
      case "$fb_dir" in
        ""|ERROR*) ;;
        *)
          rm -rf "$WORK/lang-sdk"
          if cp -r "$fb_dir" "$WORK/lang-sdk" && chmod -R u+w "$WORK/lang-sdk" \
              && build_lang "$WORK/lang-sdk" ./python/cmd/pulumi-language-python "$LANG_FALLBACK"; then
            lang_note="v$LANG_FALLBACK (fallback: $M_LANG is not served; built from $M_SDK@v$LANG_FALLBACK, runs programs with \$PULUMI_PYTHON_CMD or python3 on PATH)"
          else
            lang_note="build of the v$LANG_FALLBACK host failed (see $LOG)"
          fi
          ;;
      esac
      ;;
    *)
      rm -rf "$WORK/sdk/python/cmd/pulumi-language-python"
      if cp -r "$lang_dir" "$WORK/sdk/python/cmd/pulumi-language-python" \
          && chmod -R u+w "$WORK/sdk/python/cmd/pulumi-language-python" \
          && { [ -d "$WORK/pkg" ] || { cp -r "$(download "$M_PKG@v$VERSION")" "$WORK/pkg" && chmod -R u+w "$WORK/pkg"; }; } \
          && build_lang "$WORK/sdk/python/cmd/pulumi-language-python" . "$VERSION" \
          -replace "$M_SDK=$WORK/sdk" -replace "$M_PKG=$WORK/pkg"; then
        lang_note="v$VERSION (built from $M_LANG@v$VERSION)"
      else
        lang_note="build of $M_LANG@v$VERSION failed (see $LOG)"
      fi
      ;;
  esac
  [ -x "$DEST/bin/pulumi-language-python" ] && printf '%s\n' "$lang_note" >"$LANG_STAMP"
fi

# --- record what was built (a part skipped this run keeps its earlier figures) --
INFO="$DEST/BUILD_INFO"
touch "$INFO"
record() { # $1: key, $2: value; "-" (not run this time) keeps the recorded value
  [ "$2" = "-" ] && grep -q "^$1=" "$INFO" && return 0
  grep -v "^$1=" "$INFO" >"$INFO.tmp" || true
  printf '%s=%s\n' "$1" "$2" >>"$INFO.tmp"
  mv -f "$INFO.tmp" "$INFO"
}
total_s=$(seconds_since "$started")
record version "v$VERSION"
record go "$("$GO" env GOVERSION)"
if [ "$cli_s" != - ]; then
  record cli_built_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  record cli_deps_download_seconds "$deps_s"
  record cli_build_seconds "$cli_s"
  record cli_script_seconds "$total_s"
  record pulumi_pkg_source_kib "$(du -sk "$pkg_dir" | cut -f1)"
  record gomodcache_kib_after_cli "$(du -sk "$("$GO" env GOMODCACHE)" 2>/dev/null | cut -f1)"
  record pulumi_binary_bytes "$(stat -c %s "$DEST/bin/pulumi")"
fi
record language_python_build_seconds "$lang_s"
record language_python "$lang_note"
say "pulumi v$VERSION in $DEST/bin (CLI build ${cli_s}s, total ${total_s}s)"
say "python language host: $lang_note"
