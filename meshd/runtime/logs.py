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
