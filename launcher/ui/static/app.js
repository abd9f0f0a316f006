// launch ui: the pages of the dashboard, drawn from /api/... and kept live by polling.
// No build step, no framework: DOM built with el() (text only, never innerHTML of data),
// JSON polled with ETags (a 304 redraws nothing), logs read by piece offset.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
                 "#db2777", "#4b5563", "#65a30d"];
const TERMINAL = ["succeeded", "failed", "stopped"];
const main = document.getElementById("main");

// -- helpers --------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// replace a node's children (nulls, from `cond ? el(...) : null`, are left out)
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}

const etags = new Map();
// GET JSON; null when unchanged since the last call for this URL (304)
async function getJSON(url) {
  const headers = etags.has(url) ? { "If-None-Match": etags.get(url) } : {};
  const r = await fetch(url, { headers, cache: "no-store" });
  if (r.status === 304) return null;
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  if (r.headers.get("ETag")) etags.set(url, r.headers.get("ETag"));
  return r.json();
}

function showError(e) {
  const box = document.getElementById("error");
  box.hidden = !e;
  box.textContent = e ? String(e.message || e) : "";
}

// run fn now and every pollMs until it returns "done"
function poll(fn) {
  const tick = async () => {
    let done = false;
    try { done = (await fn()) === "done"; showError(null); } catch (e) { showError(e); }
    document.getElementById("live").textContent =
      done ? "finished" : "live \u00b7 " + new Date().toLocaleTimeString();
    if (!done) setTimeout(tick, CONFIG.pollMs);
  };
  tick();
}

function age(t) {
  if (!t) return "-";
  return dur(Date.now() / 1000 - t);
}
function dur(s) {
  if (s === null || s === undefined || s < 0) return "-";
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
function span(started, ended) {
  return started ? (ended || Date.now() / 1000) - started : null;
}
function money(c) { return c === null || c === undefined ? "-" : `$${c.toFixed(2)}`; }
function num(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : v.toPrecision(4).replace(/\.?0+$/, "");
}
function stateBadge(s) { return el("span", { class: `state state-${s}` }, s); }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : "-"; }
function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  put(nav, ...parts.map(([text, href]) =>
    href ? el("a", { href }, text) : el("span", {}, text)));
}
function runUrl(run) { return `/runs/${encodeURIComponent(run)}`; }
function expUrl(run, exp) { return `${runUrl(run)}/${encodeURIComponent(exp)}`; }

function stopButton(target, finished) {
  if (!CONFIG.allowStop) return null;
  const b = el("button", { class: "stop", id: "stop", disabled: finished }, "Stop");
  b.addEventListener("click", async () => {
    if (!confirm(`Stop ${target}?`)) return;
    b.disabled = true;
    const path = target.split("/").map(encodeURIComponent).join("/");
    const r = await fetch(`/api/runs/${path}/stop`,
                          { method: "POST", headers: { "X-Launch-UI": "stop" } });
    b.textContent = r.ok ? "Stopping\u2026" : `Stop refused (${r.status})`;
  });
  return b;
}

// A sortable table: columns [{key, label, value(row), cell(row), num}], state kept across redraws.
function sortableTable(id, columns, rows, sort) {
  const sorted = rows.slice();
  const col = columns.find((c) => c.key === sort.key);
  if (col) {
    const v = col.value || ((r) => r[col.key]);
    sorted.sort((a, b) => {
      const x = v(a), y = v(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;  // blanks last either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (sort.desc ? -1 : 1);
    });
  }
  const head = el("tr", {}, columns.map((c) => el("th", {
    class: "sortable" + (c.key === sort.key ? (sort.desc ? " sorted-desc" : " sorted-asc") : ""),
    "data-key": c.key,
    onclick: () => {
      sort.desc = sort.key === c.key ? !sort.desc : false;
      sort.key = c.key;
      sort.redraw();
    },
  }, c.label)));
  // the first sort.shown rows (sorted over all of them): a sweep of thousands stays quick to lay
  // out; "show more" adds the next PAGE_ROWS
  const shown = sorted.slice(0, sort.shown || PAGE_ROWS);
  const body = shown.map((r) => el("tr", { "data-id": r.id || r.name },
    columns.map((c) => el("td", { class: c.num ? "num" : null },
      c.cell ? c.cell(r) : num(r[c.key])))));
  const more = sorted.length > shown.length ? el("div", { class: "more" },
    `${shown.length} of ${sorted.length} shown `,
    el("button", { id: `${id}-more`, onclick: () => {
      sort.shown = shown.length + PAGE_ROWS;
      sort.redraw();
    } }, `show ${Math.min(PAGE_ROWS, sorted.length - shown.length)} more`),
    " ",
    el("button", { onclick: () => { sort.shown = sorted.length; sort.redraw(); } }, "show all"))
    : null;
  return el("div", {}, el("table", { id }, el("thead", {}, head), el("tbody", {}, body)), more);
}
const PAGE_ROWS = 100;

// a page's first full drawing, laid out, for benchmarks/ui.py (performance "drawn:runs", "drawn:run")
function drawn(page) {
  if (performance.getEntriesByName(`drawn:${page}`).length) return;
  void document.body.offsetHeight;  // lay the page out first: the mark counts that too
  performance.mark(`drawn:${page}`);
}

// Whether to redraw: on new data, else every AGE_MS (ages and durations move on by themselves)
const AGE_MS = 10000;
function staleness() {
  let last = 0;
  return (fresh) => {
    if (!fresh && Date.now() - last < AGE_MS) return false;
    last = Date.now();
    return true;
  };
}

// -- charts ---------------------------------------------------------------------------------
// Curves by epoch, one series per name: {name: [[x, y], ...]} drawn with uPlot.
function lineChart(title, seriesMap, opts) {
  const names = Object.keys(seriesMap);
  const xs = [...new Set(names.flatMap((n) => seriesMap[n].map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  let points = 0;
  for (const n of names) {
    const ys = new Array(xs.length).fill(null);
    for (const [x, y] of seriesMap[n]) { ys[index.get(x)] = y; points++; }
    data.push(ys);
  }
  const box = el("div", { class: "chart", "data-metric": title, "data-points": points },
                 el("div", { class: "title" }, title));
  if (!xs.length) {
    box.append(el("div", { class: "muted" }, "nothing logged yet"));
    return box;
  }
  const u = new uPlot({
    width: (opts && opts.width) || 420, height: (opts && opts.height) || 240,
    legend: { show: names.length <= 12 },
    scales: { x: { time: false } },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { size: 56 }],
    series: [{ label: "epoch" }, ...names.map((n, i) => ({
      label: n, stroke: PALETTE[i % PALETTE.length], width: 1.6, spanGaps: true,
      points: { size: 4 },
    }))],
  }, data);
  box.append(u.root);
  box.uplot = u;
  return box;
}

// put new charts in a container, first letting go of the old ones' uPlot listeners
function putCharts(container, ...charts) {
  for (const old of container.querySelectorAll(".chart")) if (old.uplot) old.uplot.destroy();
  put(container, ...charts);
}

// Best metric against one parameter: a scatter drawn as SVG (categorical or numeric, log scale
// where the values span decades, as learning rates do); the best point is ringed.
function paramChart(param, metric, exps, minimize) {
  const pts = exps.filter((e) => e.best !== null && e.best !== undefined && param in e.params)
    .map((e) => ({ id: e.id, x: e.params[param], y: e.best }));
  const W = 280, H = 190, L = 44, R = 10, T = 10, B = 30;
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  const box = el("div", { class: "chart", "data-param": param, "data-points": pts.length },
                 el("div", { class: "title" }, `${metric} vs ${param}`), svg);
  if (!pts.length) { svg.append(svgEl("text", { x: L, y: H / 2 }, "no metric yet")); return box; }
  const numeric = pts.every((p) => typeof p.x === "number");
  let xpos, ticks;
  if (numeric) {
    const vals = pts.map((p) => p.x);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const log = lo > 0 && hi / lo >= 20;
    const f = log ? Math.log10 : (v) => v;
    const a = f(lo), b = f(hi) === f(lo) ? f(lo) + 1 : f(hi);
    xpos = (v) => L + 12 + ((f(v) - a) / (b - a)) * (W - L - R - 24);
    ticks = [...new Set(vals)].sort((p, q) => p - q);
    if (ticks.length > 6) ticks = [lo, hi];
  } else {
    const cats = [...new Set(pts.map((p) => String(p.x)))];
    xpos = (v) => L + ((cats.indexOf(String(v)) + 0.5) / cats.length) * (W - L - R);
    ticks = cats;
  }
  const ys = pts.map((p) => p.y);
  let ylo = Math.min(...ys), yhi = Math.max(...ys);
  if (ylo === yhi) { ylo -= 0.5; yhi += 0.5; }
  const pad = (yhi - ylo) * 0.08;
  ylo -= pad; yhi += pad;
  const ypos = (v) => T + (1 - (v - ylo) / (yhi - ylo)) * (H - T - B);
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#94a3b8" }));
  svg.append(svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#94a3b8" }));
  for (const v of [ylo + pad, yhi - pad]) {
    svg.append(svgEl("text", { x: L - 4, y: ypos(v) + 3, "text-anchor": "end" }, num(v)));
  }
  for (const t of ticks) {
    svg.append(svgEl("text", { x: xpos(t), y: H - B + 13, "text-anchor": "middle" }, num(t)));
  }
  const best = pts.reduce((a, b) => ((minimize ? b.y < a.y : b.y > a.y) ? b : a));
  for (const p of pts) {
    const c = svgEl("circle", { cx: xpos(p.x), cy: ypos(p.y), r: p === best ? 5 : 3.5,
                                fill: p === best ? "#16a34a" : "#2563eb", "fill-opacity": 0.75 });
    c.append(svgEl("title", {}, `${p.id}: ${param}=${p.x}, ${metric}=${num(p.y)}`));
    svg.append(c);
  }
  return box;
}

// -- the runs page --------------------------------------------------------------------------
function runsPage() {
  crumbs(["runs"]);
  document.title = "runs \u00b7 launch ui";
  const params = new URLSearchParams(location.search);
  let filter = params.get("status") || "all";
  let data = null;
  const sort = { key: "created", desc: true, redraw: () => draw() };
  const filters = el("div", { class: "filters", id: "filters" });
  const holder = el("div");
  put(main, el("h1", {}, "Runs"), filters, holder);

  function draw() {
    const rows = data.runs;
    const states = ["all", ...new Set(rows.map((r) => r.status))];
    put(filters, ...states.map((s) => el("button", {
      class: s === filter ? "active" : null, "data-status": s,
      onclick: () => {
        filter = s;
        const q = s === "all" ? "" : `?status=${encodeURIComponent(s)}`;
        history.replaceState(null, "", `/${q}`);
        draw();
      },
    }, s === "all" ? `all (${rows.length})` : `${s} (${rows.filter((r) => r.status === s).length})`)));
    const shown = filter === "all" ? rows : rows.filter((r) => r.status === filter);
    if (!rows.length) {
      put(holder, el("p", { class: "muted" }, "No runs yet: `launch run SCRIPT` starts one."));
      return;
    }
    put(holder, sortableTable("runs", [
      { key: "name", label: "run", cell: (r) => el("a", { href: runUrl(r.name) }, r.name) },
      { key: "backend", label: "backend", cell: (r) => r.backend },
      { key: "instance_type", label: "instance", cell: (r) => r.instance_type || "-" },
      { key: "status", label: "status", cell: (r) => stateBadge(r.status) },
      { key: "progress", label: "progress", value: (r) => (r.total ? r.done / r.total : 0),
        cell: (r) => [el("span", { class: "bar" },
                         el("i", { style: `width:${r.total ? (100 * r.done) / r.total : 0}%` })),
                      `${r.done}/${r.total}`] },
      { key: "created", label: "age", num: true, cell: (r) => age(r.created) },
      { key: "duration", label: "duration", num: true, value: (r) => span(r.created, r.ended),
        cell: (r) => dur(span(r.created, r.ended)) },
      { key: "cost", label: "cost", num: true, cell: (r) => money(r.cost) },
    ], shown, sort));
  }

  const stale = staleness();
  poll(async () => {
    const fresh = await getJSON("/api/runs");
    if (fresh) data = fresh;
    if (data && stale(fresh)) { draw(); drawn("runs"); }
  });
}

// -- a run (sweep) --------------------------------------------------------------------------
function runPage(run) {
  crumbs(["runs", "/"], [run]);
  document.title = `${run} \u00b7 launch ui`;
  const sort = { key: "id", desc: false, redraw: () => drawTable() };
  let data = null;
  const head = el("div"), table = el("div"), params = el("div", { class: "charts", id: "param-charts" });
  const curves = el("div", { class: "charts", id: "curves" });
  put(main, head, el("h2", {}, "Experiments"), table,
                       el("h2", {}, "Best metric by parameter"), params,
                       el("h2", { id: "curves-title" }, "Curves"), curves);

  function drawHead() {
    const r = data.run;
    const cost = r.cost !== null ? r.cost : null;
    put(head, 
      el("h1", {}, r.name, " ", stateBadge(r.status), " ", stopButton(run, data.finished)),
      el("div", { class: "summary" },
         el("span", {}, el("b", {}, `${r.done}/${r.total}`), " done"),
         el("span", {}, `${r.backend} ${r.instance_type || ""}`),
         el("span", {}, `started ${age(r.created)} ago`),
         el("span", {}, `duration ${dur(span(r.created, r.ended))}`),
         el("span", {}, `cost ${money(cost)}`),
         data.script ? el("span", { class: "muted" }, data.script) : null),
      data.description ? el("p", {}, data.description) : null,
      r.message ? el("p", { class: "muted" }, r.message) : null);
  }

  function drawTable() {
    const m = data.metric;
    const rate = data.cost_per_hour;
    const cols = [
      { key: "id", label: "experiment", value: (e) => Number(e.id.split("-")[1]),
        cell: (e) => el("a", { href: expUrl(run, e.id) }, e.id) },
      ...data.params.map((p) => ({ key: `param:${p}`, label: p, value: (e) => e.params[p],
                                   num: true, cell: (e) => num(e.params[p]) })),
      { key: "state", label: "status", cell: (e) => stateBadge(e.state) },
      { key: "attempt", label: "attempts", num: true },
      // a multi-node experiment's nodes, rank 0 first
      { key: "node", label: "node", cell: (e) => (e.nodes && e.nodes.length ? e.nodes.join(", ") : e.node) || "-" },
      { key: "duration", label: "duration", num: true, value: (e) => span(e.started, e.ended),
        cell: (e) => dur(span(e.started, e.ended)) },
      { key: "cost", label: "cost", num: true,
        value: (e) => (rate === null ? null : (span(e.started, e.ended) || 0) / 3600 * rate),
        cell: (e) => money(rate === null || !e.started ? null : span(e.started, e.ended) / 3600 * rate) },
      { key: "best", label: m ? `best ${m}` : "best", num: true,
        value: (e) => (e.best === null ? null : data.minimize ? e.best : -e.best) },
      { key: "rank", label: "rank", num: true },
    ];
    put(table, sortableTable("experiments", cols, data.experiments, sort));
  }

  function drawCharts() {
    put(params, ...(data.metric
      ? data.params.map((p) => paramChart(p, data.metric, data.experiments, data.minimize))
      : [el("p", { class: "muted" }, "no metric logged yet")]));
    const label = (e) => {
      const x = data.experiments.find((v) => v.id === e);
      const shown = Object.entries(x ? x.params : {}).map(([k, v]) => `${k}=${num(v)}`).join(", ");
      return shown ? `${e}: ${shown}` : e;
    };
    putCharts(curves, ...Object.entries(data.curves).map(([metric, byExp]) =>
      lineChart(metric, Object.fromEntries(Object.entries(byExp).map(([e, pts]) => [label(e), pts])),
                { width: 520, height: 280 })));
    const total = data.experiments.length;
    document.getElementById("curves-title").textContent = data.curves_of < total
      ? `Curves (the ${data.curves_of} best of ${total} experiments)` : "Curves";
  }

  const stale = staleness();
  poll(async () => {
    const fresh = await getJSON(`/api/runs/${encodeURIComponent(run)}`);
    if (fresh) { data = fresh; drawCharts(); }
    if (!data) return;
    if (stale(fresh)) { drawHead(); drawTable(); drawn("run"); }
    return data.finished && !fresh ? "done" : null;
  });
}

// -- an experiment --------------------------------------------------------------------------
function experimentPage(run, exp) {
  crumbs(["runs", "/"], [run, runUrl(run)], [exp]);
  document.title = `${run}/${exp} \u00b7 launch ui`;
  const head = el("div"), info = el("div", { class: "two" });
  const charts = el("div", { class: "charts", id: "metrics" });
  const log = el("pre", { class: "log", id: "log" });
  const logNote = el("div", { class: "muted", id: "log-note" });
  const arts = el("div", { id: "artifacts" });
  put(main, head, info, el("h2", {}, "Metrics"), charts,
                       el("h2", {}, "Log"), logNote, log, el("h2", {}, "Artifacts"), arts);
  const base = `/api/runs/${encodeURIComponent(run)}/${encodeURIComponent(exp)}`;
  let page = null, offset = null, logDone = false;
  const stale = staleness();

  function drawHead() {
    const e = page.experiment;
    put(head, 
      el("h1", {}, `${run}/${exp} `, stateBadge(e.state), " ", stopButton(`${run}/${exp}`, page.finished)),
      el("div", { class: "summary" },
         el("span", {}, `attempt ${e.attempt}`),
         el("span", {}, `node ${e.node || "-"}`),
         el("span", {}, `exit code ${e.exit_code === null ? "-" : e.exit_code}`),
         el("span", {}, `started ${when(e.started)}`),
         el("span", {}, `duration ${dur(span(e.started, e.ended))}`)),
      e.message ? el("p", { class: "muted" }, e.message) : null);
    put(info, 
      el("div", {}, el("h2", {}, "Arguments"), el("code", { class: "args", id: "args" }, e.args.join(" ") || "(none)"),
         el("h2", {}, "Parameters"),
         Object.keys(e.params).length
           ? el("table", { id: "params" }, Object.entries(e.params).map(([k, v]) =>
               el("tr", {}, el("th", {}, k), el("td", {}, num(v)))))
           : el("p", { class: "muted" }, "no swept parameters")),
      el("div", {}, el("h2", {}, "Status history"),
         el("table", { id: "history" },
            el("tr", {}, el("th", {}, "attempt"), el("th", {}, "node"), el("th", {}, "claimed")),
            page.history.map((h) => el("tr", {}, el("td", {}, h.attempt), el("td", {}, h.node || "-"),
                                       el("td", {}, when(h.time)))),
            el("tr", {}, el("td", {}, "now"), el("td", {}, e.node || "-"),
               el("td", {}, stateBadge(e.state), e.ended ? ` ${when(e.ended)}` : "")))));
  }

  async function pollLog() {
    if (logDone) return;
    const q = offset === null ? "" : `?offset=${offset}`;
    const r = await fetch(`${base}/log${q}`, { cache: "no-store" });
    if (!r.ok) throw new Error(`log: ${r.status}`);
    const chunk = await r.json();
    if (offset === null && chunk.skipped) {
      logNote.textContent = `(${chunk.skipped} earlier log pieces not shown: \`launch logs ${run}/${exp}\` prints them all)`;
    }
    if (chunk.text) {
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
      log.append(chunk.text);
      if (log.textContent.length > LOG_KEEP_CHARS) {  // hours of following: keep the tail
        log.textContent = log.textContent.slice(-LOG_KEEP_CHARS / 2);
        logNote.textContent = `(earlier output dropped from this page: \`launch logs ${run}/${exp}\` prints it all)`;
      }
      if (follow) log.scrollTop = log.scrollHeight;
    }
    offset = chunk.next;
    logDone = chunk.done;
    log.dataset.offset = offset;
  }

  poll(async () => {
    const fresh = await getJSON(base);
    if (fresh) page = fresh;
    if (page && stale(fresh)) drawHead();
    const m = await getJSON(`${base}/metrics`);
    if (m) {
      putCharts(charts, ...(m.columns.length
        ? m.columns.map((c) => lineChart(c, { [exp]: m.curves[c] }, { width: 360, height: 200 }))
        : [el("p", { class: "muted" }, "no metrics.csv shipped yet")]));
    }
    const a = await getJSON(`${base}/artifacts`);
    if (a) {
      put(arts, a.length ? el("table", {},
        el("tr", {}, el("th", {}, "path"), el("th", {}, "size"), el("th", {}, "sha256")),
        a.map((f) => el("tr", {},
          el("td", {}, el("a", { href: `/download/${encodeURIComponent(run)}/${encodeURIComponent(exp)}/` +
                                        f.path.split("/").map(encodeURIComponent).join("/") }, f.path)),
          el("td", { class: "num" }, `${f.size} B`), el("td", { class: "muted" }, f.sha256.slice(0, 12)))))
        : el("p", { class: "muted" }, "nothing shipped yet"));
    }
    await pollLog();
    return page && page.finished && logDone && !fresh && !m ? "done" : null;
  });
}

const LOG_KEEP_CHARS = 2000000;

// -- routing --------------------------------------------------------------------------------
(function route() {
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts.length === 2) runPage(parts[1]);
  else if (parts[0] === "runs" && parts.length === 3) experimentPage(parts[1], parts[2]);
  else runsPage();
})();
