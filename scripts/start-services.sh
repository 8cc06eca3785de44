#!/usr/bin/env bash
# Start the real services the tests use: a private dockerd and a js-ipfs node.
# Each failure is reported loudly; the tests that need the service then skip
# with the reason printed.  With MESHD_REQUIRE_SERVICES=1 (CI) a service that
# cannot start fails the run instead, so CI can never go green by skipping.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
status=0
if ! bash "$REPO/scripts/start-docker.sh" >/dev/null; then
    echo "services: WARNING: dockerd could not start; Docker tests will skip" >&2
    status=1
fi
if ! bash "$REPO/scripts/start-ipfs.sh" >/dev/null; then
    echo "services: WARNING: the IPFS node could not start; IPFS tests will skip" >&2
    status=1
fi
if [ "$status" != 0 ] && [ "${MESHD_REQUIRE_SERVICES:-0}" = 1 ]; then
    echo "services: MESHD_REQUIRE_SERVICES=1 and a service is missing: failing" >&2
    exit 1
fi
exit 0
