#!/usr/bin/env bash
# Set up everything meshd needs on a fresh Debian/Ubuntu machine:
# system packages (apt), a virtual environment in .venv, and the package
# with its test and example extras.  Idempotent: a stamp file skips the pip
# step until pyproject.toml changes.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
say() { echo "setup: $*" >&2; }

# py-libp2p's fastecdsa builds from source and needs GMP headers; iproute2
# gives `ip netns` for partition tests; bubblewrap and util-linux (setpriv,
# unshare, prlimit) build the jail native engines run in (engines/jail.py):
# without them a node refuses native engines; python3-seccomp (libseccomp's
# own bindings, for /usr/bin/python3) compiles the jail's seccomp filter
# (engines/seccomp.py): without it engines run jailed but unfiltered.
need=()
for pkg in libgmp-dev iproute2 bubblewrap util-linux python3-seccomp; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
    else
        say "warning: missing system packages ${need[*]} and cannot apt-get them (not root)"
    fi
fi

# Chromium drives tests/test_api_refuses_web_pages.py: a real browser on an
# attacker page must not be able to change the daemon.  Best effort: without
# it that one test skips and says why, so a failed install does not stop setup.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing chromium (headless browser for the API's web-page tests)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq chromium >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
            || say "warning: could not install chromium; the browser test will skip"
    else
        say "warning: chromium is missing and cannot be apt-get installed (not root); the browser test will skip"
    fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=.venv/.meshd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing meshd and its dependencies into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -U pip wheel setuptools
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,examples]'
    touch "$stamp"
fi
say "ready: $(.venv/bin/python --version), meshd $(.venv/bin/python -c 'import meshd; print(meshd.__version__)')"
