"""The cold native runner contains misbehaving engines and reports them as failed outcomes."""

from __future__ import annotations

import os
import socket
import sys

import psutil
import pytest
import trio

from engines import NativeOptions, NativeRunner, Resources
from engines.sandbox import network_isolation_available

PY = sys.executable

FORK_AND_HANG = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
sys.stderr.write(f"child={child.pid}\\n"); sys.stderr.flush()
time.sleep(600)
"""

FORK_AND_EXIT = """\
import json, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.DEVNULL)
json.dump({"child": child.pid}, sys.stdout)
"""


async def wait_until(predicate, timeout=10.0):
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def py(code: str) -> list[str]:
    return [PY, "-c", code]


async def test_engine_output_is_parsed_as_json():
    outcome = await NativeRunner().run(py("import json,sys; json.dump({'twice': 2*json.load(sys.stdin)}, sys.stdout)"), 21)
    assert outcome.ok and outcome.output == {"twice": 42} and outcome.runner == "native-cold"


async def test_timeout_kills_hanging_engine_and_its_forked_children():
    outcome = await NativeRunner().run(py(FORK_AND_HANG), {}, timeout_s=1.0)
    assert not outcome.ok and outcome.error == "timeout after 1 s"
    child = int(outcome.stderr.split("child=")[1].split()[0])
    await wait_until(lambda: gone(child))


async def test_children_left_behind_by_a_finished_engine_are_killed():
    outcome = await NativeRunner().run(py(FORK_AND_EXIT), {})
    assert outcome.ok
    await wait_until(lambda: gone(outcome.output["child"]))


async def test_cancellation_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(600)"
    runner = NativeRunner()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run, py(code), {})
        await wait_until(lambda: pidfile.exists() and pidfile.read_text())
        nursery.cancel_scope.cancel()
    await wait_until(lambda: gone(int(pidfile.read_text())))
    assert runner.statistics().running == 0


async def test_output_flood_is_cut():
    runner = NativeRunner(NativeOptions(stdout_limit=64 * 1024))
    outcome = await runner.run(py("import sys\nwhile True: sys.stdout.write('x' * 65536)"), {})
    assert not outcome.ok and outcome.error == f"output exceeds {64 * 1024} bytes"


async def test_stderr_is_truncated():
    runner = NativeRunner(NativeOptions(stderr_limit=1000))
    outcome = await runner.run(py("import sys; sys.stderr.write('e' * 100000); print('{}')"), {})
    assert outcome.ok and outcome.stderr == "e" * 1000


@pytest.mark.parametrize("code, error", [
    ("import sys; sys.exit(3)", "exit status 3"),
    ("print('not json {')", "output is not JSON"),
    ("pass", "output is not JSON"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV"),
])
async def test_bad_exit_or_garbage_output_is_a_failed_outcome(code, error):
    outcome = await NativeRunner().run(py(code), {})
    assert not outcome.ok and outcome.error == error


async def test_unstartable_engine_is_a_failed_outcome(tmp_path):
    outcome = await NativeRunner().run([str(tmp_path / "missing")], {})
    assert not outcome.ok and outcome.error.startswith("cannot start engine")


async def test_memory_hog_hits_rlimit_as():
    outcome = await NativeRunner().run(py("x = bytearray(1024 * 1024 * 1024)"), {},
                                       resources=Resources(memory_mb=256))
    assert not outcome.ok and "MemoryError" in outcome.stderr


async def test_cpu_hog_hits_rlimit_cpu():
    outcome = await NativeRunner().run(py("while True: pass"), {}, resources=Resources(cpu_s=1, timeout_s=20))
    assert not outcome.ok and outcome.error in ("killed by SIGXCPU", "killed by SIGKILL")


async def test_environment_is_clean_and_home_is_removed():
    code = "import json, os; json.dump({'env': dict(os.environ), 'cwd': os.getcwd()}, open(1, 'w'))"
    os.environ["MESHD_SECRET_FOR_TEST"] = "leak"
    try:
        outcome = await NativeRunner().run(py(code), {})
    finally:
        del os.environ["MESHD_SECRET_FOR_TEST"]
    env = outcome.output["env"]
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG"}
    assert env["PATH"] == NativeOptions().path and env["HOME"] == env["TMPDIR"] == outcome.output["cwd"]
    assert not os.path.exists(env["HOME"])


async def test_usr_bin_env_shebang_scripts_find_their_interpreter(tmp_path):
    script = tmp_path / "engine"
    script.write_text("#!/usr/bin/env sh\necho '{\"sh\": true}'\n")
    script.chmod(0o755)
    outcome = await NativeRunner().run([str(script)], {})
    assert outcome.ok and outcome.output == {"sh": True}


async def test_network_isolation_is_reported_and_enforced():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = (f"import json, socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); r = True\n"
            "except OSError:\n    r = False\njson.dump(r, open(1, 'w'))")
    runner = NativeRunner()
    try:
        outcome = await runner.run(py(code), {})
    finally:
        listener.close()
    isolated = network_isolation_available()
    assert runner.statistics().network_isolated is isolated
    assert outcome.ok and outcome.output is (not isolated)


async def test_jsonl_protocol_reads_the_first_line():
    code = "import sys, json; v = json.loads(sys.stdin.readline()); print(json.dumps(v)); print('trailing')"
    outcome = await NativeRunner().run(py(code), [1, 2], protocol="jsonl")
    assert outcome.ok and outcome.output == [1, 2]
