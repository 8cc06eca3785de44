#!/usr/bin/env bash
# Stop the js-ipfs test node started by start-ipfs.sh; idempotent.
#
# Environment: MESHD_IPFS_DIR (same default as start-ipfs.sh),
# MESHD_IPFS_STOP_TIMEOUT_S (default 20) before SIGKILL.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
state_dir="${MESHD_IPFS_DIR:-$root/.run/ipfs}"
pid_file="$state_dir/daemon.pid"
deadline_s="${MESHD_IPFS_STOP_TIMEOUT_S:-20}"

say() { echo "stop-ipfs: $*" >&2; }

# kill -0 succeeds on a zombie (a dead daemon whose parent has not reaped it).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

if [[ ! -f "$pid_file" ]]; then
  say "not running (no $pid_file)"
  exit 0
fi
pid="$(cat "$pid_file")"
if ! alive "$pid"; then
  say "not running (stale pid $pid)"
  rm -f "$pid_file"
  exit 0
fi

# SIGTERM lets js-ipfs close its repo (releases repo.lock cleanly).
kill -TERM "$pid"
end=$(( $(date +%s) + deadline_s ))
while alive "$pid"; do
  if (( $(date +%s) >= end )); then
    say "pid $pid ignored SIGTERM for ${deadline_s}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
    break
  fi
  sleep 0.1
done
rm -f "$pid_file"
say "stopped (pid $pid)"
