#!/usr/bin/env bash
# Run pytest with the project's services in the environment; print the skip
# count so skipped service tests stay visible.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export DOCKER_HOST="${DOCKER_HOST:-unix://$REPO/.run/docker/docker.sock}"
.venv/bin/python -m pytest -q -rs "$@"
rc=$?
# pytest exits 5 when no test ran: that is a failure for us.
[ "$rc" = 5 ] && { echo "run-tests: no tests ran" >&2; exit 1; }
exit "$rc"
