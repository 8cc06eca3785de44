"""A p2p listen port already in use is a startup error, never a shared bind (issue 15 item 3).

py-libp2p listens with SO_REUSEPORT, so a second daemon on the same port
came up beside the first and the kernel split the connections between them.
Here a second real daemon is told to listen where the first listens, on the
README's wildcard form (``/ip4/0.0.0.0/tcp/<port>``) and on a specific
address; each time ``meshd run`` exits non-zero with a message naming the
address, and the first daemon is the only one listening.
"""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

import libp2p.transport.tcp.tcp as libp2p_tcp
from meshd.p2p._exclusive_ports import install_exclusive_listeners, set_exclusive_flags

from ._daemons import Daemon

pytestmark = pytest.mark.slow


def _listen_on(d: Daemon, listen: str) -> None:
    cfg = d.home / "config.toml"
    cfg.write_text(cfg.read_text().replace(f'"/ip4/127.0.0.1/tcp/{d.p2p_port}"', f'"{listen}"'))


def _listeners(port: int) -> set[int]:
    return {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_the_library_setter_is_the_one_patched() -> None:
    install_exclusive_listeners()
    assert libp2p_tcp._set_reuse_flags is set_exclusive_flags
    # The library's listener opener still calls the module-level setter.
    assert "_set_reuse_flags" in libp2p_tcp._open_reuseport_listeners.__code__.co_names


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_second_daemon_on_a_used_port_exits_naming_the_address(daemon_factory, tmp_path, host) -> None:
    a = daemon_factory("a")
    _listen_on(a, f"/ip4/{host}/tcp/{a.p2p_port}")
    a.start()
    b = Daemon(tmp_path / "b")
    b.p2p_port = a.p2p_port
    b.init()
    _listen_on(b, f"/ip4/{host}/tcp/{a.p2p_port}")
    run = subprocess.run([sys.executable, "-m", "meshd.cli", "run", "--home", str(b.home)],
                         capture_output=True, text=True, env=b.env, timeout=120)
    assert run.returncode != 0, run.stderr[-2000:]
    assert f"cannot listen on /ip4/{host}/tcp/{a.p2p_port}" in run.stderr, run.stderr[-2000:]
    assert a.proc is not None and a.proc.poll() is None
    assert _listeners(a.p2p_port) == {a.proc.pid}
