// anyserve console: polls the router's /registry and /metrics every 2 s and draws what it reads.
// No framework and no build step: the DOM is written with textContent only, never innerHTML, because
// replica ids, capabilities and error texts come from cluster members and must never become markup.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 5000;
  const RATE_WINDOW_S = 10; // requests/s is averaged over this many seconds
  const ERROR_WINDOW_S = 60; // "last 60 s" column of recent errors and the TTFT window
  const KEEP_SAMPLES = 40; // metric samples kept (about 80 s): the page's only memory, bounded
  const MAX_SWITCHES = 30;
  const TOKEN_KEY = "anyserve.console.token";

  const manifest = JSON.parse(document.getElementById("metrics-manifest").textContent);
  const M = manifest.metrics;
  const $ = (id) => document.getElementById(id);

  // -- the admin token: from the address's fragment (never sent to the server), kept for this tab only --

  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token.trim());
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function showLogin(show, why) {
    $("login").hidden = !show;
    $("forget").hidden = !token();
    if (why) setStatus(why, "bad");
  }

  // -- Prometheus text format: only the families the console reads --

  function wantedNames() {
    const names = new Set();
    for (const { name, kind } of Object.values(M)) {
      names.add(name);
      if (kind === "histogram") ["_bucket", "_sum", "_count"].forEach((s) => names.add(name + s));
    }
    return names;
  }
  const WANTED = wantedNames();

  function parseLabels(text, start) {
    // text[start] is "{"; returns [labels, index after "}"]. Values may hold escaped quotes, commas and braces.
    const labels = {};
    let i = start + 1;
    while (i < text.length && text[i] !== "}") {
      const eq = text.indexOf("=", i);
      if (eq < 0) return null;
      const key = text.slice(i, eq).trim().replace(/^,/, "").trim();
      if (text[eq + 1] !== '"') return null;
      let j = eq + 2;
      let value = "";
      while (j < text.length && text[j] !== '"') {
        if (text[j] === "\\" && j + 1 < text.length) {
          const next = text[j + 1];
          value += next === "n" ? "\n" : next;
          j += 2;
        } else {
          value += text[j++];
        }
      }
      if (j >= text.length) return null;
      labels[key] = value;
      i = j + 1;
      while (text[i] === "," || text[i] === " ") i++;
    }
    return text[i] === "}" ? [labels, i + 1] : null;
  }

  function parseValue(text) {
    if (text === "+Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    return Number(text);
  }

  // Returns {name: [{labels, value}]} for the wanted names; other lines are skipped unread.
  function parsePrometheus(body) {
    const out = {};
    for (const raw of body.split("\n")) {
      const line = raw.trim();
      if (!line || line[0] === "#") continue;
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      const end = brace >= 0 && (space < 0 || brace < space) ? brace : space;
      if (end <= 0) continue;
      const name = line.slice(0, end);
      if (!WANTED.has(name)) continue;
      let labels = {};
      let rest = end;
      if (line[end] === "{") {
        const parsed = parseLabels(line, end);
        if (!parsed) continue;
        [labels, rest] = parsed;
      }
      const value = parseValue(line.slice(rest).trim().split(/\s+/)[0]);
      if (Number.isNaN(value)) continue;
      (out[name] ||= []).push({ labels, value });
    }
    return out;
  }

  // -- sums and windows over the samples kept --

  const samples = []; // {t (seconds), series: {name: [{labels, value}]}}

  const isError = (code) => !(String(code).startsWith("2") || code === "OK");

  function total(series, name, keep = () => true, by = null) {
    const sums = new Map();
    for (const { labels, value } of series[name] || []) {
      if (!keep(labels)) continue;
      const key = by ? by(labels) : "";
      sums.set(key, (sums.get(key) || 0) + value);
    }
    return sums;
  }

  function sampleAgo(seconds) {
    // The oldest sample no older than `seconds` before the newest (not the newest itself), or null.
    if (samples.length < 2) return null;
    const now = samples[samples.length - 1].t;
    for (const s of samples) if (now - s.t <= seconds + 0.5 && s !== samples[samples.length - 1]) return s;
    return samples[samples.length - 2];
  }

  function increase(nowValue, thenValue) {
    if (thenValue === undefined) return nowValue;
    return nowValue >= thenValue ? nowValue - thenValue : nowValue; // a restarted router starts from 0
  }

  function quantile(q, buckets) {
    // buckets: [[le, cumulative count]] sorted by le; linear within a bucket, as PromQL's histogram_quantile.
    if (!buckets.length) return null;
    const count = buckets[buckets.length - 1][1];
    if (count <= 0) return null;
    const rank = q * count;
    let prevLe = 0;
    let prevCount = 0;
    for (const [le, c] of buckets) {
      if (c >= rank) {
        if (le === Infinity) return prevLe;
        if (c === prevCount) return le;
        return prevLe + ((le - prevLe) * (rank - prevCount)) / (c - prevCount);
      }
      prevLe = le;
      prevCount = c;
    }
    return prevLe;
  }

  function bucketsOf(series, name, keep, then) {
    // Cumulative buckets over the kept label sets, the counts `then` subtracted when given (a window).
    const sum = (s) => {
      const byLe = new Map();
      for (const { labels, value } of s[name + "_bucket"] || []) {
        if (!keep(labels)) continue;
        const le = parseValue(labels.le);
        byLe.set(le, (byLe.get(le) || 0) + value);
      }
      return byLe;
    };
    const now = sum(series);
    const before = then ? sum(then.series) : new Map();
    return [...now.entries()]
      .map(([le, c]) => [le, increase(c, before.get(le))])
      .sort((a, b) => a[0] - b[0]);
  }

  function ttftQuantiles(series, keep) {
    // Over the last minute when any stream finished in it, else since the router started.
    const then = sampleAgo(ERROR_WINDOW_S);
    let buckets = then ? bucketsOf(series, M.ttft.name, keep, then) : [];
    if (!buckets.length || buckets[buckets.length - 1][1] <= 0) buckets = bucketsOf(series, M.ttft.name, keep, null);
    return [quantile(0.5, buckets), quantile(0.95, buckets)];
  }

  // -- drawing --

  const fmtSeconds = (s) => (s === null || s === undefined || !Number.isFinite(s) ? "–" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
  const fmtRate = (r) => (r === null ? "–" : r.toFixed(r < 10 ? 2 : 1));
  const fmtCount = (n) => (n === null || n === undefined ? "–" : String(Math.round(n)));

  function setStatus(text, level) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (level || "");
  }

  function cell(row, content, cls) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === null || content === undefined ? "" : String(content);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function fill(tbodyId, rows, empty, columns) {
    const body = $(tbodyId);
    const fresh = document.createDocumentFragment();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, empty, "empty");
      td.colSpan = columns;
      fresh.appendChild(tr);
    }
    for (const draw of rows) {
      const tr = document.createElement("tr");
      draw(tr);
      fresh.appendChild(tr);
    }
    body.replaceChildren(fresh);
  }

  const capText = (cap) =>
    Object.entries(cap)
      .filter(([k]) => k !== "state" && k !== "stream")
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");

  function badge(text, kind) {
    const span = document.createElement("span");
    span.className = "badge " + (kind || String(text));
    span.textContent = text;
    return span;
  }

  function drawRegistry(registry) {
    const replicas = Array.isArray(registry.replicas) ? registry.replicas : [];
    $("replica-count").textContent = `${replicas.length} registered, TTL ${registry.ttl_seconds ?? "?"} s`;
    fill(
      "replicas",
      replicas.map((r) => (tr) => {
        cell(tr, r.replica_id, "mono");
        cell(tr, r.endpoint, "mono");
        cell(tr, badge(r.healthy ? "healthy" : "silent", r.healthy ? "hot" : "failed"));
        cell(tr, r.in_flight, "num");
        cell(tr, `${Number(r.last_heartbeat_age_s || 0).toFixed(1)} s ago`, "num");
        const caps = document.createElement("ul");
        caps.className = "caps";
        for (const c of r.capabilities || []) {
          const li = document.createElement("li");
          const text = document.createElement("span");
          text.className = "cap";
          text.textContent = capText(c);
          li.appendChild(text);
          if (c.stream) li.appendChild(badge("stream", "stream"));
          li.appendChild(badge(c.state || "hot"));
          caps.appendChild(li);
        }
        cell(tr, caps);
      }),
      "no replica is registered",
      6,
    );

    const workers = [];
    const switches = [];
    for (const r of replicas) {
      const status = r.status || {};
      for (const w of status.worker_classes || []) workers.push([r.replica_id, w]);
      for (const s of status.switches || []) switches.push([r.replica_id, s]);
    }
    fill(
      "workers",
      workers.map(([rid, w]) => (tr) => {
        cell(tr, rid, "mono");
        cell(tr, w.worker, "mono");
        cell(tr, badge(w.state));
        cell(tr, w.in_flight, "num");
        cell(tr, w.waiting, "num");
        cell(tr, Object.entries(w.resources || {}).map(([k, v]) => `${k}=${v}`).join(", "));
        cell(tr, w.last_error || "", "error-text");
      }),
      "no replica reports worker classes (replicas with plain workers only)",
      7,
    );
    switches.sort((a, b) => b[1].at - a[1].at);
    fill(
      "switches",
      switches.slice(0, MAX_SWITCHES).map(([rid, s]) => (tr) => {
        cell(tr, new Date(s.at * 1000).toLocaleTimeString(), "num");
        cell(tr, rid, "mono");
        cell(tr, s.worker, "mono");
        cell(tr, s.action);
        cell(tr, Number(s.seconds).toFixed(2), "num");
        cell(tr, s.reason);
      }),
      "no switch reported",
      6,
    );
  }

  function clearMetrics(note) {
    $("metrics-note").textContent = note;
    $("metrics-note").className = "note bad";
    for (const id of ["rate", "total", "inflight", "errors", "ttft"]) $(id).textContent = "–";
    fill("capabilities", [], note, 7);
    fill("error-rows", [], note, 5);
  }

  function drawMetrics(series) {
    $("metrics-note").textContent = "";
    $("metrics-note").className = "note";
    const req = M.requests.name;
    const all = () => true;
    const byCap = (l) => l.capability || manifest.unmatched;
    const errorsOnly = (l) => isError(l.code);
    const rateFrom = sampleAgo(RATE_WINDOW_S);
    const errFrom = sampleAgo(ERROR_WINDOW_S);
    const now = samples[samples.length - 1].t;

    const totalNow = total(series, req).get("") || 0;
    $("total").textContent = fmtCount(totalNow);
    if (rateFrom) {
      const before = total(rateFrom.series, req).get("");
      $("rate").textContent = fmtRate(increase(totalNow, before) / Math.max(now - rateFrom.t, 0.001));
    } else {
      $("rate").textContent = "…";
    }
    $("inflight").textContent = fmtCount(total(series, M.in_flight.name).get("") ?? null);
    $("errors").textContent = fmtCount(total(series, req, errorsOnly).get("") || 0);
    const [p50, p95] = ttftQuantiles(series, all);
    $("ttft").textContent = p50 === null ? "no streams yet" : `${fmtSeconds(p50)} / ${fmtSeconds(p95)}`;

    const counts = total(series, req, all, byCap);
    const errs = total(series, req, errorsOnly, byCap);
    const before = rateFrom ? total(rateFrom.series, req, all, byCap) : new Map();
    const durSum = total(series, M.duration.name + "_sum", all, byCap);
    const durCount = total(series, M.duration.name + "_count", all, byCap);
    const caps = [...counts.keys()].sort();
    fill(
      "capabilities",
      caps.map((cap) => (tr) => {
        const keep = (l) => byCap(l) === cap;
        const [c50, c95] = ttftQuantiles(series, keep);
        const n = durCount.get(cap) || 0;
        cell(tr, cap, "mono");
        cell(tr, fmtCount(counts.get(cap)), "num");
        cell(tr, rateFrom ? fmtRate(increase(counts.get(cap), before.get(cap)) / Math.max(now - rateFrom.t, 0.001)) : "…", "num");
        cell(tr, fmtCount(errs.get(cap) || 0), "num");
        cell(tr, n ? fmtSeconds((durSum.get(cap) || 0) / n) : "–", "num");
        cell(tr, fmtSeconds(c50), "num");
        cell(tr, fmtSeconds(c95), "num");
      }),
      "no request counted yet",
      7,
    );

    const key = (l) => JSON.stringify([l.front || "", byCap(l), String(l.code)]);
    const errNow = total(series, req, errorsOnly, key);
    const errThen = errFrom ? total(errFrom.series, req, errorsOnly, key) : new Map();
    const rows = [...errNow.entries()]
      .map(([k, v]) => [JSON.parse(k), v, increase(v, errThen.get(k))])
      .sort((a, b) => b[2] - a[2] || b[1] - a[1]);
    fill(
      "error-rows",
      rows.map(([[front, cap, code], count, recent]) => (tr) => {
        cell(tr, front);
        cell(tr, cap, "mono");
        cell(tr, badge(code, "failed"));
        cell(tr, fmtCount(count), "num");
        cell(tr, fmtCount(recent), "num");
      }),
      "no error answered",
      5,
    );
  }

  // -- polling --

  async function get(path) {
    const headers = { Accept: path === "/metrics" ? "text/plain" : "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(path, { headers, signal: abort.signal, cache: "no-store", credentials: "omit" });
      const body = await response.text();
      return { status: response.status, body };
    } finally {
      clearTimeout(timer);
    }
  }

  function refusal(status) {
    return status === 401 || status === 403;
  }

  async function poll() {
    let registry;
    let metrics;
    try {
      [registry, metrics] = await Promise.all([get("/registry"), get("/metrics")]);
    } catch (err) {
      setStatus(`router unreachable (${err.name === "AbortError" ? "timed out" : "network error"}); retrying`, "bad");
      return;
    }
    const problems = [];
    if (registry.status === 200) {
      drawRegistry(JSON.parse(registry.body));
    } else if (refusal(registry.status)) {
      problems.push(`/registry refused the ${token() ? "token" : "request: an admin token is needed"} (${registry.status})`);
    } else {
      problems.push(`/registry answered ${registry.status}`);
    }
    if (metrics.status === 200) {
      samples.push({ t: performance.now() / 1000, series: parsePrometheus(metrics.body) });
      if (samples.length > KEEP_SAMPLES) samples.shift();
      drawMetrics(samples[samples.length - 1].series);
    } else if (metrics.status === 404) {
      clearMetrics("metrics unavailable: this router does not serve /metrics");
    } else if (refusal(metrics.status)) {
      clearMetrics(`metrics unavailable: /metrics refused the ${token() ? "token" : "request"} (${metrics.status})`);
      problems.push(`/metrics needs the admin token (${metrics.status})`);
    } else {
      clearMetrics(`metrics unavailable: /metrics answered ${metrics.status}`);
    }
    // Without a token the form stays up unless the router showed everything without one (auth off).
    const refused = refusal(registry.status) || refusal(metrics.status);
    showLogin(refused || (!token() && metrics.status !== 200));
    if (problems.length) setStatus(problems.join(" · "), "bad");
    else setStatus(`updated ${new Date().toLocaleTimeString()}`, "ok");
  }

  async function loop() {
    try {
      if (document.visibilityState !== "hidden") await poll(); // a tab in the background costs the router nothing
    } catch (err) {
      setStatus(`could not read the router's answer: ${err.message}`, "bad");
    }
    setTimeout(loop, POLL_MS); // one poll at a time: the next starts 2 s after this one ended
  }

  function start() {
    takeTokenFromFragment();
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      showLogin(false);
      poll().catch(() => {});
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(true);
    });
    window.addEventListener("hashchange", takeTokenFromFragment);
    showLogin(!token());
    loop();
  }

  start();
})();
