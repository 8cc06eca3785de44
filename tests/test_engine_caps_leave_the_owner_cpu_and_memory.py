"""Engines are capped in CPU and memory against what the owner uses (issue 16, item 2).

* The caps' arithmetic: ``cpu.max`` for a percentage of the machine, and
  the memory cap that follows the owner's use (what is available plus the
  engines' own use, less the headroom, never below the floor).
* :class:`engines.cgroup.EngineCgroup` writes them into a cgroup v2 tree,
  moving the daemon into a leaf first (the no-internal-processes rule), and
  rewrites the memory cap only when the owner's use moved it.  The tree is
  a directory laid out as cgroup2 lays it out (a kernel's own files cannot
  be made in a temporary directory), so these are the writes, not the kernel.
* A real daemon asked for the caps on a machine without a writable cgroup
  v2 ``cpu``/``memory`` controller logs why and still runs its tasks; where
  there is one, its engine runs inside the group with ``cpu.max`` set
  (skipped here, visibly, with the machine's reason, otherwise).
* A Docker engine's container gets the CPU cap as ``NanoCpus`` (real dockerd).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from engines.cgroup import CgroupOptions, EngineCgroup, cpu_max, memory_cap_bytes, unavailable
from tests._docker_env import docker_client, docker_host  # noqa: F401  (fixtures)

from ._daemons import Daemon, echo_task, wait_for

MiB = 1024 * 1024


def test_cpu_max_is_a_share_of_the_whole_machine() -> None:
    assert cpu_max(50, 2) == "100000 100000"  # half of two CPUs: one CPU's worth per period
    assert cpu_max(25, 8) == "200000 100000"
    assert cpu_max(0.001, 1) == "1000 100000"  # the kernel's 1 ms minimum
    assert cpu_max(0, 4) == "max 100000"


def test_the_memory_cap_shrinks_as_the_owner_uses_more() -> None:
    # 3 GiB available, engines use 1 GiB, 512 MiB kept for the owner: 3.5 GiB.
    assert memory_cap_bytes(3072 * MiB, 1024 * MiB, 512, 64) == 3584 * MiB
    # The owner took 2 GiB more: the engines' cap drops by as much.
    assert memory_cap_bytes(1024 * MiB, 1024 * MiB, 512, 64) == 1536 * MiB
    # Nothing left: the floor, so engines are throttled, not killed at once.
    assert memory_cap_bytes(0, 10 * MiB, 512, 64) == 64 * MiB


@pytest.mark.parametrize("kw", [{"cpu_pct": -1}, {"cpu_pct": 101}, {"memory_headroom_mb": -1},
                                {"floor_mb": 0}, {"name": "a/b"}, {"name": ""}, {"refresh_s": 0}])
def test_bad_cap_options_are_refused(kw) -> None:
    with pytest.raises(ValueError):
        CgroupOptions(**kw)


def _fake_cgroup2(root: Path, controllers: str, procs: str) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers)
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text(procs)
    return root


def _meminfo(path: Path, available_mb: int) -> str:
    path.write_text(f"MemTotal:       16000000 kB\nMemAvailable:   {available_mb * 1024} kB\n")
    return str(path)


def test_the_group_gets_its_caps_and_the_daemon_moves_to_a_leaf(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cg", "cpuset cpu io memory pids", "4242\n")
    options = CgroupOptions(cpu_pct=50, memory_headroom_mb=512)
    assert unavailable(options, mount=root) is None
    group = EngineCgroup.create(options, mount=root, meminfo=_meminfo(tmp_path / "meminfo", 3072))
    assert group.path == root / "engines"
    assert (root / "daemon" / "cgroup.procs").read_text() == "4242"  # moved out of the delegating group
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
    cpus = __import__("os").cpu_count() or 1
    assert (group.path / "cpu.max").read_text() == cpu_max(50, cpus)
    assert int((group.path / "memory.max").read_text()) == 2560 * MiB  # no engine yet: 3 GiB - 512 MiB
    assert int((group.path / "memory.high").read_text()) == int(2560 * MiB * 0.9)
    assert group.procs == str(group.path / "cgroup.procs")

    # Engines now use 1 GiB and the owner 1 GiB more: the cap follows.
    (group.path / "memory.current").write_text(str(1024 * MiB))
    assert group.refresh(meminfo=_meminfo(tmp_path / "meminfo", 1024)) == 1536 * MiB
    assert int((group.path / "memory.max").read_text()) == 1536 * MiB
    # A move under 5 % is not written again.
    (group.path / "memory.max").write_text("untouched")
    assert group.refresh(meminfo=_meminfo(tmp_path / "meminfo", 1050)) == 1536 * MiB
    assert (group.path / "memory.max").read_text() == "untouched"


def test_a_hierarchy_without_the_controllers_is_refused_with_the_reason(tmp_path: Path) -> None:
    root = _fake_cgroup2(tmp_path / "cg", "hugetlb", "")
    why = unavailable(CgroupOptions(cpu_pct=50), mount=root)
    assert why is not None and "['cpu']" in why and "hugetlb" in why
    assert unavailable(CgroupOptions(memory_headroom_mb=100), mount=tmp_path / "absent") is not None


QUICK = "import json, sys\njson.dump(json.load(sys.stdin), sys.stdout)\n"
SLOW = "import json, sys, time\njson.load(sys.stdin)\ntime.sleep(600)\nprint(1)\n"


def _capped(d: Daemon) -> None:
    cfg = d.home / "config.toml"
    text, n = re.subn(r"(?m)^engine_cpu_pct = 0\.0$", "engine_cpu_pct = 50.0", cfg.read_text())
    text, m = re.subn(r"(?m)^engine_memory_headroom_mb = 0$", "engine_memory_headroom_mb = 256", text)
    assert n == m == 1, text
    cfg.write_text(text)


@pytest.mark.slow
def test_without_a_writable_cgroup_v2_the_daemon_says_why_and_still_runs(daemon_factory) -> None:
    why = unavailable(CgroupOptions(cpu_pct=50, memory_headroom_mb=256))
    if why is None:
        pytest.skip("this machine has a writable cgroup v2 hierarchy: the capped test below runs instead")
    d: Daemon = daemon_factory()
    _capped(d)
    d.start()
    wait_for(lambda: "engine_cgroup_unavailable" in d.log_path.read_text(errors="replace"), timeout=30, what="the reason in the log")
    assert why.split(" (")[0] in d.log_path.read_text(errors="replace")
    engine = d.add_script_engine("quick", QUICK)
    r = d.post("/v1/tasks", echo_task(engine, {"x": 1}))
    assert r.status_code == 201, r.text
    d.wait_state(r.json()["cid"], "completed", timeout=60)


@pytest.mark.slow
def test_an_engine_runs_inside_the_capped_group(daemon_factory) -> None:
    why = unavailable(CgroupOptions(cpu_pct=50, memory_headroom_mb=256))
    if why is not None:
        pytest.skip(f"no writable cgroup v2 with cpu and memory here: {why}")
    d: Daemon = daemon_factory()
    _capped(d)
    d.start()
    engine = d.add_script_engine("slow", SLOW)
    r = d.post("/v1/tasks", echo_task(engine, {"x": 1}))
    assert r.status_code == 201, r.text
    assert d.proc is not None

    def engine_group() -> str | None:
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and b"slow.py" in (p / "cmdline").read_bytes():
                    return (p / "cgroup").read_text()
            except OSError:
                continue
        return None

    line = wait_for(engine_group, timeout=60, what="the engine to run")
    assert line.rstrip().endswith("/engines"), line
    rel = line.strip().split("::", 1)[1]
    mount = next(ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()
                 if ln.split()[2] == "cgroup2")
    group = Path(mount) / rel.lstrip("/")
    assert (group / "cpu.max").read_text().split()[1] == "100000"
    assert (group / "memory.max").read_text().strip() != "max"


@pytest.mark.docker
async def test_a_container_gets_the_cpu_cap_as_nano_cpus(docker_host: str, docker_client) -> None:  # noqa: F811
    from engines.docker import DockerOptions, open_docker_runner

    async with open_docker_runner(DockerOptions(docker_host=docker_host, timeout_s=20, max_cpus=0.25)) as runner:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run_cold, "meshd/noop:1", ["sh", "-c", "cat >/dev/null; sleep 600"], {},
                               {"timeout_s": 120, "cpus": 2.0})
            with trio.fail_after(30):
                while not (ids := runner.container_ids()):
                    await trio.sleep(0.05)
            host = docker_client.api.inspect_container(ids[0])["HostConfig"]
            assert host["NanoCpus"] == 250_000_000  # the engine asked for 2 CPUs: capped
            assert host["CpuShares"] == 2
            nursery.cancel_scope.cancel()
    with pytest.raises(ValueError):
        DockerOptions(docker_host=docker_host, max_cpus=0)
