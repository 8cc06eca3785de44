"""Docker engines step aside for the machine's owner by pausing, and checkpoint in a mounted directory (issue 16).

The owner policy's suspend pauses every container the Docker runner runs
(``DockerRunner.set_paused``, the cgroup freezer: the engine keeps its
memory and its place) and continue unpauses them; against a real dockerd.
A running container also has the smallest CPU weight (``CpuShares`` 2, the
Docker counterpart of the native engines' nice 19 and ``SCHED_IDLE``), so
the owner's processes come first even while it runs.  A task with
checkpoints gets its checkpoint directory mounted at ``/meshd/checkpoint``
and named in ``MESHD_CHECKPOINT_DIR``: the engine reads the state to resume
from there and saves the next one.
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


async def test_a_docker_engine_resumes_from_and_saves_to_its_mounted_checkpoint_directory(docker_runner,
                                                                                            tmp_path) -> None:
    import json
    import os

    from engines.checkpoint import CONTAINER_DIR, CheckpointDir

    ck = CheckpointDir(str(tmp_path / "ck"), 1.0)
    os.mkdir(ck.path)
    os.chmod(ck.path, 0o777)  # as the engine host does: the container's user is not ours
    (tmp_path / "ck" / "checkpoint").write_text("3")
    script = ('cat >/dev/null; s=$(cat "$MESHD_CHECKPOINT_DIR/checkpoint"); '
              'echo $((s + 1)) > "$MESHD_CHECKPOINT_DIR/.new" && mv "$MESHD_CHECKPOINT_DIR/.new" '
              '"$MESHD_CHECKPOINT_DIR/checkpoint"; printf \'{"resumed": %s, "dir": "%s"}\' "$s" "$MESHD_CHECKPOINT_DIR"')
    out = await docker_runner.run_cold(NOOP, ["sh", "-c", script], {}, env=ck.env(CONTAINER_DIR),
                                       binds={ck.path: CONTAINER_DIR})
    assert out.ok, out
    assert out.output == {"resumed": 3, "dir": CONTAINER_DIR}
    assert json.loads((tmp_path / "ck" / "checkpoint").read_text()) == 4
