"""Quirk: py-libp2p 0.8.1 listens with SO_REUSEPORT, so two daemons share a port.

``libp2p.transport.tcp.tcp`` sets SO_REUSEADDR *and* SO_REUSEPORT on every
listening socket (for TCP hole punching, which meshd does not use).  With
SO_REUSEPORT on Linux a second process of the same user binds the same
``0.0.0.0:4601`` without error and the kernel splits incoming connections
between the two (issue 15: a second daemon started without ``--listen`` came
up beside the first).  :func:`install_exclusive_listeners` replaces the
module's flag setter with one that sets SO_REUSEADDR only: a restarted daemon
still rebinds a port whose old connections sit in TIME_WAIT, but a port that
another socket *listens* on fails with EADDRINUSE, which
:class:`~meshd.p2p.transport.Transport` reports as a :class:`TransportError`
naming the address.

The patch is process-wide and idempotent; ``tests/test_a_port_in_use_is_a_startup_error.py``
fails if the library stops calling the setter (its shape changed).
"""

from __future__ import annotations

import socket
from typing import Any

import libp2p.transport.tcp.tcp as _tcp

__all__ = ["install_exclusive_listeners", "set_exclusive_flags"]


def set_exclusive_flags(sock: Any) -> None:
    """SO_REUSEADDR only (TIME_WAIT reuse), never SO_REUSEPORT (a shared listener)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError:  # best effort, as the library's own setter
        pass


def install_exclusive_listeners() -> None:
    """Make py-libp2p's TCP listeners exclusive (see the module doc); idempotent."""
    if not hasattr(_tcp, "_set_reuse_flags"):
        raise RuntimeError("py-libp2p's TCP transport has no _set_reuse_flags: re-check the port patch")
    _tcp._set_reuse_flags = set_exclusive_flags
