"""Progress bars for long CLI work, on stderr, only when stderr is a terminal.

Why so: a bar redraws one line with ``\\r``, which is noise in a log file or
a pipe, and stdout must stay clean for ``--json`` output that scripts parse.
So :class:`Progress` writes to the stream it is given (stderr) and only when
that stream is a TTY; anywhere else it writes nothing at all.
"""

from __future__ import annotations

import time
from typing import TextIO

#: Width of the bar in characters.
WIDTH = 28
#: Redraws at most this often (seconds), except the last.
MIN_INTERVAL = 0.1


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """One line: ``label [#######.......] done/total  note  elapsed``.

    Args:
        stream: Where to draw (stderr); nothing is drawn unless ``stream.isatty()``.
        total: The amount of work (items or bytes).
        label: What is being done.
        bytes_: Show amounts as sizes (KiB, MiB) rather than counts.
    """

    def __init__(self, stream: TextIO, total: int, label: str, *, bytes_: bool = False) -> None:
        self.stream = stream
        self.total = max(0, int(total))
        self.label = label
        self.bytes = bytes_
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._drawn = 0.0
        self.done = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, done: int, note: str = "") -> str:
        """The text of the bar at ``done`` (a pure function of the counts and the clock)."""
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = int(WIDTH * frac)
        amount = f"{_size(done)}/{_size(self.total)}" if self.bytes else f"{done}/{self.total}"
        elapsed = time.monotonic() - self.start
        return f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {amount}" + (f"  {note}" if note else "") \
            + f"  {elapsed:.1f}s"

    def update(self, done: int, note: str = "", *, force: bool = False) -> None:
        """Redraw at ``done`` (rate-limited unless ``force`` or finished)."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and done < self.total and now - self._drawn < MIN_INTERVAL:
            return
        self._drawn = now
        self.stream.write("\r\x1b[K" + self.line(done, note))
        self.stream.flush()

    def close(self) -> None:
        """Clear the line (a TTY only), leaving the terminal as it was."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
