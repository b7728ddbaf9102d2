#!/usr/bin/env bash
# Stop and disable the system services that Debian starts when these packages
# are installed (arguments: the packages just installed). Local stacks start
# their own processes on free loopback ports and never use the system ones.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
declare -A SERVICE_OF=(
  [redis-server]=redis-server [redis-sentinel]=redis-sentinel [prometheus]=prometheus
  [prometheus-redis-exporter]=prometheus-redis-exporter
  [prometheus-postgres-exporter]=prometheus-postgres-exporter
  [prometheus-alertmanager]=prometheus-alertmanager [postgresql-15]=postgresql
  [etcd-server]=etcd
)
for pkg in "$@"; do
  svc=${SERVICE_OF[$pkg]:-}
  [ -n "$svc" ] || continue
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet "$svc" 2>/dev/null || systemctl is-active --quiet "$svc" 2>/dev/null; then
      say "stopping and disabling the system $svc that installing $pkg started: local stacks run their own"
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  elif [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
    say "stopping the system $svc that installing $pkg started: local stacks run their own"
    "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
exit 0
