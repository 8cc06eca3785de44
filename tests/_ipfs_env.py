"""Find or start the js-ipfs test node; say why not when it cannot be had.

The node is the one ``scripts/start-ipfs.sh`` runs (js-ipfs 0.66.1 from
``scripts/ipfs-node``; Kubo cannot be installed on the build machines).
:func:`ensure_node` starts it if it is not already answering and returns its
API multiaddr, or raises :class:`IpfsUnavailable` whose message is meant to be
the pytest skip reason.  The default node lives in ``.run/ipfs`` on port 5001
(``MESHD_IPFS_DIR`` / ``MESHD_IPFS_API_PORT`` override, as for the script);
tests that kill a node start a private one with :func:`ensure_node` on a temp
dir and :func:`free_port`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
START = REPO_ROOT / "scripts" / "start-ipfs.sh"
STOP = REPO_ROOT / "scripts" / "stop-ipfs.sh"
DEFAULT_DIR = REPO_ROOT / ".run" / "ipfs"


class IpfsUnavailable(Exception):
    """No IPFS test node can be had here; the message says why."""


def _env(state_dir: Path | None, port: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if state_dir is not None:
        env["MESHD_IPFS_DIR"] = str(state_dir)
    if port is not None:
        env["MESHD_IPFS_API_PORT"] = str(port)
    return env


def state_dir_of(state_dir: Path | None = None) -> Path:
    """The state dir the scripts use for ``state_dir`` (None: the default)."""
    if state_dir is not None:
        return Path(state_dir)
    return Path(os.environ.get("MESHD_IPFS_DIR") or DEFAULT_DIR)


def missing_tools() -> str | None:
    """Why the node cannot be started here at all, or None."""
    for tool in ("node", "npm", "curl", "setsid"):
        if shutil.which(tool) is None:
            return f"IPFS test node needs {tool!r} on PATH (Node >= 18 with npm)"
    return None


def ensure_node(
    state_dir: Path | None = None, port: int | None = None, timeout_s: float = 300.0
) -> str:
    """Start (or find running) the node; return its API multiaddr.

    Raises:
        IpfsUnavailable: tools missing, ``npm ci`` failed, or the daemon did
            not come up; the message carries the script's last output lines.
    """
    reason = missing_tools()
    if reason:
        raise IpfsUnavailable(reason)
    try:
        proc = subprocess.run(
            ["bash", str(START)], env=_env(state_dir, port), capture_output=True,
            text=True, timeout=timeout_s, cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired:
        raise IpfsUnavailable(f"scripts/start-ipfs.sh did not finish within {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-6:])
        raise IpfsUnavailable(f"scripts/start-ipfs.sh failed (rc {proc.returncode}): {tail}")
    return proc.stdout.strip().splitlines()[-1]


def stop_node(state_dir: Path | None = None) -> None:
    """Stop the node of ``state_dir`` (SIGTERM, then SIGKILL) and wait."""
    subprocess.run(["bash", str(STOP)], env=_env(state_dir, None), check=True,
                   capture_output=True, timeout=60, cwd=REPO_ROOT)


def daemon_pid(state_dir: Path | None = None) -> int | None:
    """The daemon's pid from its pid file, or None."""
    try:
        return int((state_dir_of(state_dir) / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def kill_node(state_dir: Path) -> int:
    """SIGKILL the node of ``state_dir`` (a crash, not a clean stop); return its pid."""
    pid = daemon_pid(state_dir)
    if pid is None:
        raise RuntimeError(f"no daemon pid in {state_dir}")
    os.kill(pid, signal.SIGKILL)
    return pid


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
