"""Five daemons, one of them dishonest: replicated runs catch it, every peer
bans it from the same verdicts, and every accepted result is correct."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ._daemons import Daemon, echo_task, wait_for

pytestmark = pytest.mark.slow

LIAR = textwrap.dedent('''\
    import json, subprocess, sys
    # A dishonest interpreter: run the real engine, then wrap every output.
    proc = subprocess.Popen([sys.executable, *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        try:
            value = json.loads(line)
        except ValueError:
            sys.stdout.write(line)
        else:
            sys.stdout.write(json.dumps({"forged": value}) + "\\n")
        sys.stdout.flush()
    sys.exit(proc.wait())
''')

ROLES = ("manager", "runner", "verifier")


def _config(d: Daemon, verifiers: list[str], interpreter: Path | None = None) -> None:
    cfg = d.home / "config.toml"
    text = re.sub(r"slots = \d+", "slots = 2", cfg.read_text())
    # The mesh's verifiers: only their verdicts count, on every node (the liar's included).
    text, n = re.subn(r"(\[verify\][^\[]*?)keys = \[\]", lambda m: m.group(1) + "keys = " + json.dumps(verifiers), text)
    assert n == 1
    if interpreter is not None:
        text = text.replace("[engines.interpreters]\n", f'[engines.interpreters]\npython3 = "{interpreter}"\n')
        assert str(interpreter) in text
    cfg.write_text(text)


def _canonical_output(d: Daemon, cid: str):
    """The output the verdict chose, once its block has reached ``d``.

    Blocks travel separately from the records naming them, so the output may
    arrive a little after the verdict: wait for it (bounded) rather than
    read it once.
    """
    st = d.get(f"/v1/tasks/{cid}").json()
    verdict = st["verification"]["verdict"]
    assert verdict is not None, st
    out_cid = verdict["output"]["/"]

    def visible():
        for r in d.get(f"/v1/results/{cid}").json()["results"]:
            if r["output_cid"] == out_cid and r["output"] is not None:
                return [r["output"]]
        return None

    return wait_for(visible, timeout=60, what=f"canonical output of {cid} to be visible")[0]


# The waits below add up to more than the suite's 300 s default: phase 1
# (240 s), the ban (60 s) and phase 2 (240 s).  Under load, block requests
# that time out (see the closing note of issue 11) make phase 2 the slow part.
@pytest.mark.timeout(900)
def test_dishonest_node_is_detected_banned_and_outvoted(daemon_factory, tmp_path: Path) -> None:
    # Laid out as an installation (<prefix>/bin/python3): the node binds the
    # prefix read-only into every engine jail, and the engine uid must be
    # able to reach and run it.
    prefix = tmp_path / "liar"
    liar = prefix / "bin" / "python3"
    liar.parent.mkdir(parents=True)
    liar.write_text(f"#!{sys.executable}\n" + LIAR)
    liar.chmod(0o755)
    prefix.chmod(0o755)

    a = daemon_factory("a", roles=ROLES)
    honest = [daemon_factory(f"h{i}", roles=ROLES, bootstrap=[a.multiaddr], trust=[a.public_hex]) for i in range(3)]
    bad = daemon_factory("bad", roles=("runner",), bootstrap=[a.multiaddr], trust=[a.public_hex])
    verifiers = [d.peer_id for d in (a, *honest)]
    for d in (a, *honest):
        _config(d, verifiers)
    _config(bad, verifiers, liar)
    a.start()
    for d in [*honest, bad]:
        d.start()
    nodes = [a, *honest, bad]
    for d in nodes:
        wait_for(lambda d=d: sum(1 for p in d.get("/v1/peers").json()["peers"] if p["roles"]) >= 4,
                 timeout=60, what=f"{d.home.name} to see the mesh")

    engine = a.add_echo_engine()
    # Every node publishes the same engine itself (content-addressed: the same
    # CID), so its blocks are local everywhere.  This test is about judging
    # results; moving engine blocks between daemons is covered elsewhere
    # (test_engines_in_daemon, test_mesh_daemons), and a block fetch that
    # times out under load must not decide whether the liar gets to lie.
    for d in [*honest, bad]:
        assert d.add_echo_engine() == engine
    # Everyone (the liar included) has caught up with the mesh before work arrives.
    wait_for(lambda: all(any(e["cid"] == engine for e in d.get("/v1/engines").json()["engines"]) for d in nodes),
             timeout=60, what="every node to see the engine")
    verify = {"replicas": 2, "quorum": 2}
    started = time.monotonic()
    phase1 = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, {"i": i}, verify=verify) for i in range(60)]}).json()["tasks"]]
    wait_for(lambda: all(a.get(f"/v1/tasks/{c}").json()["state"] == "completed" for c in phase1),
             timeout=240, what="phase 1 verified")

    # Every peer computes the same ban from the same verdicts.
    wait_for(lambda: all(bad.peer_id in d.get("/v1/trust").json()["banned"] for d in nodes[:4]),
             timeout=60, what="every honest peer to ban the liar")
    liar_results = sum(1 for c in phase1 for r in a.get(f"/v1/results/{c}").json()["results"] if r["runner"] == bad.peer_id)
    print(f"\n[verifier] liar results before and around the ban: {liar_results} "
          f"(phase 1 verified and the liar banned everywhere after {time.monotonic() - started:.0f} s)")
    assert liar_results <= 20

    # 100% correct: every canonical output is the honest echo of the input.
    for i, c in enumerate(phase1):
        assert _canonical_output(a, c) == {"i": i}

    # Trust is earned: the replication overhead drops for trusted runners.
    before = a.get("/v1/queue").json()["result_records"]
    phase2 = [t["cid"] for t in a.post("/v1/tasks", {"tasks": [echo_task(engine, {"j": j}, verify=verify) for j in range(40)]}).json()["tasks"]]
    wait_for(lambda: all(a.get(f"/v1/tasks/{c}").json()["state"] == "completed" for c in phase2),
             timeout=240, what="phase 2 verified")
    for j, c in enumerate(phase2):
        assert _canonical_output(a, c) == {"j": j}
    records = a.get("/v1/queue").json()["result_records"] - before
    runs = [len(a.get(f"/v1/results/{c}").json()["results"]) for c in phase2]
    print(f"[verifier] phase 2 runs per task: {sorted(runs)}")
    overhead = records / len(phase2)
    trust = a.get("/v1/trust").json()
    print(f"[verifier] phase 2: {records} results for {len(phase2)} tasks = {overhead:.2f} runs per task "
          f"(2.00 without trust); trusted scores: {sum(1 for s in trust['scores'] if s['trusted'])}")
    print("[verifier] trust:", json.dumps(trust["scores"])[:600])
    # Adaptive replication decided one replica for the trusted runners' tasks
    # (all but the deterministic spot checks).  The runs actually made can be
    # higher: runners that claim before they see each other's claim each run
    # (measured and reported above, not asserted: it depends on load).
    wanted = [a.get(f"/v1/tasks/{c}").json()["verification"]["replicas_wanted"] for c in phase2]
    print(f"[verifier] phase 2 replicas wanted: {sorted(wanted)}")
    assert sum(1 for w in wanted if w == 1) >= 0.7 * len(phase2)
    # The banned liar ran nothing in phase 2.
    assert not any(r["runner"] == bad.peer_id for c in phase2 for r in a.get(f"/v1/results/{c}").json()["results"])
