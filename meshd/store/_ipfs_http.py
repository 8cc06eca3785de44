"""Talking HTTP to an IPFS node's RPC API: the transport under :mod:`meshd.store.ipfs`.

:class:`RpcTransport` owns everything about reaching the node and nothing about
blocks or pins: the multiaddr -> URL mapping, one ``ipfshttpclient`` 0.7.0
keep-alive session per calling thread (proxy lookup switched off), the shared
plain-HTTP ``httpx`` client for calls ipfshttpclient lacks (``block/rm``), the
retry loop with exponential backoff, the request counters, and the mapping of
every ``requests`` / ``httpx`` / ``ipfshttpclient`` exception onto
:class:`_Transport` (retried, then :class:`~lattice.errors.StoreError`),
:class:`_Answered` (the node answered with an error) or ``StoreError``.

It is separate from :mod:`meshd.store.ipfs` so that module keeps only the block
store's semantics (codecs, CID checks, statistics, pins) and stays readable;
the behaviour is described in that module's docstring.  Private: nothing
outside :mod:`meshd.store.ipfs` should import it.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Callable, TypeVar

import httpx
import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc
import requests

from lattice.errors import StoreError

if TYPE_CHECKING:
    from .ipfs import IpfsOptions

# ipfshttpclient 0.7.0's requests wrapper passes urllib3's removed ``strict``
# argument, so every new connection pool warns.  The warning is about that
# library's code, not ours; silence exactly it, nothing else.
warnings.filterwarnings(
    "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
)

T = TypeVar("T")


def _api_url(api: str) -> str:
    """``/ip4/127.0.0.1/tcp/5001[/http]`` -> ``http://127.0.0.1:5001/api/v0/``."""
    parts = api.split("/")
    if len(parts) < 5 or parts[0] != "":
        raise ValueError(f"api must be a multiaddr like /ip4/127.0.0.1/tcp/5001, got {api!r}")
    proto, host, transport, port = parts[1:5]
    rest = [p for p in parts[5:] if p]
    if proto not in ("ip4", "ip6", "dns", "dns4", "dns6") or not host:
        raise ValueError(f"api multiaddr must start with /ip4, /ip6 or /dns*: {api!r}")
    if transport != "tcp" or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"api multiaddr needs /tcp/<port 1..65535>: {api!r}")
    if rest not in ([], ["http"]):
        raise ValueError(f"api multiaddr may end only in /http: {api!r}")
    netloc = f"[{host}]:{port}" if proto == "ip6" else f"{host}:{port}"
    return f"http://{netloc}/api/v0/"


class _Transport(Exception):
    """Internal: a transport failure worth retrying (never escapes meshd.store.ipfs)."""


class _Answered(Exception):
    """Internal: the node answered with an error; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class RpcTransport:
    """Sessions, retries and error mapping for one IPFS node's RPC API.

    Thread-safe: each thread gets its own ipfshttpclient session; the
    ``httpx`` client is shared.  ``lock`` (the owning store's lock) guards the
    session list, the closed flag and ``net``.

    Attributes:
        net: ``[requests, retries, transport_errors, http_fallback_requests]``.
        closed: Set by :meth:`close`; every later call raises ``StoreError``.
    """

    def __init__(self, options: IpfsOptions, lock: threading.Lock) -> None:
        self._options = options
        self._url = options.api_url
        self._local = threading.local()
        self._lock = lock
        self._clients: list[ipfshttpclient.Client] = []
        self._http: httpx.Client | None = None
        self.closed = False
        self.net = [0, 0, 0, 0]

    def close(self) -> None:
        """Close every session.  Idempotent."""
        with self._lock:
            self.closed = True
            clients, self._clients = self._clients, []
            http, self._http = self._http, None
        for client in clients:
            client.close()
        if http is not None:
            http.close()

    def deadline(self) -> str:
        """The node-side ``timeout=`` value for lookups."""
        return f"{int(self._options.timeout_s * 1000)}ms"

    def _client(self) -> ipfshttpclient.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            # requests.Session is not documented as thread-safe: one per thread.
            client = ipfshttpclient.Client(
                self._options.api, session=True, timeout=self._options.http_timeout_s
            )
            # requests re-reads proxy variables from os.environ on every call
            # (~0.4 ms each here, the largest cost on the hot path), and a proxy
            # must never sit between us and the node anyway.  ipfshttpclient has
            # no public knob, so reach its session; skip quietly if it moved.
            session = getattr(getattr(client, "_client", None), "_session", None)
            if session is not None and hasattr(session, "trust_env"):
                session.trust_env = False
            with self._lock:
                if self.closed:
                    client.close()
                    raise StoreError("IPFS block store is closed")
                self._clients.append(client)
            self._local.client = client
        return client

    def call(self, op: str, fn: Callable[[ipfshttpclient.Client], T]) -> T:
        """Run ``fn(client)`` with retries; map every third-party error."""
        if self.closed:
            raise StoreError("IPFS block store is closed")
        return self._retrying(op, lambda: self._once_client(fn))

    def _once_client(self, fn: Callable[[ipfshttpclient.Client], T]) -> T:
        try:
            return fn(self._client())
        except ipfs_exc.ErrorResponse as exc:
            raise _Answered(str(exc), _status_of(exc)) from None
        except ipfs_exc.StatusError as exc:
            raise _Answered(f"HTTP error {_status_of(exc)}", _status_of(exc)) from None
        except (ipfs_exc.CommunicationError, requests.RequestException, OSError) as exc:
            raise _Transport(f"{type(exc).__name__}: {exc}") from None
        except ipfs_exc.Error as exc:  # decoding / address errors: a broken answer
            raise StoreError(f"IPFS node at {self._options.api} gave a malformed answer: {exc}") from None

    def plain(self, op: str, path: str, params: list[tuple[str, str]]) -> list[dict]:
        """POST ``path`` with plain HTTP (calls ipfshttpclient lacks); JSON lines back."""
        if self.closed:
            raise StoreError("IPFS block store is closed")

        def once() -> list[dict]:
            http = self._http
            if http is None:
                with self._lock:
                    if self._http is None:
                        # httpx.Client is thread-safe; one keep-alive pool for all threads.
                        self._http = httpx.Client(
                            base_url=self._url, timeout=self._options.http_timeout_s,
                            trust_env=False,
                        )
                    http = self._http
            with self._lock:
                self.net[3] += 1
            try:
                resp = http.post(path, params=params)
            except (httpx.TransportError, OSError) as exc:
                raise _Transport(f"{type(exc).__name__}: {exc}") from None
            if resp.status_code != 200:
                raise _Answered(_message_of(resp), resp.status_code)
            try:
                return [json.loads(line) for line in resp.content.splitlines() if line.strip()]
            except ValueError:
                raise StoreError(f"IPFS node at {self._options.api} answered {op} with non-JSON") from None

        return self._retrying(op, once)

    def _retrying(self, op: str, once: Callable[[], T]) -> T:
        opts = self._options
        delay = opts.retry_backoff_s
        attempt = 0
        while True:
            with self._lock:
                self.net[0] += 1
            try:
                return once()
            except _Transport as exc:
                with self._lock:
                    self.net[2] += 1
                if attempt >= opts.retries or self.closed:
                    raise StoreError(
                        f"IPFS node at {opts.api} is unreachable during {op} "
                        f"({exc}; {attempt + 1} attempt(s)); is the daemon running?"
                    ) from None
            attempt += 1
            with self._lock:
                self.net[1] += 1
            time.sleep(delay)
            delay = min(delay * 2, opts.retry_backoff_max_s)


def _status_of(exc: BaseException) -> int | None:
    original = getattr(exc, "original", None)
    response = getattr(original, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _message_of(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, Mapping) and isinstance(body.get("Message"), str):
        return body["Message"]
    return f"HTTP {resp.status_code}"
