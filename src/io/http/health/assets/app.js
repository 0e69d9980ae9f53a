// trunkguard status page: polls /api/status and /readyz every second and
// /api/latency-history every 10 s. Every value from the appliance is put in
// the page with textContent (never as HTML): caller names, numbers and call
// ids are caller-controlled.
//
// The Operator card asks /api/session once (and again after a login, a
// logout or a refused action; never on a timer, so an idle session still
// expires). It shows the login form when a password is required, else the
// drain switch and per carrier / AI endpoint service buttons. Actions POST
// JSON with the session's CSRF token in X-CSRF-Token. The password is read
// from the form into the request body and the field is cleared at once.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 1000;
  const HISTORY_MS = 10000;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function pill(text, kind) {
    return el("span", text, "pill " + kind);
  }

  function cell(content, cls) {
    const td = el("td", null, cls);
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === undefined || content === null ? "" : String(content);
    return td;
  }

  function fill(tableId, rows, emptyText, columns) {
    const body = document.querySelector("#" + tableId + " tbody");
    const next = [];
    if (rows.length === 0) {
      const tr = el("tr");
      const td = cell(emptyText, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      next.push(tr);
    }
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) tr.appendChild(c);
      next.push(tr);
    }
    body.replaceChildren(...next);
  }

  function ago(ms) {
    if (ms === null || ms === undefined) return "never";
    if (ms < 1000) return "just now";
    const s = ms / 1000;
    if (s < 120) return s.toFixed(1) + " s ago";
    if (s < 7200) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }

  function duration(ms) {
    const s = Math.floor(ms / 1000);
    const m = Math.floor(s / 60);
    const r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }

  function msText(v) {
    return v === null || v === undefined ? "–" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms";
  }

  function stateKind(state) {
    if (state === "up") return "good";
    if (state === "down" || state === "out-of-service") return "bad";
    return "meh";
  }

  function renderCarriers(s) {
    const out = new Set(s.admin.carriers_out_of_service || []);
    const rows = s.carriers.map(function (c) {
      let reg = "does not register";
      if (c.registers) reg = c.registered ? pill("registered", "good") : pill("not registered", "bad");
      const probe = c.probe_interval_ms === null ? "not probed (no proxy)" :
        ago(c.last_probe_ok_ms_ago) + " (every " + (c.probe_interval_ms / 1000) + " s)";
      const state = out.has(c.name) ? "out-of-service" : c.state;
      const rtt = c.last_probe_rtt_ms === null || c.last_probe_rtt_ms === undefined ? "–" : c.last_probe_rtt_ms + " ms";
      return [cell(c.name), cell(pill(state, stateKind(state))), cell(probe), cell(rtt, "opt"), cell(reg)];
    });
    fill("carriers", rows, "no carrier configured", 5);
  }

  function renderAi(s) {
    const out = new Set(s.admin.ai_endpoints_out_of_service || []);
    const rows = s.ai_endpoints.map(function (e) {
      const kind = e.breaker === "closed" ? "good" : (e.breaker === "open" ? "bad" : "meh");
      const breaker = el("span");
      breaker.appendChild(pill(e.breaker, kind));
      if (out.has(e.name)) breaker.appendChild(pill("out of service", "bad"));
      return [
        cell(e.name + " (" + e.role + ")"),
        cell(breaker),
        cell(ago(e.last_probe_ok_ms_ago)),
        cell(e.last_probe_rtt_ms === null ? "–" : e.last_probe_rtt_ms + " ms", "opt"),
        cell(e.probe_successes + " / " + e.probe_failures),
      ];
    });
    fill("ai", rows, "no AI endpoint configured: callers hear the canned prompt", 5);
  }

  function fmtMos(m) {
    return m == null ? "none" : m.toFixed(2);
  }

  function renderCalls(s) {
    document.getElementById("calls-count").textContent = String(s.active_calls.length);
    const rows = s.active_calls.map(function (c) {
      const who = el("span");
      if (c.caller_name) {
        who.appendChild(el("strong", c.caller_name));
        who.appendChild(document.createTextNode(" "));
      }
      who.appendChild(el("span", c.caller, "muted"));
      who.title = "Call-ID " + c.call_id;
      // the worse direction; null when no media flowed (say so, never a made-up score)
      const mos = c.media.mos;
      const mosKind = mos == null ? "bad" : (mos >= 4.0 ? "good" : (mos >= 3.6 ? "meh" : "bad"));
      const mosText = mos == null ? "no media" : mos.toFixed(2);
      const dirs = "in " + fmtMos(c.media.mos_inbound) + " / out " + fmtMos(c.media.mos_outbound);
      const mosPill = pill(mosText, mosKind);
      mosPill.title = "MOS caller → box / box → caller: " + dirs;
      return [
        cell(who, "caller"),
        cell(c.carrier),
        cell(c.ai_endpoint || "–"),
        cell(c.codec, "opt"),
        cell(duration(c.duration_ms)),
        cell(mosPill),
        cell(c.media.mos_inbound == null ? "–" : c.media.jitter_ms.toFixed(1) + " ms", "opt"),
        cell(c.state, "opt"),
      ];
    });
    fill("calls", rows, "no call in progress", 8);
  }

  function renderFailures(s) {
    const rows = (s.recent_failures || []).map(function (f) {
      return [cell(ago(f.ms_ago)), cell(pill(f.kind, "bad")), cell(f.detail, "detail")];
    });
    fill("failures", rows, "nothing has failed since the start", 3);
  }

  function renderCounters(s) {
    const items = [
      ["calls in progress", s.calls.active],
      ["answered", s.counters.calls_answered],
      ["offered", s.counters.calls_offered],
      ["AI failovers", s.ai_failovers],
      ["fallbacks to prompt", s.ai_fallbacks],
      ["SIP parse errors", s.counters.sip_parse_errors],
      ["dropped: unknown source", s.counters.dropped_unknown_source],
      ["invalid RTP", s.counters.rtp_invalid],
    ];
    // callback requests and the state database's writers (absent when not running)
    const cb = s.callbacks;
    const cr = s.call_records;
    if (cb) {
      items.push(["callbacks pending", cb.pending], ["callbacks delivered", cb.delivered], ["callbacks failed", cb.failed]);
    }
    if (cb || cr) {
      const lost = (cr ? cr.failed + cr.dropped : 0) + (cb ? cb.write_failures + cb.dropped : 0);
      items.push(["storage write failures", lost]);
    }
    const tiles = items.map(function (kv) {
      const t = el("div", null, "tile");
      t.appendChild(el("div", kv[1], "v"));
      t.appendChild(el("div", kv[0], "k"));
      return t;
    });
    document.getElementById("counters").replaceChildren(...tiles);
  }

  function renderLatency(s) {
    const names = [
      ["rtp_to_ai", "caller → agent"],
      ["ai_to_rtp", "agent → caller"],
      ["ai_first_audio", "agent first audio"],
      ["call_setup", "call setup"],
      ["failover_gap", "failover gap"],
    ];
    const rows = names.map(function (n) {
      const h = s.latency[n[0]];
      return [cell(n[1]), cell(msText(h.p50_ms)), cell(msText(h.p99_ms)), cell(h.count)];
    });
    fill("latency", rows, "", 4);
  }

  function renderBanner(r) {
    const banner = document.getElementById("banner");
    const title = document.getElementById("banner-title");
    const list = document.getElementById("banner-checks");
    const items = [];
    if (!r) {
      banner.className = "banner notready";
      title.textContent = "Appliance unreachable";
      items.push(el("li", "the status page cannot reach the appliance's HTTP server"));
    } else {
      banner.className = "banner " + (r.ready ? "ready" : "notready");
      title.textContent = r.ready ? "Ready: taking calls" : "NOT READY";
      for (const name of Object.keys(r.checks)) {
        const c = r.checks[name];
        if (!c.ok) items.push(el("li", name + ": " + c.reason));
      }
    }
    list.replaceChildren(...items);
  }

  function renderStatus(s) {
    renderCarriers(s);
    renderAi(s);
    renderCalls(s);
    renderFailures(s);
    renderCounters(s);
    renderLatency(s);
    renderOperator(s);
    const when = new Date().toLocaleTimeString();
    document.getElementById("updated").textContent =
      (s.admin.draining ? "DRAINING · " : "") + "updated " + when;
  }

  function chart(history) {
    const box = document.getElementById("chart");
    const w = Math.max(280, Math.round(box.clientWidth || 600)), h = 160, left = 44, bottom = 18, top = 6;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const span = 3600;
    const t0 = history.now_s - span;
    const vals = [];
    for (const p of history.samples) {
      for (const v of [p.rtp_to_ai_p99_ms, p.ai_to_rtp_p99_ms]) if (v !== null) vals.push(v);
    }
    const max = Math.max(20, ...vals);
    const x = function (t) { return left + (w - left - 4) * Math.max(0, t - t0) / span; };
    const y = function (v) { return top + (h - top - bottom) * (1 - v / max); };
    function line(x1, y1, x2, y2) {
      const l = document.createElementNS(SVG, "line");
      l.setAttribute("x1", x1); l.setAttribute("y1", y1); l.setAttribute("x2", x2); l.setAttribute("y2", y2);
      l.setAttribute("class", "axis");
      svg.appendChild(l);
    }
    function label(x0, y0, text, anchor) {
      const t = document.createElementNS(SVG, "text");
      t.setAttribute("x", x0); t.setAttribute("y", y0);
      t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.appendChild(t);
    }
    line(left, y(0), w - 4, y(0));
    line(left, y(max), w - 4, y(max));
    label(left - 4, y(max) + 4, max.toFixed(0) + " ms", "end");
    label(left - 4, y(0) + 4, "0", "end");
    label(left, h - 4, "−60 min", "start");
    label(w - 4, h - 4, "now", "end");
    if (vals.length === 0) label(w / 2, h / 2, "no latency samples in the last hour", "middle");
    for (const [key, cls] of [["rtp_to_ai_p99_ms", "s1"], ["ai_to_rtp_p99_ms", "s2"]]) {
      const pts = history.samples.filter(function (p) { return p[key] !== null; })
        .map(function (p) { return x(p.t_s).toFixed(1) + "," + y(p[key]).toFixed(1); });
      if (pts.length === 0) continue;
      if (pts.length === 1) pts.push(pts[0]);
      const pl = document.createElementNS(SVG, "polyline");
      pl.setAttribute("points", pts.join(" "));
      pl.setAttribute("class", cls);
      svg.appendChild(pl);
    }
    box.replaceChildren(svg);
  }

  async function getJson(path) {
    const ctl = new AbortController();
    const timer = setTimeout(function () { ctl.abort(); }, 2500);
    try {
      const resp = await fetch(path, { cache: "no-store", signal: ctl.signal });
      // /readyz answers 503 with a JSON body when not ready: that is data, not an error
      return await resp.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- Operator card ---------------------------------------------------

  const LOGIN_FAILED = "invalid password or locked, try again later";
  const op = { csrf: null, allowed: false, loggedIn: false, busy: false, status: null };
  const targetRows = new Map(); // "carrier:name" / "ai:name" -> {state, button}

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
  }

  function result(text, ok) {
    const p = document.getElementById("op-result");
    p.textContent = text;
    p.className = ok ? "ok" : "err";
  }

  async function post(path, body, json) {
    const headers = {};
    if (op.csrf) headers["X-CSRF-Token"] = op.csrf;
    if (json) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method: "POST", headers: headers, body: body, cache: "no-store", credentials: "same-origin",
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    return { status: resp.status, data: data || {} };
  }

  async function loadSession() {
    let s;
    try {
      s = await getJson("/api/session");
    } catch (e) {
      document.getElementById("op-access").textContent = "Cannot reach the appliance";
      return;
    }
    op.csrf = s.csrf_token || null;
    op.allowed = s.authenticated === true && op.csrf !== null;
    op.loggedIn = op.allowed && s.password_required === true;
    const access = document.getElementById("op-access");
    if (s.error) access.textContent = s.error;
    else if (!op.allowed) access.textContent = "Log in to drain the appliance or take carriers out of service.";
    else if (op.loggedIn) access.textContent = "Logged in.";
    else access.textContent = "No admin password is set: open to this computer only (localhost).";
    show("login", !op.allowed && s.password_required === true);
    show("actions", op.allowed);
    show("logout", op.loggedIn);
    if (op.status) renderOperator(op.status);
  }

  async function login(ev) {
    ev.preventDefault();
    const field = document.getElementById("password");
    const body = new URLSearchParams();
    body.set("password", field.value);
    field.value = "";
    let r;
    try {
      r = await post("/login", body, false);
    } catch (e) {
      result("Login failed: no answer from the appliance", false);
      return;
    }
    if (r.status === 200 && r.data.ok) {
      result("Logged in", true);
    } else {
      result(r.status === 401 ? LOGIN_FAILED : "Login failed: " + (r.data.error || "HTTP " + r.status), false);
    }
    await loadSession();
  }

  async function act(label, path, payload) {
    if (op.busy) return;
    op.busy = true;
    setBusy(true);
    try {
      const r = await post(path, JSON.stringify(payload), true);
      if (r.status === 200 && r.data.ok) {
        result(label + ": ok", true);
      } else {
        result(label + ": " + (r.data.error || "HTTP " + r.status), false);
        if (r.status === 401 || r.status === 403) await loadSession();
      }
    } catch (e) {
      result(label + ": no answer from the appliance", false);
    } finally {
      op.busy = false;
      setBusy(false);
    }
    refreshNow();
  }

  async function logout() {
    try {
      const r = await post("/logout", "", false);
      result(r.status === 200 ? "Logged out" : "Logout: " + (r.data.error || "HTTP " + r.status), r.status === 200);
    } catch (e) {
      result("Logout: no answer from the appliance", false);
    }
    await loadSession();
  }

  function setBusy(busy) {
    for (const b of document.querySelectorAll("#actions button")) b.disabled = busy;
  }

  function targetRow(kind, name) {
    const key = kind + ":" + name;
    let row = targetRows.get(key);
    if (row) return row;
    const button = el("button", null);
    button.type = "button";
    button.addEventListener("click", function () {
      const out = row.out;
      const what = (kind === "carrier" ? "carrier " : "AI endpoint ") + name;
      if (!out && !window.confirm("Take " + what + " out of service?")) return;
      act((out ? "Put back in service: " : "Take out of service: ") + what,
        kind === "carrier" ? "/api/admin/carrier" : "/api/admin/ai-endpoint",
        { name: name, in_service: out });
    });
    row = { tr: el("tr"), state: el("td"), button: button, out: null };
    row.tr.appendChild(cell((kind === "carrier" ? "carrier " : "AI ") + name));
    row.tr.appendChild(row.state);
    row.tr.appendChild(cell(button));
    targetRows.set(key, row);
    return row;
  }

  function renderOperator(s) {
    op.status = s;
    const draining = s.admin.draining === true;
    show("drain-banner", draining);
    if (!op.allowed) return;
    const drain = document.getElementById("drain");
    drain.textContent = draining ? "End drain" : "Drain";
    drain.dataset.on = draining ? "1" : "0";
    document.getElementById("drain-state").textContent =
      draining ? "Draining: new calls get 503" : "Not draining: taking new calls";
    const outCarriers = new Set(s.admin.carriers_out_of_service || []);
    const outAi = new Set(s.admin.ai_endpoints_out_of_service || []);
    const rows = [];
    const targets = s.carriers.map(function (c) { return ["carrier", c.name, outCarriers.has(c.name)]; })
      .concat(s.ai_endpoints.map(function (e) { return ["ai", e.name, outAi.has(e.name)]; }));
    for (const [kind, name, out] of targets) {
      const row = targetRow(kind, name);
      if (row.out !== out) {
        row.out = out;
        row.state.replaceChildren(out ? pill("Out of service", "bad") : pill("In service", "good"));
        row.button.textContent = out ? "Put back in service" : "Take out of service";
      }
      rows.push(row.tr);
    }
    const body = document.querySelector("#op-targets tbody");
    const same = rows.length === body.children.length && rows.every(function (tr, i) { return body.children[i] === tr; });
    if (!same) body.replaceChildren(...rows);
  }

  function setupOperator() {
    document.getElementById("login").addEventListener("submit", login);
    document.getElementById("logout").addEventListener("click", logout);
    document.getElementById("drain").addEventListener("click", function () {
      const on = this.dataset.on !== "1";
      if (on && !window.confirm("Drain: new calls get 503 until you end the drain. Calls in progress go on.")) return;
      act(on ? "Drain" : "End drain", "/api/admin/drain", { on: on });
    });
    loadSession();
  }

  async function refreshNow() {
    try {
      renderStatus(await getJson("/api/status"));
    } catch (e) {
      // the next poll retries
    }
  }

  async function poll() {
    const [status, ready] = await Promise.allSettled([getJson("/api/status"), getJson("/readyz")]);
    if (status.status === "fulfilled") renderStatus(status.value);
    else document.getElementById("updated").textContent = "no answer from the appliance";
    renderBanner(ready.status === "fulfilled" ? ready.value : null);
    setTimeout(poll, POLL_MS);
  }

  async function pollHistory() {
    try {
      chart(await getJson("/api/latency-history"));
    } catch (e) {
      // the next round retries
    }
    setTimeout(pollHistory, HISTORY_MS);
  }

  setupOperator();
  poll();
  pollHistory();
})();
