// sandboxrun dashboard page: plain JavaScript, no build step.
// Everything from the server (and so from agents) is put in the page with textContent or as an
// attribute value, never parsed as HTML. The server's Content-Security-Policy forbids inline
// scripts besides.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLUMNS = ["name", "mode", "state", "age", "branch", "action", "turns", "cost", "left", "presence"];
const state = { snap: null, selected: null, after: 0, source: null, all: false, lastEventId: 0 };

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d";
}

function money(x) {
  return x === null || x === undefined ? "" : "$" + Number(x).toFixed(2);
}

function cells(row, now) {
  return {
    name: row.name,
    mode: row.mode,
    state: row.state,
    age: row.state_since ? duration(now - row.state_since) : "",
    branch: row.branch || "",
    action: [row.last_tool, row.last_file].filter(Boolean).join(" "),
    turns: row.turns === null ? "" : String(row.turns),
    cost: money(row.cost_usd),
    left: duration(row.time_left === null ? null : row.time_left - (now - state.snap.at)),
    presence: row.presence || "",
  };
}

function renderTable() {
  const snap = state.snap;
  const body = document.querySelector("#sessions tbody");
  const now = Date.now() / 1000;
  const seen = new Set();
  for (const row of snap.sessions) {
    seen.add(row.id);
    let tr = body.querySelector('tr[data-id="' + CSS.escape(row.id) + '"]');
    if (!tr) {
      tr = el("tr", { "data-id": row.id });
      for (const c of COLUMNS) tr.appendChild(el("td", { class: c }));
      tr.addEventListener("click", () => select(row.id));
      body.appendChild(tr);
    }
    tr.setAttribute("data-state", row.state);
    tr.setAttribute("data-name", row.name);
    const values = cells(row, now);
    COLUMNS.forEach((c, i) => {
      const td = tr.children[i];
      if (td.textContent !== values[c]) td.textContent = values[c];
    });
    tr.title = row.state_reason || "";
    tr.classList.toggle("selected", row.id === state.selected);
  }
  for (const tr of Array.from(body.children)) {
    if (!seen.has(tr.getAttribute("data-id"))) tr.remove();
  }
  document.getElementById("empty").hidden = snap.sessions.length > 0;
  const counts = Object.entries(snap.counts).map(([k, v]) => v + " " + k).join(", ");
  document.getElementById("totals").textContent =
    snap.sessions.length + " sessions" + (counts ? " (" + counts + ")" : "") + " · total " + money(snap.cost_usd);
  document.getElementById("scope").textContent = snap.repo || "every repository";
  document.body.setAttribute("data-last-event-id", String(snap.last_event_id));
}

function renderDetail() {
  const box = document.getElementById("detail");
  const row = state.snap && state.snap.sessions.find((r) => r.id === state.selected);
  if (!row) { box.hidden = true; return; }
  box.hidden = false;
  document.getElementById("detail-title").textContent = row.name + " (" + row.state + ")";
  const facts = document.getElementById("detail-facts");
  facts.replaceChildren();
  const pairs = [["mode", row.mode + " / " + row.backend], ["status", row.status], ["why", row.state_reason],
    ["branch", row.branch], ["repo", row.repo], ["role", row.role], ["group", row.group],
    ["error", row.error]];
  for (const [k, v] of pairs) {
    if (!v) continue;
    facts.appendChild(el("dt", {}, k));
    facts.appendChild(el("dd", {}, v));
  }
}

function appendLog(events) {
  const log = document.getElementById("log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  for (const ev of events) {
    if (ev.id <= state.after) continue;
    state.after = ev.id;
    if (!ev.text) continue;
    const t = new Date(ev.ts * 1000).toTimeString().slice(0, 8);
    log.appendChild(el("div", { class: "line", "data-kind": ev.kind, "data-id": ev.id }, t + " " + ev.text));
  }
  while (log.childElementCount > 2000) log.firstElementChild.remove(); // a long run: keep the tail
  if (stick) log.scrollTop = log.scrollHeight;
}

async function select(id) {
  state.selected = id;
  state.after = 0;
  document.getElementById("log").replaceChildren();
  renderTable();
  renderDetail();
  const r = await fetch("/api/sessions/" + encodeURIComponent(id) + "/events?tail=500", { credentials: "same-origin" });
  if (r.ok && state.selected === id) appendLog(await r.json());
}

function layers(tasks) {
  // depth of each task: 0 without dependencies, else 1 + its deepest dependency
  const byName = new Map(tasks.map((t) => [t.name, t]));
  const depth = new Map();
  const visit = (t, seen) => {
    if (depth.has(t.name)) return depth.get(t.name);
    if (seen.has(t.name)) return 0;
    seen.add(t.name);
    let d = 0;
    for (const dep of t.depends_on) if (byName.has(dep)) d = Math.max(d, 1 + visit(byName.get(dep), seen));
    depth.set(t.name, d);
    return d;
  };
  tasks.forEach((t) => visit(t, new Set()));
  return depth;
}

function graph(group) {
  const depth = layers(group.tasks);
  const cols = new Map();
  const pos = new Map();
  const W = 150, H = 44, BW = 130, BH = 30;
  for (const t of group.tasks) {
    const d = depth.get(t.name) || 0;
    const i = cols.get(d) || 0;
    cols.set(d, i + 1);
    pos.set(t.name, { x: 10 + d * W, y: 44 + i * H });
  }
  const width = 20 + (Math.max(0, ...depth.values()) + 1) * W;
  const height = 54 + Math.max(1, ...cols.values()) * H;
  const root = svg("svg", { width, height, class: "graph", role: "img" });
  root.appendChild(svg("title", {}, "dependencies of " + group.name));
  for (const t of group.tasks) {
    for (const dep of t.depends_on) {
      const a = pos.get(dep), b = pos.get(t.name);
      if (!a || !b) continue;
      const x0 = a.x + BW, y0 = a.y + BH / 2, x1 = b.x, y1 = b.y + BH / 2;
      // an edge that skips a layer arcs over the boxes between
      const lift = x1 - x0 > W ? Math.min(a.y, b.y) - 40 : null;
      const d = lift === null
        ? "M" + x0 + " " + y0 + " L" + x1 + " " + y1
        : "M" + x0 + " " + y0 + " C" + (x0 + 30) + " " + lift + " " + (x1 - 30) + " " + lift + " " + x1 + " " + y1;
      root.appendChild(svg("path", { class: "edge", d, "data-from": dep, "data-to": t.name }));
    }
  }
  for (const t of group.tasks) {
    const p = pos.get(t.name);
    const g = svg("g", { class: "node", "data-task": t.name });
    g.appendChild(svg("rect", { x: p.x, y: p.y, width: BW, height: BH, rx: 4 }));
    g.appendChild(svg("text", { x: p.x + 6, y: p.y + 13 }, t.name));
    g.appendChild(svg("text", { x: p.x + 6, y: p.y + 26 }, (t.status || t.state) + (t.cost_usd ? " " + money(t.cost_usd) : "")));
    root.appendChild(g);
  }
  return root;
}

function timeline(group) {
  const now = Date.now() / 1000;
  const start = group.created_at;
  const end = Math.max(group.ended_at || now, ...group.tasks.map((t) => t.ended_at || (t.started_at ? now : start)));
  const span = Math.max(1, end - start);
  const W = 600, rowH = 18;
  const root = svg("svg", { width: W + 160, height: 10 + group.tasks.length * rowH, class: "timeline", role: "img" });
  root.appendChild(svg("title", {}, "timeline of " + group.name));
  group.tasks.forEach((t, i) => {
    const y = 5 + i * rowH;
    root.appendChild(svg("text", { x: 0, y: y + 12 }, t.name));
    if (!t.started_at) return;
    const x0 = 150 + ((t.started_at - start) / span) * W;
    const x1 = 150 + (((t.ended_at || now) - start) / span) * W;
    root.appendChild(svg("rect", { class: "bar", x: x0, y, width: Math.max(2, x1 - x0), height: rowH - 4 }));
  });
  return root;
}

function renderGroups() {
  const box = document.getElementById("groups");
  box.replaceChildren();
  for (const g of state.snap.groups) {
    const sec = el("section", { class: "group", "data-group": g.name });
    sec.appendChild(el("h2", {}, "group " + g.name + ": " + g.status + " · " + money(g.cost_usd)));
    sec.appendChild(graph(g));
    sec.appendChild(timeline(g));
    box.appendChild(sec);
  }
}

function render() {
  if (!state.snap) return;
  renderTable();
  renderDetail();
  renderGroups();
}

function live(text, s) {
  const node = document.getElementById("live");
  node.textContent = text;
  node.setAttribute("data-state", s);
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource("/events" + (state.all ? "?all=1" : ""));
  state.source = source;
  source.addEventListener("open", () => live("live", "live"));
  source.addEventListener("error", () => live("reconnecting…", "down"));
  source.addEventListener("snapshot", (e) => {
    state.snap = JSON.parse(e.data);
    state.snap.received = Date.now() / 1000;
    render();
  });
  source.addEventListener("events", (e) => {
    const events = JSON.parse(e.data);
    if (events.length) {
      // how far behind the page is: the newest event's age on arrival (read by the benchmark)
      const lag = Math.round(Date.now() - events[events.length - 1].ts * 1000);
      const b = document.body;
      b.setAttribute("data-lag-ms", String(lag));
      b.setAttribute("data-lag-max-ms", String(Math.max(lag, Number(b.getAttribute("data-lag-max-ms") || 0))));
      b.setAttribute("data-events", String(Number(b.getAttribute("data-events") || 0) + events.length));
    }
    if (state.selected) appendLog(events.filter((ev) => ev.session_id === state.selected));
  });
  source.addEventListener("reload", () => { if (state.selected) select(state.selected); });
}

document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("all");
  all.addEventListener("change", () => { state.all = all.checked; connect(); });
  connect();
  setInterval(() => { if (state.snap) renderTable(); }, 1000); // ages and time left tick
});
