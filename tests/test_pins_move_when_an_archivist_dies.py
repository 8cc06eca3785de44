"""A dataset pinned with ``--replicas 2`` on three archivists moves when a holder dies.

Three real daemons run the archivist role.  ``meshd pin add <dataset>
--replicas 2`` puts the pin in the mesh's pinset; the two archivists the
allocation picks fetch the dataset's DAG and report it held (signed
``meshd/pin-held`` records).  One holder is killed (SIGKILL: no farewell);
once the others stop seeing its presence, the third archivist takes the pin
over and reports it held, and ``meshd pin ls`` shows the pin held again on
two live archivists.  ``meshd pin rm`` then makes the holders let go.
"""

from __future__ import annotations

import json
from typing import Any

from ._daemons import Daemon, wait_for

ROLES = ("manager", "archivist")


def _pin(d: Daemon, cid: str) -> dict[str, Any] | None:
    r = d.get(f"/v1/pinset/{cid}")
    return r.json() if r.status_code == 200 else None


def _holders(pin: dict[str, Any] | None) -> list[str]:
    if pin is None:
        return []
    return sorted(a for a, s in pin["status"].items() if s["held"] and s["allocated"] and s["live"])


def test_a_pin_with_two_replicas_moves_to_the_third_archivist_when_a_holder_dies(daemon_factory: Any) -> None:
    a = daemon_factory("a", roles=ROLES).start()
    b = daemon_factory("b", roles=ROLES, bootstrap=[a.multiaddr]).start()
    c = daemon_factory("c", roles=ROLES, bootstrap=[a.multiaddr, b.multiaddr]).start()
    nodes = {d.peer_id: d for d in (a, b, c)}
    for d in nodes.values():
        wait_for(lambda d=d: len(d.get("/v1/pinset").json()["archivists"]) == 3, timeout=60,
                 what=f"{d.home.name} to see three archivists")

    ds = a.post("/v1/datasets", {"value": {"split/input": {"n": 10}, "notes": ["kept", "twice"]}}).json()["cid"]
    added = a.cli("pin", "add", ds, "--replicas", "2", "--name", "fib", "--json")
    assert json.loads(added.stdout) == {"cid": ds, "replicas": 2, "name": "fib", "expire": None, "dataset": True}

    pin = wait_for(lambda: (p := _pin(a, ds)) is not None and p["state"] == "held" and p, timeout=60,
                   what="the pin to be held by two archivists")
    first = _holders(pin)
    assert len(first) == 2 and sorted(pin["allocations"]) == first
    assert all(pin["status"][h]["blocks"] >= 2 for h in first)  # genesis and at least one delta
    third = next(p for p in nodes if p not in first)
    assert "fib" in a.cli("pin", "ls").stdout

    # Kill a holder, and watch from a node that stays.
    dead = first[0]
    nodes[dead].proc.kill()
    nodes[dead].proc.wait(timeout=30)
    watcher = nodes[first[1]]
    pin = wait_for(lambda: (p := _pin(watcher, ds)) is not None and p["state"] == "held"
                   and third in _holders(p) and p, timeout=60, what="the pin to move to the third archivist")
    assert _holders(pin) == sorted([first[1], third])
    assert dead not in pin["allocations"]
    assert pin["status"][third]["blocks"] == pin["status"][first[1]]["blocks"]
    assert "held by 2 of 2" in watcher.cli("pin", "ls").stdout

    # Unpinning: the holders let go and say so.
    watcher.cli("pin", "rm", ds)
    gone = wait_for(lambda: (p := _pin(watcher, ds)) is not None and p["state"] == "removed"
                    and not any(p["status"].get(h, {"held": True})["held"] for h in (first[1], third)) and p,
                    timeout=30,
                    what="the holders to report the pin released")
    assert gone["status"][dead]["held"]  # the dead archivist's last word stays, as it said it
