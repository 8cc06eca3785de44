"""``meshd bench engines`` finds the Docker engine that ``make services`` started (issue 17, "Finding and installing").

``scripts/start-docker.sh`` puts its socket under ``<checkout>/.run/docker``
(or ``$MESHD_DOCKER_DIR``) and only prints the ``DOCKER_HOST`` to export, so a
user who ran ``make services`` and then the bench got "no Docker".  The bench
now looks there when ``$DOCKER_HOST`` is unset, and says how to start one when
nothing answers.  The socket here is a real listening unix socket.
"""

from __future__ import annotations

import socket
from pathlib import Path

from meshd.bench import engines as bench


def test_docker_host_wins_when_set(tmp_path: Path) -> None:
    assert bench.default_docker_host({"DOCKER_HOST": "tcp://10.0.0.1:2375", "MESHD_DOCKER_DIR": str(tmp_path)}) == \
        ("tcp://10.0.0.1:2375", "$DOCKER_HOST")


def test_the_socket_make_services_started_is_found(tmp_path: Path) -> None:
    state = tmp_path / "docker"
    state.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(state / "docker.sock"))
        s.listen(1)
        host, origin = bench.default_docker_host({"MESHD_DOCKER_DIR": str(state)})
    assert host == f"unix://{state / 'docker.sock'}" and "make services" in origin


def test_without_either_the_system_socket_is_tried_and_the_reason_says_how(tmp_path: Path) -> None:
    host, origin = bench.default_docker_host({"MESHD_DOCKER_DIR": str(tmp_path / "none")})
    assert host == "unix:///var/run/docker.sock" and origin == "the system's default socket"
    reason = bench._docker_reason(f"unix://{tmp_path / 'absent.sock'}", "meshd/noop:1")
    assert reason is not None and "make services" in reason and "DOCKER_HOST" in reason


def test_the_checkout_default_is_this_checkout() -> None:
    assert (bench.CHECKOUT / "scripts" / "start-docker.sh").is_file()
