#!/usr/bin/env bash
# Start a project-local Docker engine for tests and build the example images.
#
# Idempotent: safe to run again and again. All state (data root, exec root,
# pidfile, socket, log) lives under $MESHD_DOCKER_DIR (default: .run/docker in
# the repo root), so it never touches a system-wide dockerd.
#
# On success the last line printed is
#     export DOCKER_HOST=unix://<socket>
# so callers can   eval "$(scripts/start-docker.sh | tail -n 1)".
# On failure (no dockerd possible here: no privileges, no overlay2, ...) it
# says why on stderr and exits non-zero.
#
# Environment:
#   MESHD_DOCKER_DIR          state directory (default <repo>/.run/docker)
#   MESHD_DOCKER_START_TIMEOUT seconds to wait for the daemon (default 60)
#   MESHD_DOCKER_SKIP_IMAGES  set to 1 to skip building the example images
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${MESHD_DOCKER_DIR:-$REPO/.run/docker}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# unix socket paths are limited to 108 bytes; keep the exec root short too
# (containerd shim sockets live under it).
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
DATA="$DIR/data"
EXEC="$DIR/exec"
TIMEOUT="${MESHD_DOCKER_START_TIMEOUT:-60}"
HOST="unix://$SOCK"
EXAMPLES="$REPO/engines/examples/docker"

say() { echo "start-docker: $*" >&2; }
die() { echo "start-docker: ERROR: $*" >&2; exit 1; }

if [ "${#SOCK}" -gt 100 ]; then
    die "socket path too long for a unix socket (${#SOCK} bytes): $SOCK; set MESHD_DOCKER_DIR to a shorter path"
fi

# --- 1. packages -------------------------------------------------------------
need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v docker >/dev/null 2>&1 || need_pkgs+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 \
    && ! ldd /bin/busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need ${need_pkgs[*]} but not root; install them first"
    export DEBIAN_FRONTEND=noninteractive
    say "installing ${need_pkgs[*]}"
    if ! apt-get install -y --no-install-recommends "${need_pkgs[@]}" >"$DIR/apt.log" 2>&1; then
        say "install failed; running apt-get update first"
        apt-get update >>"$DIR/apt.log" 2>&1 || die "apt-get update failed (see $DIR/apt.log)"
        apt-get install -y --no-install-recommends "${need_pkgs[@]}" >>"$DIR/apt.log" 2>&1 \
            || die "apt-get install ${need_pkgs[*]} failed (see $DIR/apt.log)"
    fi
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd not found after install"

# Prefer the CLI that ships with the daemon (docker.io) when both exist.
if [ -x /usr/bin/docker ]; then DOCKER_CLI=/usr/bin/docker; else DOCKER_CLI="$(command -v docker)"; fi
dk() { "$DOCKER_CLI" -H "$HOST" "$@"; }

answers() { dk info >/dev/null 2>&1; }

# --- 2. daemon -----------------------------------------------------------------
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid; pid="$(cat "$PIDFILE" 2>/dev/null)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if pid="$(running_pid)" && answers; then
    say "dockerd already running (pid $pid, socket $SOCK)"
else
    if pid="$(running_pid)"; then
        say "dockerd pid $pid alive but the socket does not answer; waiting for it"
    else
        [ "$(id -u)" = 0 ] || die "dockerd needs root here (uid $(id -u))"
        grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null \
            || die "the kernel has no overlay filesystem (overlay2 storage driver impossible)"
        rm -f "$PIDFILE" "$SOCK"
        mkdir -p "$DATA" "$EXEC"
        say "starting dockerd (data $DATA, log $LOG)"
        # setsid: the daemon must outlive this script and its session.
        setsid dockerd \
            --storage-driver=overlay2 \
            --iptables=false --ip6tables=false --bridge=none \
            --data-root "$DATA" --exec-root "$EXEC" --pidfile "$PIDFILE" \
            -H "$HOST" \
            >>"$LOG" 2>&1 </dev/null &
        launcher=$!
    fi
    deadline=$((SECONDS + TIMEOUT))
    until answers; do
        if [ -n "${launcher:-}" ] && ! kill -0 "$launcher" 2>/dev/null; then
            echo "---- tail of $LOG ----" >&2; tail -n 30 "$LOG" >&2
            die "dockerd exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "---- tail of $LOG ----" >&2; tail -n 30 "$LOG" >&2
            die "dockerd did not answer on $SOCK within ${TIMEOUT}s"
        fi
        sleep 0.2
    done
    driver="$(dk info --format '{{.Driver}}' 2>/dev/null || true)"
    [ "$driver" = overlay2 ] || die "dockerd runs with storage driver '$driver', not overlay2"
    say "dockerd up (pid $(cat "$PIDFILE"), socket $SOCK)"
fi

# --- 3. example images -------------------------------------------------------
# The images carry a hash of their sources, so editing an engine script makes
# the next run rebuild them.
SRC_HASH="$(cat "$EXAMPLES"/Dockerfile "$EXAMPLES"/*.sh "$EXAMPLES"/*.awk /bin/busybox | sha256sum | cut -c1-16)"
build_target() {
    local target="$1" tag="$2" ctx have
    have="$(dk image inspect --format '{{index .Config.Labels "org.meshd.examples-hash"}}' "$tag" 2>/dev/null || true)"
    if [ "$have" = "$SRC_HASH" ]; then
        say "image $tag present (sources $SRC_HASH)"
        return
    fi
    say "building $tag (target $target, sources $SRC_HASH)"
    ctx="$(mktemp -d)"
    cp "$EXAMPLES"/Dockerfile "$EXAMPLES"/*.sh "$EXAMPLES"/*.awk "$ctx"/
    cp /bin/busybox "$ctx/busybox"
    if ! DOCKER_BUILDKIT=0 dk build -q --label "org.meshd.examples-hash=$SRC_HASH" --target "$target" -t "$tag" "$ctx" >"$DIR/build-$target.log" 2>&1; then
        cat "$DIR/build-$target.log" >&2
        rm -rf "$ctx"
        die "building $tag failed"
    fi
    rm -rf "$ctx"
    BUILT=1
}
BUILT=0
if [ "${MESHD_DOCKER_SKIP_IMAGES:-0}" != 1 ]; then
    build_target noop meshd/noop:1
    build_target wordcount meshd/wordcount:1
    # Drop the images these builds replaced (this daemon is ours alone).
    [ "$BUILT" = 1 ] && dk image prune -f >/dev/null 2>&1 || true
fi

echo "export DOCKER_HOST=$HOST"
