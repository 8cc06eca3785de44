"""Blocking helpers of the Docker runner: they run in worker threads.

Docker's attach stream (stdin in; stdout/stderr out, multiplexed in frames of
an 8-byte header ``[kind, 0, 0, 0, size32be]`` and ``size`` bytes), the warm
container's line exchange, and the mapping of docker-py errors. The only trio
object here is a warm slot's lock; :mod:`engines.docker` runs the rest
through ``trio.to_thread``.
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Any

import docker.errors
import requests.exceptions
import trio

from .errors import EngineMissing


class TaskFailed(Exception):
    """Internal: the task failed for ``reason`` (becomes an Outcome)."""


class Unavailable(Exception):
    """Internal, raised in worker threads: the daemon cannot be reached."""


class WarmDied(Exception):
    """Internal: a warm container's output stream ended."""

    def __init__(self, stderr: str) -> None:
        super().__init__("warm container exited")
        self.stderr = stderr


class WarmSlot:
    """The warm container of one key, its attach stream and its lock."""

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.lock = trio.Lock()
        self.container: Any = None
        self.stream: Any = None
        self.healthy = False
        self.pending = bytearray()  # stdout bytes read past the last line

    def exchange(self, payload: bytes, limit: int, stderr_limit: int) -> tuple[bytes, str]:
        """(Thread) Writes one line, reads one stdout line back.

        Sets ``healthy`` False before anything that leaves the stream out of
        step, so a failure or an abandoned call discards the container.
        """
        self.healthy = False
        sock = raw(self.stream)
        # Output that arrived since the last task means the engine is out of
        # step (it answered twice); catch it before it passes as our answer.
        while not self.pending and _readable(sock):
            frame = read_frame(sock)
            if frame is None:
                raise WarmDied("")
            if frame[0] != 2:
                self.pending += frame[1]
        if self.pending:
            raise TaskFailed("warm engine wrote output nobody asked for "
                             "(more than one line per task)")
        try:
            sock.sendall(payload + b"\n")
        except OSError:
            raise WarmDied("") from None
        err = bytearray()
        buf = self.pending
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[:end + 1]
                self.healthy = not buf
                return line, tail(bytes(err), stderr_limit)
            if len(buf) > limit:
                raise TaskFailed(f"output exceeds {limit} bytes")
            frame = read_frame(sock)
            if frame is None:
                raise WarmDied(tail(bytes(err), stderr_limit))
            kind, data = frame
            if kind == 2:
                err += data
                if len(err) > limit:
                    raise TaskFailed(f"stderr exceeds {limit} bytes")
            else:
                buf += data



def _readable(sock: socket.socket) -> bool:
    poller = select.poll()  # not select(): fds above 1023 are fine
    poller.register(sock, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(0))


def guarded(fn: Any, *args: Any) -> Any:
    """Calls ``fn`` and maps third-party errors to internal/engine ones."""
    try:
        return fn(*args)
    except (requests.exceptions.ConnectionError, ConnectionRefusedError,
            FileNotFoundError) as exc:
        raise Unavailable(str(exc)) from None
    except docker.errors.ImageNotFound as exc:
        raise EngineMissing(f"image not loaded: {exc.explanation}", []) from None
    except docker.errors.NotFound as exc:
        raise TaskFailed(f"container vanished: {exc.explanation}") from None
    except docker.errors.APIError as exc:
        raise TaskFailed(f"docker: {exc.explanation or exc}") from None
    except docker.errors.DockerException as exc:
        if "Error while fetching server API version" in str(exc):
            raise Unavailable(str(exc)) from None
        raise TaskFailed(f"docker: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise TaskFailed(f"docker request failed: {exc}") from None


def attach(container: Any) -> Any:
    # Attached before start, so no output can be buffered away with the
    # HTTP response headers: everything the container writes comes after.
    stream = container.attach_socket(
        params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    # The client's read timeout would end a quiet stream early; timeouts are
    # trio's job, and closing the socket unblocks a reader.
    raw(stream).settimeout(None)
    return stream


def raw(stream: Any) -> socket.socket:
    return getattr(stream, "_sock", stream)


def send_and_close(stream: Any, payload: bytes) -> None:
    sock = raw(stream)
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # EOF on the engine's stdin
    except OSError:
        pass  # the engine exited without reading all its input


def read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_frame(sock: socket.socket) -> tuple[int, bytes] | None:
    """Reads one frame of Docker's multiplexed stream: (1 stdout | 2 stderr, data)."""
    header = read_exact(sock, 8)
    if header is None:
        return None
    kind, size = struct.unpack(">BxxxL", header)
    data = read_exact(sock, size) if size else b""
    return None if data is None else (kind, data)


def drain(stream: Any, limit: int) -> tuple[int, int] | None:
    """Counts stdout/stderr bytes until EOF; None as soon as either exceeds limit."""
    sock = raw(stream)
    counts = [0, 0, 0]
    while True:
        frame = read_frame(sock)
        if frame is None:
            return counts[1], counts[2]
        kind, data = frame
        counts[kind if kind in (1, 2) else 1] += len(data)
        if counts[1] > limit or counts[2] > limit:
            return None


def inspect(container: Any) -> dict:
    container.reload()
    return container.attrs


def force_remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: removal already in progress
            raise


def remove_labelled(api: Any, label: str) -> tuple[str, ...]:
    """Force-remove every container (running or not) carrying ``label``
    (``key=value``); one that cannot be removed is skipped.  Returns the ids removed."""
    removed = []
    for c in api.containers(all=True, quiet=True, filters={"label": label}):
        try:
            api.remove_container(c["Id"], force=True)
            removed.append(c["Id"])
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass
    return tuple(removed)


def close(stream: Any) -> None:
    if stream is None:
        return
    sock = raw(stream)
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
    except OSError:
        pass
    try:
        stream.close()
        sock.close()
    except OSError:
        pass


def tail(data: bytes, limit: int) -> str:
    if len(data) > limit:
        data = b"[...]" + data[-limit:]
    return data.decode("utf-8", "replace")
