#!/usr/bin/env bash
# `make test`: start the real services (a private dockerd and a js-ipfs node),
# run the suite, and stop the services again whatever happened, so a later run
# on the same machine finds its ports free.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
stop() {
    bash scripts/stop-ipfs.sh >/dev/null 2>&1 || true
    bash scripts/stop-docker.sh >/dev/null 2>&1 || true
}
trap stop EXIT
bash scripts/start-services.sh || exit 1
bash scripts/run-tests.sh "$@"
