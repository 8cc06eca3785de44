"""The engine side of checkpoints: a small helper a native Python engine imports.

A task with ``checkpoint_s`` runs with checkpoints.  Its engine then sees
two environment variables (a Docker engine sees the same, with the
directory mounted in its container at :data:`CONTAINER_DIR`,
``/meshd/checkpoint``):

* ``MESHD_CHECKPOINT_DIR``: a directory of its own.  If it holds a file
  ``checkpoint`` when the engine starts, that is the state the task's
  previous attempt saved (on this node or another): resume from it.
* ``MESHD_CHECKPOINT_S``: how often to save, in seconds.

To save, the engine writes its whole state to ``checkpoint`` atomically
(write another file in the directory, then rename it over ``checkpoint``).
The runner picks each new ``checkpoint`` up within about a second and
records it in the queue (``lattice.checkpoints``).  Before the runner
vacates the task (a drain past its deadline, the owner taking the machine
back) it creates the file ``request`` in the directory: the engine should
save at once and remove ``request``.  The runner waits a short while for
the new checkpoint, then stops the engine.  Any language can follow this
protocol; the state is bytes of the engine's choosing.

This module is stdlib-only, so an engine can import it as
``engines.checkpoint`` where meshd is installed, or ship a copy beside it
(``engines/examples/checkpointed_pi.py`` does both)::

    ck = Checkpoint.from_env()
    state = ck.load_json() or {"done": 0}
    while state["done"] < total:
        step(state)
        if ck.due():
            ck.save_json(state)

Without the variables (a task without ``checkpoint_s``, a run by hand) the
helper is inert: ``load`` returns None and ``due`` is always False.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

#: The file holding the latest saved state.
STATE_FILE = "checkpoint"
#: The file the runner creates to ask for a checkpoint now.
REQUEST_FILE = "request"
#: Where a Docker engine's checkpoint directory is mounted in its container.
CONTAINER_DIR = "/meshd/checkpoint"
#: Least time between two looks for ``request`` (a stat), seconds.
_LOOK_S = 0.05


@dataclass(frozen=True)
class CheckpointDir:
    """The host side: where a run's checkpoints live and how often to save (``EngineHost.run(checkpoint=)``).

    Attributes:
        path: The directory (the runner creates it, and puts the state to
            resume from in it as ``checkpoint`` before the run).
        interval_s: Seconds between periodic saves.
    """

    path: str
    interval_s: float

    def env(self, path: str | None = None) -> dict[str, str]:
        """The engine's environment variables (``path``: the directory as the engine sees it)."""
        return {"MESHD_CHECKPOINT_DIR": path or self.path, "MESHD_CHECKPOINT_S": f"{self.interval_s:g}"}


class Checkpoint:
    """Load and save an engine's state in its checkpoint directory.

    Args:
        directory: The checkpoint directory; None: checkpoints are off.
        interval_s: Seconds between periodic saves.
    """

    def __init__(self, directory: str | None, interval_s: float = 60.0) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._last_save = time.monotonic()
        self._last_look = 0.0

    @classmethod
    def from_env(cls, env: Any = None) -> "Checkpoint":
        """The helper for this process (``MESHD_CHECKPOINT_DIR``, ``MESHD_CHECKPOINT_S``)."""
        env = os.environ if env is None else env
        try:
            interval = float(env.get("MESHD_CHECKPOINT_S", "60"))
        except ValueError:
            interval = 60.0
        return cls(env.get("MESHD_CHECKPOINT_DIR") or None, interval)

    def load(self) -> bytes | None:
        """The state to resume from, or None (a fresh start)."""
        if self.directory is None:
            return None
        try:
            with open(os.path.join(self.directory, STATE_FILE), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def load_json(self) -> Any:
        """:meth:`load` as JSON (None when there is nothing, or it is not JSON)."""
        data = self.load()
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def requested(self) -> bool:
        """Whether the runner asks for a checkpoint now (looks at most every 50 ms)."""
        if self.directory is None:
            return False
        now = time.monotonic()
        if now - self._last_look < _LOOK_S:
            return False
        self._last_look = now
        return os.path.exists(os.path.join(self.directory, REQUEST_FILE))

    def due(self) -> bool:
        """Whether to save now: the interval passed, or the runner asks."""
        if self.directory is None:
            return False
        return time.monotonic() - self._last_save >= self.interval_s or self.requested()

    def save(self, data: bytes) -> None:
        """Replace the saved state with ``data`` atomically, and answer a request."""
        if self.directory is None:
            return
        tmp = os.path.join(self.directory, f".{STATE_FILE}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.directory, STATE_FILE))  # the runner never reads half a state
        try:
            os.unlink(os.path.join(self.directory, REQUEST_FILE))
        except FileNotFoundError:
            pass
        self._last_save = time.monotonic()

    def save_json(self, state: Any) -> None:
        """:meth:`save` a JSON value."""
        self.save(json.dumps(state, separators=(",", ":")).encode())


__all__ = ["CONTAINER_DIR", "REQUEST_FILE", "STATE_FILE", "Checkpoint", "CheckpointDir"]
