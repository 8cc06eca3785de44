"""Shared fixtures: real daemon processes, and the Docker/IPFS service helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._daemons import Daemon


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def daemon_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator:
    """Build initialised daemons in ``tmp_path``; all are stopped afterwards.

    When the test failed, each daemon's notable log lines (warnings, failures,
    restarts) are printed, so a CI failure on a fresh clone can be diagnosed
    from its output alone.
    """
    made: list[Daemon] = []

    def make(name: str = "node", **kw) -> Daemon:
        d = Daemon(tmp_path / name, **kw).init()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for d in made:
            print(f"--- {d.home.name} ({d.peer_id}): notable log lines ---")
            print(d.notable_log())


@pytest.fixture
def daemon(daemon_factory) -> Daemon:
    """One started daemon with the manager and runner roles."""
    return daemon_factory().start()
