"""Docker engines step aside for the machine's owner by pausing (issue 16, item 1).

The owner policy's suspend pauses every container the Docker runner runs
(``DockerRunner.set_paused``, the cgroup freezer: the engine keeps its
memory and its place) and continue unpauses them; against a real dockerd.
A running container also has the smallest CPU weight (``CpuShares`` 2, the
Docker counterpart of the native engines' nice 19 and ``SCHED_IDLE``), so
the owner's processes come first even while it runs.
"""

from __future__ import annotations

import pytest
import trio

from tests._docker_env import (  # noqa: F401  (fixtures)
    docker_client,
    docker_host,
    docker_runner,
    runner_containers,
)

pytestmark = pytest.mark.docker

NOOP = "meshd/noop:1"


async def test_a_running_container_is_paused_and_unpaused(docker_runner, docker_client) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(docker_runner.run_cold, NOOP, ["sh", "-c", "cat >/dev/null; sleep 600"], {},
                           {"timeout_s": 120})
        with trio.fail_after(30):
            while not (ids := docker_runner.container_ids()) or \
                    docker_client.api.inspect_container(ids[0])["State"]["Status"] != "running":
                await trio.sleep(0.05)
        (cid,) = ids
        assert docker_client.api.inspect_container(cid)["HostConfig"]["CpuShares"] == 2
        assert await docker_runner.set_paused(True) == (cid,)
        assert docker_client.api.inspect_container(cid)["State"]["Paused"] is True
        assert await docker_runner.set_paused(True) == ()  # already paused: nothing changes
        assert await docker_runner.set_paused(False, [cid]) == (cid,)
        state = docker_client.api.inspect_container(cid)["State"]
        assert state["Paused"] is False and state["Status"] == "running"
        nursery.cancel_scope.cancel()  # the run is cancelled: its container is removed
    assert runner_containers(docker_client) == []
