"""Structured log lines: one event name plus ``key=value`` fields per line.

Lines look like (logfmt, so ``grep``, ``awk`` and log shippers all cope)::

    2024-05-01T12:00:00.123Z info meshd.api event=request_failed method=POST path=/v1/tasks error="boom"

Call sites name an event and pass fields, never preformatted prose, so the
lines stay machine-readable::

    log = get_logger("meshd.api")
    log.info("api_listening", address="127.0.0.1:7600")

Named ``logs`` so that ``import logging`` inside the package still means the
standard library.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FIELDS_ATTR = "meshd_fields"


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-._/:@+,[]" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    """Formats records as ``time level logger event=... key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname.lower(), record.name]
        fields: dict[str, Any] | None = getattr(record, _FIELDS_ATTR, None)
        if fields is None:
            # A record from a third-party logger (hypercorn, trio): keep its text.
            parts.append(f"msg={_quote(record.getMessage())}")
        else:
            parts.append(f"event={_quote(record.msg)}")
            parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class EventLogger:
    """A thin wrapper over :class:`logging.Logger` taking an event and fields.

    Args:
        logger: The stdlib logger to emit through.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _emit(self, level: int, event: str, exc_info: bool, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, event, exc_info=exc_info, extra={_FIELDS_ATTR: fields}, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at debug level."""
        self._emit(logging.DEBUG, event, False, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at info level."""
        self._emit(logging.INFO, event, False, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at warning level."""
        self._emit(logging.WARNING, event, False, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at error level."""
        self._emit(logging.ERROR, event, False, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log ``event`` at error level with the current exception's traceback."""
        self._emit(logging.ERROR, event, True, fields)


def get_logger(name: str) -> EventLogger:
    """The event logger for ``name`` (use the module's dotted name)."""
    return EventLogger(logging.getLogger(name))


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send all log records to ``stream`` (default stderr) as logfmt lines.

    Called once by the CLI; libraries never configure logging themselves.

    Args:
        level: debug, info, warning or error.
        stream: Where lines go.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))


class _Demote(logging.Filter):
    """Logs a logger's records at ``level`` instead of theirs (higher levels than ``keep`` pass as they are)."""

    def __init__(self, level: int, keep: int) -> None:
        super().__init__()
        self._level = level
        self._keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self._keep:
            return True
        record.levelno, record.levelname = self._level, logging.getLevelName(self._level)
        # A propagated record is not checked against the root's level again: check it here.
        return logging.getLogger().isEnabledFor(self._level)


def demote(names: Iterable[str], level: int = logging.DEBUG, *, keep: int = logging.CRITICAL) -> None:
    """Log what the loggers ``names`` say below ``keep`` at ``level`` instead (e.g. a library's routine errors).

    A library may log at error level what is, for the application, the normal
    life of its work (py-libp2p: a dial refused by a peer that stopped).  The
    records are kept, at ``level``, so ``[log] level = "debug"`` still shows
    them; only records made on these very loggers are changed, not their
    children's.  Called by the composition root, once.
    """
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _Demote)]:
            logger.removeFilter(old)
        logger.addFilter(_Demote(level, keep))

