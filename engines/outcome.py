"""The result of running one task on an engine, whatever the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What one engine run produced.

    Attributes:
        ok: True when the engine exited cleanly and printed valid JSON.
        output: The parsed JSON output (None unless ``ok``).
        error: A one-line reason when not ``ok`` ("timeout after 5.0 s",
            "exit status 3", "output is not JSON", "not authorized: ...").
        stderr: The engine's stderr, truncated to the runner's limit.
        duration_s: Wall time of the run.
        runner: "native-cold", "native-warm", "docker-cold" or "docker-warm".
    """

    ok: bool
    output: Any = None
    error: str | None = None
    stderr: str = ""
    duration_s: float = 0.0
    runner: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
