"""py-libp2p's routine errors (a refused dial, a stream to a peer that left) are logged at debug.

A crashed peer made every node connected to it log
``error libp2p.transport.tcp.tcp msg="Failed to open TCP stream ..."`` at each
redial, for minutes; the daemon's composition root demotes the loggers
listed in :data:`meshd.daemon.ROUTINE_LIBP2P_LOGGERS`, and everything else
(meshd's own errors, other libp2p loggers, critical records) stays as it was.
"""

from __future__ import annotations

import io
import logging

import pytest

from meshd.daemon import ROUTINE_LIBP2P_LOGGERS
from meshd.runtime.logs import configure_logging, demote


@pytest.fixture
def logged():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    filters = {n: list(logging.getLogger(n).filters) for n in ROUTINE_LIBP2P_LOGGERS}
    stream = io.StringIO()

    def configure(level: str) -> io.StringIO:
        stream.seek(0)
        stream.truncate()
        configure_logging(level, stream=stream)
        demote(ROUTINE_LIBP2P_LOGGERS)
        return stream

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for n, fs in filters.items():
        logging.getLogger(n).filters[:] = fs


def test_a_refused_dial_is_not_an_error_at_info(logged) -> None:
    out = logged("info")
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: all attempts failed")
    logging.getLogger("libp2p.host.basic_host").error("Failed to open stream to peer X")
    logging.getLogger("libp2p.network.swarm").warning("[ADDCONN_FAIL] add_conn failed for peer X")
    assert out.getvalue() == ""


def test_it_is_kept_at_debug(logged) -> None:
    out = logged("debug")
    logging.getLogger("libp2p.transport.tcp.tcp").error("Failed to open TCP stream: all attempts failed")
    assert " debug libp2p.transport.tcp.tcp " in out.getvalue()
    assert " error " not in out.getvalue()


def test_other_errors_stay_errors(logged) -> None:
    out = logged("info")
    logging.getLogger("libp2p.pubsub.gossipsub").error("something else")
    logging.getLogger("meshd.mesh").error("ours")
    logging.getLogger("libp2p.transport.tcp.tcp").critical("not routine")
    text = out.getvalue()
    assert " error libp2p.pubsub.gossipsub " in text
    assert " error meshd.mesh " in text
    assert " critical libp2p.transport.tcp.tcp " in text


def test_demoting_twice_installs_one_filter(logged) -> None:
    logged("info")
    demote(ROUTINE_LIBP2P_LOGGERS)
    assert len(logging.getLogger(ROUTINE_LIBP2P_LOGGERS[0]).filters) == 1
