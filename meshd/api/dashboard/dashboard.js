// meshd dashboard: polls the node's JSON API (same origin) and draws the mesh.
//
// Security (see meshd/api/dashboard/__init__.py and meshd/api/guard.py):
// * The read token comes from the URL fragment (#token=...), which no request
//   carries; it is kept in sessionStorage and wiped from the address bar.
// * It is sent only as "Authorization: Bearer" on same-origin fetches.
// * Text from the mesh (task names, stderr, peer ids) is inserted with
//   textContent only, never as HTML; the page's CSP forbids inline script.
"use strict";

(() => {
  const KEY = "meshd-read-token";
  const params = new URLSearchParams(location.search);
  const INTERVAL_MS = Math.max(250, Number(params.get("interval")) || 2000);
  const HISTORY = 150; // throughput samples kept (5 min at 2 s)
  const TASK_PAGES = 5; // pages of 1000 tasks read to count where tasks ran
  const MAX_FAILURES = 10;
  const MAX_JOBS = 10;

  const samples = []; // {t: seconds, done: completed + failed}
  let timer = null;
  let busy = false; // one refresh at a time

  // -- token ----------------------------------------------------------------

  function takeTokenFromFragment() {
    const frag = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = frag.get("token");
    if (token) {
      sessionStorage.setItem(KEY, token);
      // Out of the address bar and the history entry.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function token() { return sessionStorage.getItem(KEY); }

  class Unauthorized extends Error {}

  async function api(path) {
    const r = await fetch(path, {
      headers: { Authorization: "Bearer " + token(), Accept: "application/json" },
      cache: "no-store", credentials: "omit", redirect: "error",
    });
    if (r.status === 401 || r.status === 403) {
      let msg = "HTTP " + r.status;
      try { msg = (await r.json()).error.message; } catch (e) { /* keep the status */ }
      throw new Unauthorized(msg);
    }
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  async function apiOr(path, fallback) {
    try { return await api(path); } catch (e) { if (e instanceof Unauthorized) throw e; return fallback; }
  }

  // -- DOM helpers (textContent only) ------------------------------------------

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "class") node.className = v;
      else if (k === "title") node.title = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function setK(key, value) {
    for (const node of document.querySelectorAll(`[data-k="${key}"]`)) node.textContent = String(value);
  }

  const short = (id) => (id && id.length > 12 ? "…" + id.slice(-8) : id || "-");
  const shortCid = (cid) => (cid && cid.length > 20 ? cid.slice(0, 12) + "…" + cid.slice(-6) : cid || "-");

  function age(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return "-";
    if (seconds < 60) return seconds.toFixed(1) + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m" + String(Math.floor(seconds % 60)).padStart(2, "0") + "s";
    return Math.floor(seconds / 3600) + "h" + String(Math.floor((seconds % 3600) / 60)).padStart(2, "0") + "m";
  }

  const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "-");

  // -- reading -----------------------------------------------------------------

  async function allTasks(state) {
    // The listing is paged oldest first; read up to TASK_PAGES pages.
    const tasks = [];
    let after = null;
    for (let i = 0; i < TASK_PAGES; i++) {
      const q = "/v1/tasks?limit=1000" + (state ? "&state=" + state : "") + (after ? "&after=" + after : "");
      const page = await api(q);
      tasks.push(...page.tasks);
      after = page.next;
      if (!after) return { tasks, complete: true };
    }
    return { tasks, complete: false };
  }

  async function read() {
    const [node, peers, queue, trust, jobs, tasks, running] = await Promise.all([
      api("/v1/node"), api("/v1/peers"), api("/v1/queue"),
      apiOr("/v1/trust", null), apiOr("/v1/jobs?limit=" + MAX_JOBS, { jobs: [] }),
      allTasks(null), api("/v1/tasks?state=assigned&limit=50"),
    ]);
    const jobStatus = await Promise.all((jobs.jobs || []).map((j) => apiOr("/v1/jobs/" + j.job, null)));
    return { at: Date.now() / 1000, node, peers, queue, trust, jobs: jobStatus.filter(Boolean), tasks, running };
  }

  // -- drawing -----------------------------------------------------------------

  function drawQueue(q, at) {
    for (const k of ["available", "assigned", "completed", "failed", "total"]) setK("queue." + k, q[k] ?? 0);
    const bar = $("queue-bar");
    bar.replaceChildren();
    const total = q.total || 0;
    for (const k of ["completed", "failed", "assigned", "available"]) {
      if (!total || !q[k]) continue;
      const part = el("span", { class: k, title: `${k}: ${q[k]}` });
      part.style.width = (100 * q[k] / total) + "%";
      bar.append(part);
    }
    samples.push({ t: at, done: (q.completed || 0) + (q.failed || 0) });
    if (samples.length > HISTORY) samples.shift();
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i].t - samples[i - 1].t;
      rates.push(dt > 0 ? Math.max(0, samples[i].done - samples[i - 1].done) / dt : 0);
    }
    setK("throughput", rates.length ? rates[rates.length - 1].toFixed(1) + "/s" : "-");
    setK("throughput.max", rates.length ? Math.max(...rates).toFixed(2) : "0");
    const svg = $("throughput-chart");
    svg.replaceChildren();
    if (rates.length > 1) {
      const top = Math.max(1, ...rates);
      const span = Math.max(rates.length - 1, 30); // a short history is not stretched edge to edge
      const pts = rates.map((r, i) => `${(600 * i / span).toFixed(1)},${(98 - 96 * r / top).toFixed(1)}`);
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.append(line);
      const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
      label.setAttribute("x", "4"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10");
      label.textContent = `max ${top.toFixed(1)}/s`;
      svg.append(label);
    }
  }

  function ranByRunner(tasks) {
    const ran = new Map(), failed = new Map();
    for (const t of tasks) {
      for (const a of t.attempts || []) {
        if (a.ok === true) ran.set(a.runner, (ran.get(a.runner) || 0) + 1);
        else if (a.ok === false) failed.set(a.runner, (failed.get(a.runner) || 0) + 1);
      }
    }
    return { ran, failed };
  }

  function drawPeers(node, peers, tasks, banned) {
    const live = new Set(peers.live_runners || []);
    const { ran, failed } = ranByRunner(tasks.tasks);
    const rows = [{ peer_id: node.peer_id, roles: node.roles, inventory: node.inventory, self: true }];
    for (const p of peers.peers || []) rows.push(p);
    const body = $("peer-rows");
    body.replaceChildren();
    for (const p of rows) {
      const inv = p.inventory || {};
      let state, cls;
      if (banned.has(p.peer_id)) { state = "banned"; cls = "state-banned"; }
      else if (p.self) { state = "this node"; cls = "state-this"; }
      else if (live.has(p.peer_id)) { state = `live, seen ${age(p.last_seen_s)} ago`; cls = "state-live"; }
      else if (p.connected) { state = `connected, seen ${age(p.last_seen_s)} ago`; cls = "state-live"; }
      else { state = `seen ${age(p.last_seen_s)} ago`; cls = "state-stale"; }
      body.append(el("tr", { "data-peer": p.peer_id },
        el("td", { class: "cid", title: p.peer_id }, short(p.peer_id)),
        el("td", { "data-k": "roles" }, (p.roles || []).join(",") || "-"),
        el("td", { "data-k": "slots" }, inv.slots ? `${inv.free ?? "?"}/${inv.slots}` : "-"),
        el("td", { "data-k": "backlog" }, inv.slots ? (inv.backlog ?? 0) : "-"),
        el("td", { "data-k": "state", class: cls }, state),
        el("td", { "data-k": "ran" }, ran.get(p.peer_id) || 0),
        el("td", { "data-k": "failed" }, failed.get(p.peer_id) || 0)));
    }
    setK("peers.count", `(${rows.length} with this node)`);
    $("ran-note").textContent = tasks.complete
      ? `ran/failed count attempts over all ${tasks.tasks.length} tasks in the queue`
      : `ran/failed count attempts over the oldest ${tasks.tasks.length} tasks only`;
    return rows;
  }

  function drawJobs(jobs) {
    const list = $("job-list");
    list.replaceChildren();
    setK("jobs.count", `(${jobs.length})`);
    if (!jobs.length) { list.append(el("p", { class: "muted" }, "no jobs")); return; }
    for (const j of jobs) {
      const box = el("div", { class: "job", "data-job": j.job },
        el("div", { class: "title" },
          el("span", {}, el("b", {}, j.name || "(unnamed)"), " ", el("span", { class: "cid muted", title: j.job }, shortCid(j.job))),
          el("span", { class: "job-" + j.state, "data-k": "job.state" }, j.state)));
      for (const s of j.stages || []) {
        const bar = el("div", { class: "progress" }, el("span"));
        const total = s.total;
        bar.firstChild.style.width = total ? Math.min(100, 100 * s.done / total) + "%" : "0%";
        const extra = [s.running ? `${s.running} running` : "", s.failed ? `${s.failed} failed` : ""].filter(Boolean).join(", ");
        box.append(el("div", { class: "stage", "data-stage": s.name },
          el("span", {}, `${s.name} (${s.action || "enqueue"})`), bar,
          el("span", { "data-k": "stage.progress", class: s.failed ? "bad" : "" },
            `${s.done}/${total === null || total === undefined ? "?" : total}` + (extra ? ` · ${extra}` : ""))));
      }
      for (const e of j.errors || []) {
        if (e.active) box.append(el("div", { class: "bad" }, `rule error: ${e.error || e.message || JSON.stringify(e)}`));
      }
      list.append(box);
    }
  }

  function drawRunning(running, at) {
    const body = $("running-rows");
    body.replaceChildren();
    const tasks = running.tasks || [];
    setK("running.count", `(${tasks.length}${running.next ? "+" : ""})`);
    for (const t of tasks) {
      const last = (t.attempts || [])[t.attempts.length - 1] || {};
      body.append(el("tr", { "data-task": t.cid },
        el("td", { class: "cid", title: t.cid }, shortCid(t.cid)), el("td", {}, t.name || "-"),
        el("td", { class: "cid", title: last.runner || "" }, short(last.runner)),
        el("td", {}, last.started ? age(at - last.started / 1000) : "-")));
    }
    if (!tasks.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "nothing running")));
  }

  function drawFailures(tasks) {
    const failed = tasks.tasks.filter((t) => t.state === "failed");
    const finished = (t) => Math.max(0, ...(t.attempts || []).map((a) => a.finished || 0));
    failed.sort((a, b) => finished(b) - finished(a));
    const list = $("failure-list");
    list.replaceChildren();
    setK("failures.count", `(${failed.length} failed)`);
    if (!failed.length) { list.append(el("p", { class: "muted" }, "no failed tasks")); return; }
    for (const t of failed.slice(0, MAX_FAILURES)) {
      const attempts = t.attempts || [];
      const last = attempts.filter((a) => a.ok === false).pop() || attempts[attempts.length - 1] || {};
      const box = el("div", { class: "failure", "data-task": t.cid },
        el("div", {}, el("b", {}, t.name || "(unnamed)"), " ", el("span", { class: "cid muted", title: t.cid }, shortCid(t.cid)),
          ` · ${attempts.length} attempt(s) · last on `, el("span", { class: "cid", title: last.runner || "" }, short(last.runner)),
          ` at ${when(last.finished)}`),
        el("div", { class: "bad", "data-k": "failure.reason" }, t.reason || last.error || "no error message"));
      if (last.stderr) box.append(el("pre", { "data-k": "failure.stderr" }, last.stderr.slice(-4000)));
      list.append(box);
    }
  }

  function drawTrust(trust) {
    const body = $("trust-rows");
    body.replaceChildren();
    if (!trust) { setK("trust.banned", "-"); setK("trust.thresholds", "(no trust view)"); return new Set(); }
    setK("trust.banned", trust.banned.length ? trust.banned.join(", ") : "none");
    const t = trust.thresholds || {};
    setK("trust.thresholds", `(trusted after ${t.trust_after} consecutive valid results, banned after ${t.ban_after} invalid)`);
    for (const s of trust.scores || []) {
      body.append(el("tr", { "data-trust": s.peer },
        el("td", { class: "cid", title: s.peer }, short(s.peer)),
        el("td", { class: "cid", title: s.engine || "" }, s.engine ? shortCid(s.engine) : "any"),
        el("td", { "data-k": "valid" }, s.valid), el("td", { "data-k": "invalid" }, s.invalid), el("td", {}, s.streak), el("td", {}, s.trusted ? "yes" : "no")));
    }
    if (!(trust.scores || []).length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no judged results yet")));
    return new Set(trust.banned);
  }

  function draw(s) {
    const n = s.node;
    $("node").textContent = `${n.name || ""} ${short(n.peer_id)} · mesh ${n.mesh} · roles ${(n.roles || []).join(",")} · v${n.version} · up ${age(n.uptime_s)}`;
    $("node").title = n.peer_id;
    drawQueue(s.queue, s.at);
    const banned = drawTrust(s.trust);
    drawPeers(n, s.peers, s.tasks, banned);
    drawJobs(s.jobs);
    drawRunning(s.running, s.at);
    drawFailures(s.tasks);
  }

  // -- loop --------------------------------------------------------------------

  function showLogin(message) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    timer = null;
    try {
      const snapshot = await read();
      $("login").hidden = true;
      $("main").hidden = false;
      draw(snapshot);
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
      setK("status", "updated " + new Date().toLocaleTimeString());
      $("status").className = "muted";
    } catch (e) {
      if (e instanceof Unauthorized) {
        sessionStorage.removeItem(KEY);
        showLogin("The API refused the token: " + e.message);
        return; // wait for a new token
      }
      setK("status", "cannot reach the node: " + e.message);
      $("status").className = "bad";
    } finally {
      busy = false;
    }
    timer = setTimeout(refresh, INTERVAL_MS);
  }

  function start() {
    takeTokenFromFragment();
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("login-token").value.trim();
      $("login-token").value = "";
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      if (timer === null) refresh();
    });
    window.addEventListener("hashchange", () => { takeTokenFromFragment(); if (timer === null && token()) refresh(); });
    if (token()) refresh(); else showLogin("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
