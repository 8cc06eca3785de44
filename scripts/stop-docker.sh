#!/usr/bin/env bash
# Stop the project-local dockerd started by scripts/start-docker.sh.
#
# Sends SIGTERM to the pid in its pidfile, waits for it to exit (SIGKILL after
# MESHD_DOCKER_STOP_TIMEOUT seconds, default 30), then removes the exec root
# and the socket. The data root (images) is kept, so the next start is fast.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${MESHD_DOCKER_DIR:-$REPO/.run/docker}"
PIDFILE="$DIR/dockerd.pid"
TIMEOUT="${MESHD_DOCKER_STOP_TIMEOUT:-30}"

say() { echo "stop-docker: $*" >&2; }

pid=""
[ -f "$PIDFILE" ] && pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd pid $pid"
    kill -TERM "$pid"
    deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "dockerd pid $pid still alive after ${TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    say "dockerd stopped"
else
    say "no dockerd running from $DIR"
fi

# Anything left under the exec root (runtime state, shim sockets) is stale now.
# Unmount first: a netns or shm mount left behind would make rm fail.
if [ -d "$DIR/exec" ]; then
    mounts="$(grep -o " $DIR/exec[^ ]*" /proc/mounts 2>/dev/null | sort -r || true)"
    for m in $mounts; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$DIR/exec"
fi
rm -f "$PIDFILE" "$DIR/docker.sock"
say "cleaned $DIR/exec"
