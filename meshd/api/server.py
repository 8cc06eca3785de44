"""Serve an ASGI application with Hypercorn's trio worker, as a trio service.

Usage::

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, app, options)
        print(bound.url)          # e.g. http://127.0.0.1:40123 when port was 0
        ...
        nursery.cancel_scope.cancel()   # stops the server

The service reports the address it actually bound, so tests and the daemon
can ask for port 0 and learn the port the OS picked.

The daemon uses :class:`ApiServer` instead: the node and the mesh report
this node's API URL, but the app is built from the node, so the server is
constructed first (its :meth:`ApiServer.url` handed to them) and given the
app when it is served.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hypercorn.config
import hypercorn.trio
import trio

from ..config import ApiOptions
from ..runtime.logs import get_logger
from . import address

_log = get_logger("meshd.httpserver")  # the logger name predates meshd/api/


@dataclass(frozen=True)
class BoundAddress:
    """Where the server listens.

    Attributes:
        host: The bound IP address (no brackets for IPv6).
        port: The bound port (the real one when 0 was requested).
    """

    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:7600``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _hypercorn_config(options: ApiOptions) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    host, port = options.host, options.port
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # Route hypercorn's own messages into our logging; no access log (the
    # daemon logs what matters itself, and per-request lines drown it).
    config.errorlog = logging.getLogger("meshd.http")
    config.accesslog = None
    config.graceful_timeout = 2.0
    # Hypercorn's own cap is a fallback; BodyLimitMiddleware gives the 413.
    config.h11_max_incomplete_size = 64 * 1024
    return config


async def serve(
    app: Any,
    options: ApiOptions,
    *,
    task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``options.listen`` until cancelled.

    Args:
        app: An ASGI application (see :func:`meshd.api.app.create_app`).
        options: The listen address (``HOST:PORT``; port 0 picks a free port).
        task_status: Receives the :class:`BoundAddress` once the socket listens.

    Raises:
        OSError: The address cannot be bound (e.g. already in use).

    Cancellation closes the listener and in-flight connections; nothing
    persists.
    """
    config = _hypercorn_config(options)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, app, config))
        parts = urlsplit(binds[0])
        bound = BoundAddress(parts.hostname or options.host, parts.port or options.port)
        _log.info("api_listening", url=bound.url)
        task_status.started(bound)


class ApiServer:
    """An API server built before the app it will serve (no I/O until :meth:`serve`).

    Components that report this node's API URL take :meth:`url`; the app,
    which is built from those components, is handed to :meth:`serve`.  This
    breaks the node -> URL -> server -> app -> node cycle without assigning
    anything to the node after it is built.

    Args:
        options: The listen address (``HOST:PORT``; port 0 picks a free port).
        home: When given, the bound address and this process's pid are
            recorded in ``<home>/api`` while the server listens
            (:mod:`meshd.api.address`), for clients given only ``--home``.
    """

    def __init__(self, options: ApiOptions, home: Path | None = None) -> None:
        self.options = options
        self.home = home
        self._bound: BoundAddress | None = None

    def url(self) -> str | None:
        """The base URL while the server listens, else None."""
        return self._bound.url if self._bound is not None else None

    async def serve(self, app: Any, *, task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve ``app`` until cancelled; as :func:`serve`, whose :class:`BoundAddress` it reports.

        Cancellation closes the listener and removes ``<home>/api`` (a
        SIGKILL leaves it; readers check that its pid runs).
        """
        pid = os.getpid()
        try:
            async with trio.open_nursery() as nursery:
                self._bound = await nursery.start(serve, app, self.options)
                if self.home is not None:
                    address.write(self.home, address.ApiAddress(self._bound.url, pid))
                task_status.started(self._bound)
        finally:
            self._bound = None
            if self.home is not None:
                address.remove(self.home, pid)
