"""Shared fixtures: real daemon processes, and the Docker/IPFS service helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._daemons import Daemon


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator:
    """Build initialised daemons in ``tmp_path``; all are stopped afterwards."""
    made: list[Daemon] = []

    def make(name: str = "node", **kw) -> Daemon:
        d = Daemon(tmp_path / name, **kw).init()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def daemon(daemon_factory) -> Daemon:
    """One started daemon with the manager and runner roles."""
    return daemon_factory().start()
