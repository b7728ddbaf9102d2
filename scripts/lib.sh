# Shared by scripts/setup.sh and the steps in scripts/setup.d/ (sourced, not run).
# say: one progress line. run_logged: run a long command with its output in a
# log, printing a heartbeat (elapsed time and the log's path) every 15 s, and
# the log's tail if it fails.

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# run_logged WHAT LOG COMMAND [ARGS...]
run_logged() {
  local what=$1 log=$2
  shift 2
  local start=$SECONDS next=15 rc
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - start)) -ge "$next" ]; then
      say "… still $what: $((SECONDS - start)) s so far (log: $log)"
      next=$((next + 15))
    fi
  done
  wait "$pid" && rc=0 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$log" >&2
    echo "setup: $what failed (exit $rc); the whole log is $log" >&2
  elif [ $((SECONDS - start)) -ge 2 ]; then
    say "$what: done in $((SECONDS - start)) s"
  fi
  return "$rc"
}

# root_hint PACKAGES...: the exact command a non-root user should paste.
root_hint() {
  echo "sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $*'"
}
