#!/usr/bin/env bash
# Start a local js-ipfs 0.66.1 node for meshd's IPFS tests; idempotent.
#
# Kubo cannot be installed on the build machines (its installers download
# binaries), so the test node is js-ipfs from npm (scripts/ipfs-node/).
#
# Environment (all optional):
#   MESHD_IPFS_DIR       state dir (repo, pid, log); default <repo>/.run/ipfs
#   MESHD_IPFS_API_PORT  RPC API port on 127.0.0.1; default 5001
#   MESHD_IPFS_START_TIMEOUT_S  readiness deadline in seconds; default 60
#
# The node talks to nothing outside this machine: API and swarm listen on
# 127.0.0.1 only, Bootstrap is empty, MDNS/webrtc-star discovery are off, the
# gateway and gRPC endpoints are disabled and preload is off.
#
# On success prints the API multiaddr (e.g. /ip4/127.0.0.1/tcp/5001) on stdout
# and exits 0; diagnostics go to stderr.  On failure prints the log tail and
# exits non-zero.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
node_dir="$here/ipfs-node"
state_dir="${MESHD_IPFS_DIR:-$root/.run/ipfs}"
port="${MESHD_IPFS_API_PORT:-5001}"
deadline_s="${MESHD_IPFS_START_TIMEOUT_S:-60}"
repo="$state_dir/repo"
pid_file="$state_dir/daemon.pid"
log_file="$state_dir/daemon.log"
api_addr="/ip4/127.0.0.1/tcp/$port"
api_url="http://127.0.0.1:$port/api/v0"

say() { echo "start-ipfs: $*" >&2; }

case "$port" in
  ''|*[!0-9]*) say "MESHD_IPFS_API_PORT must be a number, got '$port'"; exit 2 ;;
esac

command -v node >/dev/null || { say "node is not installed (need Node >= 18)"; exit 2; }
command -v curl >/dev/null || { say "curl is not installed"; exit 2; }

# kill -0 succeeds on a zombie (a killed daemon whose parent has not reaped it).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

api_answers() {
  curl -fsS -m 2 -X POST "$api_url/id" >/dev/null 2>&1
}

mkdir -p "$state_dir"

# Already running under our pid file and answering: nothing to do.
if [[ -f "$pid_file" ]] && alive "$(cat "$pid_file")"; then
  if api_answers; then
    say "already running (pid $(cat "$pid_file"))"
    echo "$api_addr"
    exit 0
  fi
  say "pid $(cat "$pid_file") is alive but $api_url does not answer yet; waiting"
else
  rm -f "$pid_file"
  if api_answers; then
    # Something else owns the port; refuse rather than talk to a stranger's repo.
    say "port $port already answers IPFS RPC but is not our daemon ($pid_file missing)"
    say "stop it or set MESHD_IPFS_API_PORT"
    exit 1
  fi

  if [[ ! -d "$node_dir/node_modules/ipfs" ]]; then
    say "installing js-ipfs (npm ci in $node_dir)"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi

  export NODE_OPTIONS="--require $node_dir/polyfill.cjs${NODE_OPTIONS:+ $NODE_OPTIONS}"
  export IPFS_PATH="$repo"
  jsipfs="$node_dir/node_modules/.bin/jsipfs"

  # Our daemon is not running, so a repo.lock (js-ipfs takes it with mkdir)
  # or api file left in the repo is stale: a SIGKILLed daemon leaves both, and
  # the lock would make the new daemon exit at once.
  rm -rf "$repo/repo.lock" "$repo/api"

  if [[ ! -f "$repo/config" ]]; then
    say "initialising repo at $repo"
    rm -rf "$repo"
    "$jsipfs" init --profile test --emptyRepo >>"$log_file" 2>&1 \
      || { say "jsipfs init failed"; tail -n 40 "$log_file" >&2; exit 1; }
  fi

  # Rewrite the network config on every start so a changed port takes effect
  # and no earlier edit can leave the node reaching outside loopback.
  node - "$repo/config" "$port" <<'JS' || { say "could not write $repo/config"; exit 1; }
const fs = require('fs')
const [file, port] = process.argv.slice(2)
const c = JSON.parse(fs.readFileSync(file, 'utf8'))
c.Addresses = Object.assign(c.Addresses || {}, {
  API: `/ip4/127.0.0.1/tcp/${port}`,
  Swarm: ['/ip4/127.0.0.1/tcp/0'],
  Announce: [],
  NoAnnounce: [],
  Gateway: [],   // no HTTP gateway
  RPC: '',       // falsy -> ipfs-daemon does not start its gRPC server
  Delegates: []
})
c.Bootstrap = []
c.Discovery = Object.assign(c.Discovery || {}, {
  MDNS: { Enabled: false, Interval: 10 },
  webRTCStar: { Enabled: false }
})
c.Swarm = Object.assign(c.Swarm || {}, { DisableNatPortMap: true })
c.Routing = { Type: 'none' }
const tmp = file + '.tmp'
fs.writeFileSync(tmp, JSON.stringify(c, null, 2))
fs.renameSync(tmp, file)  // atomic: a crash leaves the old or the new config, never half
JS

  # Detach: setsid so the daemon outlives this shell and the test session.
  say "starting daemon (log $log_file)"
  {
    echo "---- $(date -u +%FT%TZ) start-ipfs: daemon starting on $api_addr"
  } >>"$log_file"
  setsid "$jsipfs" daemon --enable-preload=false </dev/null >>"$log_file" 2>&1 &
  echo $! >"$pid_file"
fi

pid="$(cat "$pid_file")"
end=$(( $(date +%s) + deadline_s ))
until api_answers; do
  if ! alive "$pid"; then
    say "daemon (pid $pid) exited before its API answered; log tail:"
    tail -n 40 "$log_file" >&2
    rm -f "$pid_file"
    exit 1
  fi
  if (( $(date +%s) >= end )); then
    say "API $api_url did not answer within ${deadline_s}s; log tail:"
    tail -n 40 "$log_file" >&2
    exit 1
  fi
  sleep 0.2
done
say "ready (pid $pid)"
echo "$api_addr"
