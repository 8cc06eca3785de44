"""Finds (or starts) the real Docker engine the docker tests run against.

``docker_host_or_reason()`` returns ``(host, None)`` when a daemon answers and
the example images are there, else ``(None, reason)``; tests skip with that
reason (``pytest -ra`` prints it), never silently. Lookup order:

1. ``DOCKER_HOST`` from the environment (tests may read it; library code
   takes the host as an explicit option);
2. the project-local daemon of ``scripts/start-docker.sh``
   (``$MESHD_DOCKER_DIR``, default ``.run/docker/docker.sock``);
3. unless ``MESHD_DOCKER_AUTOSTART=0``: run ``scripts/start-docker.sh``
   (idempotent; it may install docker.io and busybox-static as root, start
   dockerd and build the images) and use the host it prints.

The fixtures here are plain pytest fixtures; import them into a test module
or a conftest to use them.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

REPO = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO / "scripts" / "start-docker.sh"
EXAMPLE_IMAGES = ("meshd/noop:1", "meshd/wordcount:1")
START_TIMEOUT_S = 600


def _project_socket() -> Path:
    state = Path(os.environ.get("MESHD_DOCKER_DIR", REPO / ".run" / "docker"))
    return state / "docker.sock"


def _check(host: str) -> str | None:
    """Returns None when ``host`` answers and has the example images."""
    import docker

    try:
        client = docker.DockerClient(base_url=host, version="auto", timeout=20)
    except Exception as exc:  # docker-py raises many types here; all mean "no"
        return f"Docker daemon at {host} does not answer: {exc}"
    try:
        client.ping()
        missing = []
        for ref in EXAMPLE_IMAGES:
            try:
                client.images.get(ref)
            except docker.errors.ImageNotFound:
                missing.append(ref)
        if missing:
            return (f"Docker at {host} lacks the example images {missing}; "
                    f"run scripts/start-docker.sh")
    except Exception as exc:
        return f"Docker daemon at {host} failed: {exc}"
    finally:
        client.close()
    return None


@functools.lru_cache(maxsize=1)
def docker_host_or_reason() -> tuple[str | None, str | None]:
    """Returns ``(docker_host, None)`` or ``(None, why docker tests must skip)``.

    Probed once per test session.
    """
    reasons = []
    env_host = os.environ.get("DOCKER_HOST")
    if env_host:
        reason = _check(env_host)
        if reason is None:
            return env_host, None
        reasons.append(reason)
    sock = _project_socket()
    if sock.exists():
        host = f"unix://{sock}"
        reason = _check(host)
        if reason is None:
            return host, None
        reasons.append(reason)
    if os.environ.get("MESHD_DOCKER_AUTOSTART", "1") == "0":
        reasons.append("MESHD_DOCKER_AUTOSTART=0: not starting dockerd")
        return None, "; ".join(reasons)
    try:
        proc = subprocess.run(["bash", str(START_SCRIPT)], capture_output=True,
                              text=True, timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reasons.append(f"scripts/start-docker.sh failed to run: {exc}")
        return None, "; ".join(reasons)
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode != 0 or not last[0].startswith("export DOCKER_HOST="):
        tail = " | ".join(proc.stderr.strip().splitlines()[-6:])
        reasons.append(f"scripts/start-docker.sh exited {proc.returncode}: {tail}")
        return None, "; ".join(reasons)
    host = last[0].split("=", 1)[1]
    reason = _check(host)
    if reason is not None:
        reasons.append(reason)
        return None, "; ".join(reasons)
    return host, None


def require_docker_host() -> str:
    """Returns the Docker host, or skips the calling test with the reason."""
    host, reason = docker_host_or_reason()
    if host is None:
        pytest.skip(f"no Docker engine: {reason}")
    return host


def runner_containers(client: Any, mode: str | None = None) -> list[Any]:
    """Lists containers (running or not) that a DockerRunner created."""
    from engines.docker import RUNNER_LABEL

    label = f"{RUNNER_LABEL}.mode={mode}" if mode else RUNNER_LABEL
    return client.containers.list(all=True, filters={"label": label})


@pytest.fixture
def docker_host() -> str:
    """The host URL of a real Docker engine with the example images (or skip)."""
    return require_docker_host()


@pytest.fixture
def docker_client(docker_host: str) -> Any:
    """A docker-py client of that engine."""
    import docker

    client = docker.DockerClient(base_url=docker_host, version="auto", timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def docker_runner(docker_host: str) -> AsyncIterator[Any]:
    """An open DockerRunner (20 s default timeout) on that engine."""
    from engines.docker import DockerOptions, open_docker_runner

    async with open_docker_runner(DockerOptions(docker_host=docker_host, timeout_s=20)) as r:
        yield r
