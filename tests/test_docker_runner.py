"""The Docker runner against a real dockerd (scripts/start-docker.sh).

Every test that needs the daemon skips, with the reason, when none can be had
(see tests/_docker_env.py). Run just these with:
    .venv/bin/pytest tests/test_docker_runner.py -ra -s
"""

from __future__ import annotations

import io
import json
import statistics
import tarfile
import subprocess
import time

import docker.errors
import pytest
import trio

from engines.docker import (
    ContainerLimits,
    DockerOptions,
    DockerRunner,
    open_docker_runner,
)
from engines.errors import EngineCorrupt, EngineMissing, RunnerUnavailable
from engines.image import load_image, save_image, tarball_image_id
from tests._docker_env import (  # noqa: F401  (fixtures)
    docker_client,
    docker_host,
    docker_runner,
    runner_containers,
)

pytestmark = pytest.mark.docker

NOOP = "meshd/noop:1"
WORDCOUNT = "meshd/wordcount:1"
TEXT = {"text": "the quick brown fox\njumps over\tthe lazy dog\n", "lang": "en"}
COUNTS = {"words": 9, "lines": 2}


# -- no daemon needed ----------------------------------------------------------------

def test_options_reject_unsafe_or_nonsense_values() -> None:
    with pytest.raises(ValueError):
        DockerOptions(docker_host="not-a-url")
    with pytest.raises(ValueError):
        DockerOptions(user="0:0")
    with pytest.raises(ValueError):
        DockerOptions(timeout_s=0)
    with pytest.raises(ValueError):
        DockerOptions(memory_bytes=1024)


def test_limits_take_manifest_style_resources_and_fill_defaults() -> None:
    opts = DockerOptions(timeout_s=7, cpus=0.5)
    assert opts.limits(None) == ContainerLimits(7.0, opts.memory_bytes, 0.5, opts.pids)
    limits = opts.limits({"memory_mb": 64, "timeout_s": 2.5, "cpu_s": 10, "nofile": 32})
    assert (limits.memory_bytes, limits.timeout_s, limits.cpu_s, limits.nofile) == (
        64 * 1024 * 1024, 2.5, 10, 32)


def test_constructor_does_no_io_and_methods_need_open() -> None:
    runner = DockerRunner(DockerOptions(docker_host="unix:///nonexistent/docker.sock"))
    with pytest.raises(RunnerUnavailable):
        runner.client


async def test_unreachable_daemon_is_runner_unavailable() -> None:
    with pytest.raises(RunnerUnavailable):
        async with open_docker_runner(
                DockerOptions(docker_host="unix:///nonexistent/docker.sock")):
            pass  # pragma: no cover


# -- cold --------------------------------------------------------------------------------

async def test_cold_run_returns_engine_json(docker_runner, docker_client) -> None:
    outcome = await docker_runner.run_cold(WORDCOUNT, None, TEXT)
    assert outcome.ok, outcome
    assert outcome.output == COUNTS
    assert outcome.runner == "docker-cold"
    assert runner_containers(docker_client, "cold") == []


async def test_cold_run_reads_final_output_without_trailing_newline(docker_runner) -> None:
    outcome = await docker_runner.run_cold(NOOP, ["sh", "-c", "cat >/dev/null; printf '[1,2]'"], {})
    assert outcome.ok and outcome.output == [1, 2], outcome


async def test_cold_run_passes_large_input_through_stdin(docker_runner) -> None:
    text = "word " * 200_000  # 1 MB on stdin, more than any pipe buffer
    outcome = await docker_runner.run_cold(NOOP, None, {"text": text})
    assert outcome.ok and outcome.output == {"text": text}


async def test_hanging_container_times_out_and_is_removed(docker_runner, docker_client) -> None:
    outcome = await docker_runner.run_cold(NOOP, ["sh", "-c", "sleep 600"], {},
                                           {"timeout_s": 1})
    assert not outcome.ok and outcome.error.startswith("timeout after 1 s")
    assert outcome.duration_s < 10
    assert runner_containers(docker_client) == []


async def test_cancelled_cold_run_still_removes_its_container(docker_runner,
                                                              docker_client) -> None:
    with trio.move_on_after(1) as scope:
        await docker_runner.run_cold(NOOP, ["sh", "-c", "sleep 600"], {})
    assert scope.cancelled_caught
    assert runner_containers(docker_client) == []


async def test_output_flood_is_cut_and_fails(docker_host, docker_client) -> None:
    opts = DockerOptions(docker_host=docker_host, output_limit_bytes=256 * 1024, timeout_s=60)
    async with open_docker_runner(opts) as runner:
        started = time.monotonic()
        outcome = await runner.run_cold(NOOP, ["sh", "-c", "yes flood-flood-flood"], {})
    assert not outcome.ok and "output exceeds 262144 bytes" in outcome.error
    assert time.monotonic() - started < 30  # cut on the limit, not by the timeout
    assert runner_containers(docker_client) == []


async def test_nonzero_exit_fails_with_status_and_stderr(docker_runner) -> None:
    outcome = await docker_runner.run_cold(
        NOOP, ["sh", "-c", "echo boom >&2; echo '{}'; exit 3"], {})
    assert not outcome.ok and outcome.error == "exit status 3"
    assert "boom" in outcome.stderr


async def test_non_json_output_fails(docker_runner) -> None:
    outcome = await docker_runner.run_cold(NOOP, ["sh", "-c", "echo not json"], {})
    assert not outcome.ok and outcome.error == "output is not JSON"


async def test_memory_hog_is_oom_killed(docker_runner, docker_client) -> None:
    hog = ["awk", 'BEGIN { s = "0123456789abcdef"; while (1) s = s s }']
    outcome = await docker_runner.run_cold(NOOP, hog, {}, {"memory_mb": 32})
    assert not outcome.ok and "out of memory" in outcome.error, outcome
    assert runner_containers(docker_client) == []


async def test_engine_that_cannot_start_fails_cold_and_warm(docker_runner,
                                                            docker_client) -> None:
    cold = await docker_runner.run_cold(NOOP, ["/no/such/engine"], {})
    warm = await docker_runner.run_warm(NOOP, ["/no/such/engine"], {})
    assert not cold.ok and cold.error.startswith("docker: ")
    assert not warm.ok and warm.error.startswith("docker: ")
    assert runner_containers(docker_client) == []


async def test_missing_image_is_engine_missing(docker_runner) -> None:
    with pytest.raises(EngineMissing) as info:
        await docker_runner.run_cold("meshd/absent:0", None, {})
    assert info.value.missing == ["meshd/absent:0"]


# -- sandbox -------------------------------------------------------------------------------

async def test_sandbox_has_no_network_no_root_and_a_read_only_root(docker_runner) -> None:
    outcome = await docker_runner.run_cold(NOOP, ["/engine/probe"], {})
    assert outcome.ok, outcome
    probe = outcome.output
    assert probe["interfaces"] == ["lo"]  # network_mode=none: loopback only
    assert (probe["uid"], probe["gid"]) == (65534, 65534)
    assert probe["root_writable"] is False
    assert probe["tmp_writable"] is True


async def test_sandbox_drops_capabilities_and_limits_pids(docker_runner) -> None:
    script = ("cat >/dev/null; caps=$(grep CapEff /proc/self/status | awk '{print $2}'); "
              "nnp=$(grep NoNewPrivs /proc/self/status | awk '{print $2}'); "
              "printf '{\"caps\":\"%s\",\"nnp\":%s,\"pids\":\"%s\"}' \"$caps\" \"$nnp\" "
              "\"$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)\"")
    outcome = await docker_runner.run_cold(NOOP, ["sh", "-c", script], {}, {"pids": 16})
    assert outcome.ok, outcome
    assert int(outcome.output["caps"], 16) == 0
    assert outcome.output["nnp"] == 1
    assert outcome.output["pids"] == "16"


# -- warm ----------------------------------------------------------------------------------

async def test_warm_runs_are_correct_and_much_faster_than_cold(docker_runner) -> None:
    cold = [await docker_runner.run_cold(WORDCOUNT, None, TEXT) for _ in range(3)]
    assert all(o.ok and o.output == COUNTS for o in cold)
    first = await docker_runner.run_warm(WORDCOUNT, None, TEXT)  # starts the container
    assert first.ok and first.output == COUNTS, first
    warm = []
    for i in range(20):
        outcome = await docker_runner.run_warm(WORDCOUNT, None, {"text": "a b " * i})
        assert outcome.ok and outcome.output == {"words": 2 * i, "lines": 0}, outcome
        assert outcome.runner == "docker-warm"
        warm.append(outcome.duration_s)
    cold_ms = statistics.median(o.duration_s for o in cold) * 1000
    warm_ms = statistics.median(warm) * 1000
    print(f"\ndocker_cold_ms={cold_ms:.1f} docker_warm_ms={warm_ms:.2f}")
    assert warm_ms < 50
    assert warm_ms * 5 < cold_ms
    assert docker_runner.statistics().warm_starts == 1


async def test_concurrent_warm_tasks_are_serialized_on_one_container(docker_runner) -> None:
    results = {}

    async def one(i: int) -> None:
        results[i] = await docker_runner.run_warm(NOOP, None, {"i": i})

    async with trio.open_nursery() as nursery:
        for i in range(16):
            nursery.start_soon(one, i)
    assert all(results[i].ok and results[i].output == {"i": i} for i in range(16))
    assert docker_runner.statistics().warm_starts == 1


async def test_warm_container_that_dies_fails_its_task_and_is_restarted(docker_runner,
                                                                        docker_client) -> None:
    assert (await docker_runner.run_warm(WORDCOUNT, None, TEXT)).ok
    bad = await docker_runner.run_warm(WORDCOUNT, None, {"no_text": 1})  # engine exits 2
    assert not bad.ok and bad.error == "warm container exited with status 2", bad
    assert "missing member" in bad.stderr
    again = await docker_runner.run_warm(WORDCOUNT, None, TEXT)
    assert again.ok and again.output == COUNTS
    stats = docker_runner.statistics()
    assert (stats.warm_starts, stats.warm_containers) == (2, 1)
    assert len(runner_containers(docker_client, "jsonl")) == 1


async def test_warm_timeout_removes_the_container(docker_runner, docker_client) -> None:
    hang = ["sh", "-c", "read line; sleep 600"]
    outcome = await docker_runner.run_warm(NOOP, hang, {}, {"timeout_s": 1})
    assert not outcome.ok and outcome.error.startswith("timeout after 1 s")
    assert runner_containers(docker_client, "jsonl") == []


async def test_warm_engine_writing_two_lines_per_task_is_restarted(docker_runner) -> None:
    # The second line may arrive with the first (the container is replaced
    # at once) or later (the next task sees it and fails); never is it taken
    # as the next task's answer.
    chatty = ["sh", "-c", "while read l; do echo 1; echo 2; done"]
    outcomes = [await docker_runner.run_warm(NOOP, chatty, {}) for _ in range(4)]
    assert all(o.output == 1 if o.ok else "more than one line" in o.error for o in outcomes)
    assert outcomes[0].ok
    assert docker_runner.statistics().warm_starts >= 2


async def test_closing_the_runner_removes_warm_containers(docker_host, docker_client) -> None:
    async with open_docker_runner(DockerOptions(docker_host=docker_host)) as runner:
        assert (await runner.run_warm(NOOP, None, {"x": 1})).ok
        assert len(runner_containers(docker_client, "jsonl")) == 1
    assert runner_containers(docker_client) == []


# -- images --------------------------------------------------------------------------------

def _build_unique_image(client) -> str:
    nonce = f"{time.time_ns()}"
    dockerfile = f"FROM {NOOP}\nLABEL org.meshd.test.nonce={nonce}\n".encode()
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), rm=True)
    return image.id


async def test_save_load_round_trip_keeps_the_image_id(docker_runner, docker_client) -> None:
    image_id = await trio.to_thread.run_sync(_build_unique_image, docker_client)
    try:
        tar = await trio.to_thread.run_sync(save_image, docker_client, image_id)
        assert tarball_image_id(tar) == image_id
        docker_client.images.remove(image_id, force=True)
        assert await trio.to_thread.run_sync(load_image, docker_client, tar, image_id) == image_id
        # ensure_image is a no-op when present, and the loaded image runs.
        assert await docker_runner.ensure_image(tar, image_id) == image_id
        outcome = await docker_runner.run_cold(image_id, None, {"x": 1})
        assert outcome.ok and outcome.output == {"x": 1}
    finally:
        docker_client.images.remove(image_id, force=True)


async def test_ensure_image_loads_a_tarball_file(docker_runner, docker_client, tmp_path) -> None:
    image_id = await trio.to_thread.run_sync(_build_unique_image, docker_client)
    try:
        path = await trio.to_thread.run_sync(save_image, docker_client, image_id,
                                             tmp_path / "engine.tar")
        docker_client.images.remove(image_id, force=True)
        assert await docker_runner.ensure_image(path, image_id) == image_id
    finally:
        docker_client.images.remove(image_id, force=True)


async def test_load_refuses_a_tarball_with_another_id(docker_client) -> None:
    tar = await trio.to_thread.run_sync(save_image, docker_client, NOOP)
    with pytest.raises(EngineCorrupt):
        load_image(docker_client, tar, "sha256:" + "0" * 64)
    with pytest.raises(EngineCorrupt):
        load_image(docker_client, b"not a tarball", None)


def _with_names(tar: bytes, tags: list[str]) -> bytes:
    """``tar`` (saved by id) rewritten to name ``tags``, as a hostile publisher could."""
    src = tarfile.open(fileobj=io.BytesIO(tar))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:") as dst:
        for member in src:
            handle = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.loads(handle.read())
                manifest[0]["RepoTags"] = tags
                data = json.dumps(manifest).encode()
                member.size = len(data)
                handle = io.BytesIO(data)
            dst.addfile(member, handle)
        repos = json.dumps({t.rsplit(":", 1)[0]: {t.rsplit(":", 1)[1]: "0" * 64} for t in tags}).encode()
        info = tarfile.TarInfo("repositories")
        info.size = len(repos)
        dst.addfile(info, io.BytesIO(repos))
    return out.getvalue()


async def test_loading_an_image_retags_nothing_on_the_host(docker_client) -> None:
    image_id = await trio.to_thread.run_sync(_build_unique_image, docker_client)
    victim = f"meshd-test-victim:{time.time_ns()}"
    docker_client.images.get(NOOP).tag(victim)
    try:
        tar = _with_names(await trio.to_thread.run_sync(save_image, docker_client, image_id), [victim])
        assert tarball_image_id(tar) == image_id
        docker_client.images.remove(image_id, force=True)
        assert await trio.to_thread.run_sync(load_image, docker_client, tar, image_id) == image_id
        # The host's tag still names the host's image, and the loaded image is unnamed.
        assert docker_client.images.get(victim).id == docker_client.images.get(NOOP).id
        assert docker_client.images.get(image_id).tags == []
    finally:
        for ref in (victim, image_id):
            try:
                docker_client.images.remove(ref, force=True)
            except docker.errors.ImageNotFound:
                pass  # a retag (the bug) left one name fewer


# -- figures -------------------------------------------------------------------------------

async def test_reports_docker_timings_against_plain_docker_run(docker_runner, docker_host,
                                                               capsys) -> None:
    def plain_run() -> float:
        started = time.monotonic()
        subprocess.run(["docker", "-H", docker_host, "run", "--rm", "-i", NOOP],
                       input=b'{"x":1}', check=True, capture_output=True)
        return time.monotonic() - started

    baseline = [await trio.to_thread.run_sync(plain_run) for _ in range(5)]
    cold = [(await docker_runner.run_cold(NOOP, None, {"x": 1})).duration_s for _ in range(5)]
    await docker_runner.run_warm(NOOP, None, {"x": 1})
    warm = [(await docker_runner.run_warm(NOOP, None, {"x": 1})).duration_s for _ in range(50)]
    figures = {name: statistics.median(values) * 1000 for name, values in
               (("docker_run_rm_ms", baseline), ("docker_cold_ms", cold),
                ("docker_warm_ms", warm))}
    with capsys.disabled():
        print("\n" + " ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    assert figures["docker_warm_ms"] < 50
