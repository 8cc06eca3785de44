"""The cold native runner contains misbehaving engines and reports them as failed outcomes."""

from __future__ import annotations

import os
import socket
import sys
import uuid

import psutil
import pytest
import trio

from engines import NativeOptions, NativeRunner, Resources

PY = sys.executable

# Engines run in their own pid namespace, so the pids they see mean nothing
# here: their children carry a token in argv, by which the host finds them.
FORK_AND_HANG = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]])
sys.stderr.write("forked\\n"); sys.stderr.flush()
time.sleep(600)
"""

FORK_AND_EXIT = """\
import json, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", sys.argv[1]], stdout=subprocess.DEVNULL)
json.dump({"child": True}, sys.stdout)
"""


async def wait_until(predicate, timeout=10.0):
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def py(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


def with_token(token: str) -> list[int]:
    """Host pids of the live (not zombie) processes with ``token`` in their argv."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if token in (p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p.pid)
    return found


def token() -> str:
    return f"meshd-test-{uuid.uuid4().hex}"


async def test_engine_output_is_parsed_as_json():
    outcome = await NativeRunner().run(py("import json,sys; json.dump({'twice': 2*json.load(sys.stdin)}, sys.stdout)"), 21)
    assert outcome.ok and outcome.output == {"twice": 42} and outcome.runner == "native-cold"


async def test_timeout_kills_hanging_engine_and_its_forked_children():
    t = token()
    outcome = await NativeRunner().run(py(FORK_AND_HANG, t), {}, timeout_s=3.0)
    assert not outcome.ok and outcome.error == "timeout after 3 s" and "forked" in outcome.stderr
    await wait_until(lambda: not with_token(t))


async def test_children_left_behind_by_a_finished_engine_are_killed():
    t = token()
    outcome = await NativeRunner().run(py(FORK_AND_EXIT, t), {})
    assert outcome.ok and outcome.output == {"child": True}
    await wait_until(lambda: not with_token(t))


async def test_cancellation_kills_the_process_group():
    t = token()
    runner = NativeRunner()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run, py("import time; time.sleep(600)", t), {})
        await wait_until(lambda: with_token(t))
        nursery.cancel_scope.cancel()
    await wait_until(lambda: not with_token(t))
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
    # PWD is bubblewrap's (it sets it to the working directory it enters).
    assert env.pop("PWD", outcome.output["cwd"]) == outcome.output["cwd"]
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
    # The jail always has its own network namespace (no root needed).
    assert runner.statistics().network_isolated is True and runner.statistics().jailed is True
    assert outcome.ok and outcome.output is False


async def test_jsonl_protocol_reads_the_first_line():
    code = "import sys, json; v = json.loads(sys.stdin.readline()); print(json.dumps(v)); print('trailing')"
    outcome = await NativeRunner().run(py(code), [1, 2], protocol="jsonl")
    assert outcome.ok and outcome.output == [1, 2]
