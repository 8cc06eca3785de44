"""Native engines run jailed: no daemon home, no network, a bounded process
count, an unprivileged uid; without a jail they are refused unless the
operator allows the weak sandbox.  Cold runs and warm pool workers alike."""

from __future__ import annotations

import json
import os
import shutil
import stat
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import pytest
import trio

from engines import EngineError, NativeOptions, NativeRunner, PoolOptions, WarmPool, WorkerSpec
from engines.sandbox import jail_unavailable

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(jail_unavailable("bwrap") is not None,
                                reason=f"no jail on this machine: {jail_unavailable('bwrap')}")

PROBE = """\
import json, os, socket, sys
out = {"uid": os.getuid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
with open("/proc/self/status") as f:
    out["cap_eff"] = [l.split()[1] for l in f if l.startswith("CapEff")][0]
for name in sys.argv[1:]:
    try:
        with open(name) as f:
            out[name] = "read: " + f.read()
    except OSError as exc:
        out[name] = type(exc).__name__
def connect(addr):
    try:
        socket.create_connection(addr, timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
out["loopback"] = connect(("127.0.0.1", int(os.environ.get("PORT", "0")) or PORT))
out["outside"] = connect(("192.0.2.1", 80))
json.dump(out, sys.stdout)
"""

#: Forks children that sleep (never more than 2,000 attempts: bounded even
#: unjailed), and reports how many forks the kernel allowed.
FORK_BOMB = """\
import json, os, sys, time
made, refused = 0, None
for _ in range(2000):
    try:
        pid = os.fork()
    except OSError as exc:
        refused = type(exc).__name__
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    made += 1
json.dump({"made": made, "refused": refused}, sys.stdout)
"""


@pytest.fixture
def daemon_home(tmp_path):
    """A directory laid out like a daemon home, with its secrets."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "identity").write_text("SECRET-IDENTITY")
    (home / "api-token").write_text("SECRET-TOKEN")
    return home


def probe(port: int, *paths: str) -> list[str]:
    return [PY, "-c", PROBE.replace("PORT)", f"{port})"), *paths]


async def test_an_engine_cannot_read_the_home_reach_the_network_or_gain_privilege(daemon_home):
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        runner = NativeRunner(NativeOptions(hide=(str(daemon_home),)))
        outcome = await runner.run(probe(listener.getsockname()[1], str(daemon_home / "identity"),
                                         str(daemon_home / "api-token")), {})
    finally:
        listener.close()
    assert outcome.ok, outcome
    out = outcome.output
    assert out[str(daemon_home / "identity")] == "FileNotFoundError"
    assert out[str(daemon_home / "api-token")] == "FileNotFoundError"
    assert out["loopback"] != "connected" and out["outside"] != "connected"
    assert out["uid"] != 0 and int(out["cap_eff"], 16) == 0
    assert max(out["pids"]) < 10  # its own pid namespace: none of the host's processes
    assert runner.statistics().jailed is True


async def test_a_home_under_a_bound_directory_is_hidden(tmp_path):
    engine = tmp_path / "engine"
    (engine / "home").mkdir(parents=True)
    (engine / "home" / "identity").write_text("SECRET")
    (engine / "run.py").write_text(PROBE.replace("PORT)", "1)"))
    tmp_path.chmod(0o755)
    engine.chmod(0o755)
    runner = NativeRunner(NativeOptions(hide=(str(engine / "home"),)))
    outcome = await runner.run([PY, "run.py", str(engine / "home" / "identity"), str(engine / "run.py")], {},
                               cwd=str(engine))
    assert outcome.ok, outcome
    assert outcome.output[str(engine / "home" / "identity")] == "FileNotFoundError"
    assert outcome.output[str(engine / "run.py")].startswith("read: ")  # its own directory it sees


async def test_an_engine_directory_inside_the_hidden_home_stays_visible(tmp_path):
    # A configured interpreter installed beside the daemon's home binds a parent
    # of that home (its prefix is visible read-only); the home is then hidden
    # by a tmpfs, and the engine's own directory inside it must be bound again
    # above that tmpfs, reachable by the engine uid.  (The verifier's daemon
    # test broke on exactly this: "bwrap: Can't chdir to <home>/engines/<cid>".)
    home = tmp_path / "home"
    engine = home / "engines" / "bafyengine.exe"
    engine.mkdir(parents=True)
    (home / "identity").write_text("SECRET")
    (engine / "run.py").write_text(PROBE.replace("PORT)", "1)"))
    tmp_path.chmod(0o755)
    home.chmod(0o700)
    engine.chmod(0o755)
    runner = NativeRunner(NativeOptions(hide=(str(home),), ro_paths=(str(tmp_path),)))
    outcome = await runner.run([PY, "run.py", str(home / "identity"), str(engine / "run.py")], {}, cwd=str(engine))
    assert outcome.ok, outcome
    assert outcome.output[str(home / "identity")] == "FileNotFoundError"
    assert outcome.output[str(engine / "run.py")].startswith("read: ")


async def test_the_network_is_on_only_when_the_node_allows_it():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        outcome = await NativeRunner(NativeOptions(isolate_network=False)).run(probe(port), {})
    finally:
        listener.close()
    assert outcome.ok and outcome.output["loopback"] == "connected"


async def test_a_fork_bomb_stops_at_the_jails_process_limit():
    token = f"meshd-bomb-{uuid.uuid4().hex}"
    outcome = await NativeRunner(NativeOptions(nproc=32)).run([PY, "-c", FORK_BOMB, token], {}, timeout_s=60)
    assert outcome.ok, outcome
    assert outcome.output["refused"] == "BlockingIOError" and outcome.output["made"] < 32

    def left() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline", "status"])
                if token in (p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE]
    with trio.fail_after(10):
        while left():
            await trio.sleep(0.05)


async def test_an_honest_engine_still_works_cold_and_warm(tmp_path):
    (tmp_path / "double.py").write_text("def double(x):\n    return {'twice': 2 * x}\n")
    tmp_path.chmod(0o755)
    cold = await NativeRunner().run([PY, "-c", "import json,sys; json.dump(2 * json.load(sys.stdin), sys.stdout)"], 21)
    assert cold.ok and cold.output == 42
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(WorkerSpec("python", str(tmp_path), entry="double:double"),
                                            PoolOptions(workers=1)).serve)
        assert [(await pool.run(i)).output for i in range(3)] == [{"twice": 0}, {"twice": 2}, {"twice": 4}]
        nursery.cancel_scope.cancel()


async def test_a_warm_worker_is_jailed_too(tmp_path, daemon_home):
    (tmp_path / "peek.py").write_text(
        "import os\n"
        "def peek(path):\n"
        "    try:\n"
        "        return open(path).read()\n"
        "    except OSError as exc:\n"
        "        return [type(exc).__name__, os.getuid()]\n")
    tmp_path.chmod(0o755)
    options = NativeOptions(hide=(str(daemon_home),))
    async with trio.open_nursery() as nursery:
        pool = await nursery.start(WarmPool(WorkerSpec("python", str(tmp_path), entry="peek:peek"),
                                            PoolOptions(workers=1), options).serve)
        outcome = await pool.run(str(daemon_home / "identity"))
        assert outcome.ok and outcome.output[0] == "FileNotFoundError" and outcome.output[1] != 0
        nursery.cancel_scope.cancel()


async def test_without_a_jail_native_engines_are_refused_unless_the_weak_sandbox_is_allowed(tmp_path):
    missing = str(tmp_path / "no-bwrap")
    refused = await NativeRunner(NativeOptions(bwrap=missing)).run([PY, "-c", "print(1)"], {})
    assert not refused.ok and refused.error.startswith("native engines are refused")
    assert "weak_sandbox" in refused.error
    async with trio.open_nursery() as nursery:
        with pytest.raises(EngineError, match="native engines are refused"):
            await nursery.start(WarmPool(WorkerSpec("python", str(tmp_path), entry="x:y"), PoolOptions(workers=1),
                                         NativeOptions(bwrap=missing)).serve)
    weak = NativeRunner(NativeOptions(bwrap=missing, weak_sandbox=True))
    allowed = await weak.run([PY, "-c", "print(1)"], {})
    assert allowed.ok and allowed.output == 1 and weak.statistics().jailed is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_a_node_run_by_an_unprivileged_user_jails_its_engines(tmp_path, request):
    """Runs the cold runner as uid nobody, as a node started by an ordinary
    user: bubblewrap then makes the user namespace itself."""
    work = Path(tempfile.mkdtemp(prefix="meshd-test-nobody-"))  # reachable by nobody, unlike tmp_path
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    os.chown(work, 65534, 65534)
    (work / "identity").write_text("SECRET")
    os.chown(work / "identity", 65534, 65534)
    script = (
        "import json, os, sys, trio\n"
        "from engines import NativeOptions, NativeRunner\n"
        f"probe = {probe(1, str(work / 'identity'))!r}\n"
        "async def main():\n"
        f"    r = NativeRunner(NativeOptions(hide=({str(work)!r},), work_root={str(work)!r}))\n"
        "    o = await r.run(probe, {})\n"
        "    json.dump({'uid': os.getuid(), 'ok': o.ok, 'error': o.error, 'out': o.output,\n"
        "               'jailed': r.statistics().jailed}, sys.stdout)\n"
        "trio.run(main)\n")
    # A private mount namespace where /root (0700 here, and holding this
    # machine's Python) is an empty 0755 tmpfs with only the Python put back.
    base = os.path.realpath(sys.base_prefix)
    keep = tmp_path / "python"
    keep.mkdir()
    setup = (f"mount --bind {base} {keep} && mount -t tmpfs -o mode=755 tmpfs /root && mkdir -p {base} && "
             f"mount --bind {keep} {base} && " if base.startswith("/root/") else "")
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            setup + 'exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all '
            '-- "$0" -c "$1"', PY, script]
    # uid nobody must reach the checkout and its .venv: a fresh clone under a
    # 0700 ``mktemp -d`` (as CI makes one) is not.  Traverse-only (o+x) is
    # added where missing, for this test, and taken back after it.
    for d in [REPO, *REPO.parents]:
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(d, mode | stat.S_IXOTH)
            request.addfinalizer(lambda d=d, mode=mode: os.chmod(d, mode))
    proc = subprocess.run(argv, capture_output=True, timeout=120, check=False, cwd=str(REPO),
                          env={"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
                               "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["uid"] == 65534 and result["jailed"] is True and result["ok"], result
    assert result["out"][str(work / "identity")] == "FileNotFoundError"
    assert result["out"]["uid"] == 65534 and int(result["out"]["cap_eff"], 16) == 0
