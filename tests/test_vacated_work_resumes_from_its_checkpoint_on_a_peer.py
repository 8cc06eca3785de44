"""A vacated task resumes from its checkpoint on another daemon (issue 16, item 4).

Real daemons and real engine processes: ``a`` runs the example engine
``engines/examples/checkpointed_pi.py`` (published with its copy of
``engines/checkpoint.py``) on a task with ``checkpoint_s``; its checkpoints
appear in the task's status.  ``a`` then drains with a short deadline, which
vacates the task: the runner asks the engine for a checkpoint first, records
it, and releases the lease.  ``b`` claims the task within 2 s of the release,
fetches the latest checkpoint and resumes from it.  The engine appends a line
per batch it computes to a trace file where it can (a jailed engine cannot:
then a's share is bounded by its attempt's time), so the test counts the
total work across both daemons: less than 1.2 × one run (without the checkpoint it
would be 1 + the fraction done on ``a``).  ``meshd status`` lists the
checkpoints.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from ._daemons import REPO, Daemon, wait_for

pytestmark = pytest.mark.slow

BATCHES = 60
PAUSE_S = 0.1
HANDOFF_MS = 2000


def _configure(d: Daemon) -> None:
    cfg = d.home / "config.toml"
    text = re.sub(r"(?m)^task_timeout_s = [0-9.]+", "task_timeout_s = 300.0", cfg.read_text())
    text = re.sub(r"(?m)^slots = .*$", "slots = 1", text)
    cfg.write_text(text)


def publish_checkpointed_pi(d: Daemon) -> str:
    """The example engine and its copy of the checkpoint helper, as one engine."""
    files = {"checkpointed_pi.py": REPO / "engines" / "examples" / "checkpointed_pi.py",
             "checkpoint.py": REPO / "engines" / "checkpoint.py"}
    body = {"manifest": {"name": "checkpointed-pi", "executable": "checkpointed_pi.py", "interpreter": "python3"},
            "files": {name: base64.b64encode(p.read_bytes()).decode() for name, p in files.items()}}
    r = d.post("/v1/engines", body)
    assert r.status_code in (200, 201), r.text
    return r.json()["cid"]


def pi_task(engine: str, trace: Path, *, batches: int = BATCHES, pause_s: float = PAUSE_S,
            checkpoint_s: int = 1) -> dict:
    value = {"batches": batches, "batch": 2000, "seed": 7, "pause_s": pause_s, "trace": str(trace)}
    return {"input": {"value": value}, "checkpoint_s": checkpoint_s,
            "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": engine}}}}


def test_a_vacated_task_resumes_from_its_checkpoint_on_another_daemon(daemon_factory, tmp_path: Path) -> None:
    a: Daemon = daemon_factory("a")
    _configure(a)
    a.start()
    b: Daemon = daemon_factory("b", bootstrap=[a.multiaddr], trust=[a.public_hex])
    _configure(b)
    b.start()
    # b takes nothing until a has run the task a while (its runner answers once it serves).
    wait_for(lambda: b.post("/v1/node/drain", {}).status_code < 300, timeout=30, what="b to drain")
    wait_for(lambda: b.peer_id in a.get("/v1/peers").json()["live_runners"], timeout=60, what="a to hear b")
    engine = publish_checkpointed_pi(a)
    trace = tmp_path / "work.trace"
    r = a.post("/v1/tasks", pi_task(engine, trace))
    assert r.status_code == 201, r.text
    task = r.json()["cid"]
    # Periodic checkpoints (every second) are in the task's status, on both nodes.
    wait_for(lambda: len(b.get(f"/v1/tasks/{task}").json().get("checkpoints") or []) >= 2, timeout=60,
             what="two checkpoints of a's attempt, seen on b")
    st = a.get(f"/v1/tasks/{task}").json()
    assert st["state"] == "assigned" and st["attempts"][0]["runner"] == a.peer_id, st
    assert all(c["runner"] == a.peer_id and c["attempt"] == 1 for c in st["checkpoints"]), st

    assert "open" in b.cli("resume").stdout
    assert "draining" in a.cli("drain", "--deadline", "0.1").stdout  # vacates the running task
    done = b.wait_state(task, "completed", timeout=60)
    atts = done["attempts"]
    mine = [x for x in atts if x["runner"] == a.peer_id]
    theirs = [x for x in atts if x["runner"] == b.peer_id]
    assert len(mine) == 1 and mine[0]["error"].startswith("vacated"), atts
    assert len(theirs) == 1 and theirs[0]["ok"] is True, atts
    handoff_ms = theirs[0]["started"] - mine[0]["finished"]
    assert handoff_ms <= HANDOFF_MS, atts

    out = b.get(f"/v1/results/{task}").json()["results"][0]["output"]
    batches_on_a = [x for x in done["checkpoints"] if x["runner"] == a.peer_id]
    assert out["resumed_from"] > 0 and out["resumed_from"] + out["batches_here"] == BATCHES, out
    # The engine saved on the vacate's request: b resumed from a's last state.
    assert len(batches_on_a) >= 3, done["checkpoints"]
    if trace.exists():  # the engine could write it (an unjailed engine)
        total = len(trace.read_text().splitlines())
        assert total >= BATCHES
    else:  # a jailed engine sees no test directory: a's share from its attempt's time, an upper bound
        total = round((mine[0]["finished"] - mine[0]["started"]) / 1000 / PAUSE_S) + out["batches_here"]
    assert total < 1.2 * BATCHES, f"{total} batches computed for a run of {BATCHES}"
    lost_s = (total - BATCHES) * PAUSE_S
    print(f"handoff_ms={handoff_ms} resumed_from={out['resumed_from']} total_batches={total} "
          f"work_lost_s~{lost_s:.1f}")

    status = b.cli("status", task).stdout
    assert "checkpoints:" in status and a.peer_id in status, status
