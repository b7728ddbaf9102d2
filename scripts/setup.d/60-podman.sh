#!/usr/bin/env bash
# A real container engine for the compose environment and the testcontainers
# tests: Debian's podman with the runc runtime (crun fails on this kind of
# machine with "cgroups in hybrid mode not supported"), debootstrap for the
# locally built base image (no public image registry is reachable here).
#
# /etc/containers/containers.conf gets two settings, merged into whatever the
# file already holds: runc as the runtime, and no default ulimits (with them,
# runc fails to start a container on setrlimit).
#
# The Docker-compatible API service is NOT started here: backbone_harness.containers.engine
# starts it for the command or test that needs it and stops what it started.
#
# Without root nothing is installed; the container tests then skip with the
# engine's own reason.
set -euo pipefail

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

PKGS=(podman runc debootstrap)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "$(id -u)" != 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    say "not root: skipping the container engine (${missing[*]} missing); container tests will skip"
  fi
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  say "installing the container engine: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Merge the two settings into containers.conf (section-aware, keeps everything else).
CONF=/etc/containers/containers.conf
mkdir -p "$(dirname "$CONF")"
touch "$CONF"
changed=$(python3 - "$CONF" <<'PY'
import re, sys

path = sys.argv[1]
wanted = {("containers", "default_ulimits"): "[]", ("engine", "runtime"): '"runc"'}
lines = open(path, encoding="utf-8").read().splitlines()
section = None
done = set()
out = []
for line in lines:
    m = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
    if m:
        section = m.group(1).strip()
    else:
        k = re.match(r"^\s*([A-Za-z0-9_]+)\s*=", line)
        if k and (section, k.group(1)) in wanted:
            key = (section, k.group(1))
            line = f"{key[1]} = {wanted[key]}"
            done.add(key)
    out.append(line)
for (sec, key), value in wanted.items():
    if (sec, key) in done:
        continue
    header = next((i for i, l in enumerate(out) if re.match(rf"^\s*\[{sec}\]\s*$", l)), None)
    if header is None:
        out += ["", f"[{sec}]", f"{key} = {value}"]
    else:
        out.insert(header + 1, f"{key} = {value}")
new = "\n".join(out).lstrip("\n") + "\n"
old = open(path, encoding="utf-8").read()
if new != old:
    open(path, "w", encoding="utf-8").write(new)
    print("changed")
PY
)
if [ -n "$changed" ]; then
  say "configured $CONF (runtime = runc, default_ulimits = [])"
fi
