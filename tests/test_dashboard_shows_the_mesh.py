"""The web dashboard at ``/``: open page, token in the fragment, numbers that match the API.

Two real daemons, A (manager, runner, verifier) and B (manager, runner)
bootstrapped to A, run echo tasks, a one-stage job and a task whose engine
always fails with HTML in its stderr.  A real headless Chromium opens the URL
that ``meshd dashboard`` prints, and the test reads what the page *shows*
(its DOM text) and compares it with the API's answers: the queue by state,
both peers with their roles and slots, how many attempts ran on each runner,
the job's stage progress, and the failure with its stderr, shown as text,
not markup.  A screenshot is saved under the test's tmp dir and copied to
``/tmp/meshd-dashboard.png``.

In process: the page and its files are open and carry no secret, answer
with a strict Content-Security-Policy, and a foreign ``Host`` still gets 403.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshd.api.app import create_app
from meshd.api.dashboard import ASSETS, SECURITY_HEADERS
from tests.test_api_contract_inprocess import BASE_URL, FakeNode, api_options

from ._browser import Browser, chromium_path
from ._daemons import Daemon, echo_task, wait_for

FAIL = "import sys\nsys.stdin.read()\nsys.stderr.write('boom <b>not markup</b>\\n')\nsys.exit(3)\n"
SCREENSHOT_COPY = Path("/tmp/meshd-dashboard.png")

#: What the page shows, read from its DOM text (never from the script's variables).
SHOWN = """(() => {
  const k = (key, root) => [...(root || document).querySelectorAll(`[data-k="${key}"]`)].map(e => e.textContent);
  const q = {};
  for (const s of ["available", "assigned", "completed", "failed", "total"]) q[s] = k("queue." + s)[0];
  return {
    refreshes: Number(document.body.dataset.refreshes), hash: location.hash, login: !document.getElementById("login").hidden,
    queue: q,
    peers: [...document.querySelectorAll("#peer-rows tr")].map(tr => ({peer: tr.dataset.peer,
      roles: k("roles", tr)[0], slots: k("slots", tr)[0], state: k("state", tr)[0], ran: k("ran", tr)[0],
      failed: k("failed", tr)[0]})),
    jobs: [...document.querySelectorAll("#job-list [data-job]")].map(j => ({job: j.dataset.job, state: k("job.state", j)[0],
      stages: [...j.querySelectorAll("[data-stage]")].map(s => [s.dataset.stage, k("stage.progress", s)[0]])})),
    failures: [...document.querySelectorAll("#failure-list [data-task]")].map(f => ({task: f.dataset.task,
      reason: k("failure.reason", f)[0], stderr: k("failure.stderr", f)[0],
      markup: f.querySelector("pre") ? f.querySelector("pre").children.length : -1})),
    banned: k("trust.banned")[0],
    trust: [...document.querySelectorAll("#trust-rows [data-trust]")].map(tr => [tr.dataset.trust, k("valid", tr)[0]]),
    throughput_max: k("throughput.max")[0],
  };
})()"""


# ----------------------------------------------------------------- in process


async def test_the_page_and_its_files_are_open_hold_no_secret_and_forbid_foreign_script() -> None:
    app = create_app(FakeNode(), api_options())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        page = await c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for name, media in ASSETS.items():
            r = await c.get(f"/dashboard/{name}")
            assert r.status_code == 200 and r.headers["content-type"] == media
            assert r.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert "/dashboard/dashboard.js" in page.text and "token" not in page.text.split("<body", 1)[0]
        escape = await c.get("/dashboard/..%2Fguard.py")  # no longer one segment: not open, and no file
        assert escape.status_code == 401 and "import" not in escape.text
        assert (await c.get("/dashboard/index.html")).status_code == 404
        # Open is not unguarded: DNS rebinding still meets the Host check, and the data still needs a token.
        assert (await c.get("/", headers={"Host": "rebind.test:7600"})).status_code == 403
        assert (await c.get("/v1/node")).status_code == 401


# ----------------------------------------------------------------- real daemons, real browser


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    a = Daemon(tmp_path / "a", roles=("manager", "runner", "verifier")).init()
    b = Daemon(tmp_path / "b", roles=("manager", "runner"), bootstrap=[a.multiaddr], trust=[a.public_hex]).init()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def _expected(a: Daemon) -> dict[str, Any]:
    """What the page must show, from A's API (admin token)."""
    tasks = a.get("/v1/tasks?limit=1000").json()["tasks"]
    ran = Counter(x["runner"] for t in tasks for x in t["attempts"] if x["ok"] is True)
    failed = Counter(x["runner"] for t in tasks for x in t["attempts"] if x["ok"] is False)
    return {"queue": {k: str(v) for k, v in a.get("/v1/queue").json().items()
                      if k in ("available", "assigned", "completed", "failed", "total")},
            "ran": ran, "failed": failed,
            "trust": sorted([s["peer"], str(s["valid"])] for s in a.get("/v1/trust").json()["scores"]), "node": a.get("/v1/node").json(), "peers": a.get("/v1/peers").json()}


def test_the_dashboard_shows_what_the_api_says(mesh: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it with apt)")
    a, b = mesh
    a.start()
    b.start()
    wait_for(lambda: len(a.get("/v1/peers").json()["peers"]) == 1, timeout=60, what="A to see B")
    echo = a.add_echo_engine()
    fail = a.add_script_engine("always-fails", FAIL)
    wait_for(lambda: len(b.get("/v1/engines").json()["engines"]) >= 2, timeout=60, what="B to learn the engines")
    url = subprocess.run([sys.executable, "-m", "meshd.cli", "dashboard", "--home", str(a.home)],
                         capture_output=True, text=True, env=a.env, timeout=60, check=True).stdout.strip()
    read_token = a.token("read")
    assert url == f"{a.url}/#token={read_token}"
    browser = Browser(chromium, tmp_path / "chromium-profile")
    try:
        # The page is open before the work starts, so it draws the throughput as the tasks complete.
        browser.navigate(url.replace("/#", "/?interval=500#"))
        wait_for(lambda: browser.evaluate(SHOWN)["queue"]["total"] == "0", timeout=30, what="a first refresh")
        failing = {"input": {"value": 0}, "max_attempts": 2, "name": "doomed",
                   "taskDefinition": {"runner": {"type": "bin-json-runner", "engine": {"/": fail}}}}
        plain = [echo_task(echo, i, name=f"echo-{i}") for i in range(10)]
        replicated = [echo_task(echo, f"r{i}", name=f"checked-{i}", verify={"replicas": 2}) for i in range(2)]
        r = a.post("/v1/tasks", {"tasks": plain + replicated + [failing]})
        assert r.status_code == 201, r.text
        cids = [t["cid"] for t in r.json()["tasks"]]
        job = a.post("/v1/jobs", {"name": "one-stage", "input": {"value": "j"},
                                  "stages": [{"name": "echo", "engine": {"/": echo}}]})
        assert job.status_code == 201, job.text
        job_id = job.json()["job"]
        for cid in cids[:-1]:
            a.wait_state(cid, "completed", timeout=60)
        a.wait_state(cids[-1], "failed", timeout=60)
        wait_for(lambda: a.get(f"/v1/jobs/{job_id}").json()["state"] == "completed", timeout=60, what="the job")
        wait_for(lambda: (a.get("/v1/trust").json()["verifier"] or {}).get("verdicts", 0) >= len(replicated),
                 timeout=60, what="the verifier's verdicts")
        expected = _expected(a)
        job_status = a.get(f"/v1/jobs/{job_id}").json()
        last: list[Any] = [None]

        def matches() -> bool:
            shown = last[0] = browser.evaluate(SHOWN)
            return shown["refreshes"] > 0 and shown["queue"] == expected["queue"] and len(shown["peers"]) == 2 \
                and all(p["ran"] == str(expected["ran"][p["peer"]]) for p in shown["peers"]) \
                and sorted(shown["trust"]) == expected["trust"]

        try:
            wait_for(matches, timeout=30, what="the page to show the API's numbers", interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nshown: {json.dumps(last[0], indent=1)}\nexpected: {expected}") from None
        shown = last[0]
        shown["trust"] = sorted(shown["trust"])
        shot = browser.screenshot(tmp_path / "dashboard.png")
        shutil.copyfile(shot, SCREENSHOT_COPY)

        assert shown["hash"] == "" and not shown["login"]  # the token left the address bar
        by_peer = {p["peer"]: p for p in shown["peers"]}
        assert list(by_peer) == [a.peer_id, b.peer_id]
        node, peer = expected["node"], expected["peers"]["peers"][0]
        assert by_peer[a.peer_id]["roles"] == ",".join(node["roles"]) == "manager,runner,verifier"
        assert by_peer[a.peer_id]["state"] == "this node"
        assert by_peer[a.peer_id]["slots"] == f"{node['inventory']['free']}/{node['inventory']['slots']}"
        assert by_peer[b.peer_id]["roles"] == ",".join(peer["roles"]) == "manager,runner"
        assert by_peer[b.peer_id]["state"].startswith("live")
        # Every task ran at least once (plain, replicated, the job's); the API lists the attempts it knows.
        assert sum(int(p["ran"]) for p in shown["peers"]) == sum(expected["ran"].values()) >= 10 + 2 + 1
        assert float(shown["throughput_max"]) > 0  # the page saw the tasks complete as it polled
        assert shown["trust"] == expected["trust"] and len(shown["trust"]) == 2  # both runners judged
        assert sum(int(p["failed"]) for p in shown["peers"]) == sum(expected["failed"].values()) == 2
        assert shown["jobs"] == [{"job": job_id, "state": job_status["state"],
                                  "stages": [["echo", f"{job_status['stages'][0]['done']}/1"]]}]
        assert shown["jobs"][0]["stages"][0][1] == "1/1"
        (failure,) = shown["failures"]
        assert failure["task"] == cids[-1]
        assert failure["stderr"] == "boom <b>not markup</b>\n" and failure["markup"] == 0  # text, never HTML
        assert shown["banned"] == "none"

        # A wrong token shows the token form, with the API's refusal, and no data.
        browser.navigate(f"{a.url}/#token=not-the-token-at-all")
        wait_for(lambda: browser.evaluate(SHOWN)["login"], timeout=20, what="the token form")
        assert "token" in browser.evaluate("document.getElementById('login-error').textContent")
    finally:
        browser.close()
    assert read_token not in a.log_path.read_text(errors="replace")  # the fragment reached no log
