// Quiver's web console: a read-only view of the cluster, built from the HTTP admin API
// (/v1/status, /v1/collections, /v1/plugins, /v1/events, /v1/searches/slow) with the caller's
// credentials. Data only ever enters the page as text (textContent), never as markup.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let token = sessionStorage.getItem("quiver.token") || "";

// A link may carry the credentials in its fragment (`/console#token=app:...`, never sent to
// the server): kept for this tab, then taken out of the address bar and history.
if (location.hash.startsWith("#token=")) {
  token = decodeURIComponent(location.hash.slice("#token=".length));
  sessionStorage.setItem("quiver.token", token);
  history.replaceState(null, "", location.pathname + location.search);
}

/// An element with attributes and children (strings become text).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

class Unauthenticated extends Error {}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const reply = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await reply.json();
  } catch (_) {
    // Not JSON: reported below with the status.
  }
  if (reply.status === 401) throw new Unauthenticated(body && body.error ? body.error.message : "sign in");
  if (!reply.ok) throw new Error(body && body.error ? body.error.message : reply.status + " " + reply.statusText);
  return body;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

function bytes(n) {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function uptime(startedMs) {
  if (!startedMs) return "";
  let s = Math.max(0, Math.floor((Date.now() - startedMs) / 1000));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function note(id, text) {
  document.getElementById(id).textContent = text || "";
}

function renderNodes(status) {
  document.getElementById("cluster").textContent = status.cluster;
  const nodes = [...status.nodes].sort((a, b) => (a.role + a.node_id).localeCompare(b.role + b.node_id));
  fill("nodes", nodes.map((n) => el("tr", { "data-node": n.node_id, "data-role": n.role },
    el("td", {}, n.node_id),
    el("td", {}, n.role),
    el("td", {}, n.host),
    el("td", {}, n.state || ""),
    el("td", { class: n.healthy ? "ok" : "bad" }, n.healthy ? "yes" : "no"),
    el("td", { class: "num" }, `${(n.cpu_busy || 0).toFixed(2)} / ${(n.cpu_cores || 0).toFixed(1)}`),
    el("td", { class: "num" }, `${bytes(n.mem_used)} / ${bytes(n.mem_capacity)}`),
    el("td", { class: "num" }, n.segments),
    el("td", { class: "num" }, n.restarts),
    el("td", {}, uptime(n.started_ms)))));
  note("nodes-note", (status.notes || []).join("; "));
  renderChart(nodes.filter((n) => n.role === "QueryNode"));
}

/// One bar per query node: the sealed segments it serves (its heartbeat's count).
function renderChart(queryNodes) {
  const chart = document.getElementById("segment-chart");
  const barHeight = 22, gap = 8, label = 190, width = 900;
  const most = Math.max(1, ...queryNodes.map((n) => n.segments));
  const total = queryNodes.reduce((sum, n) => sum + n.segments, 0);
  chart.setAttribute("viewBox", `0 0 ${width} ${Math.max(1, queryNodes.length) * (barHeight + gap) + gap}`);
  chart.setAttribute("data-total", String(total));
  chart.replaceChildren();
  queryNodes.forEach((n, i) => {
    const y = gap + i * (barHeight + gap);
    const w = Math.round(((width - label - 60) * n.segments) / most);
    chart.append(svg("text", { x: 0, y: y + barHeight * 0.7 }, n.node_id));
    chart.append(svg("rect", {
      class: "bar", x: label, y, width: Math.max(w, 1), height: barHeight,
      "data-node": n.node_id, "data-segments": n.segments,
    }));
    chart.append(svg("text", { x: label + w + 6, y: y + barHeight * 0.7 }, n.segments));
  });
  note("segments-note", queryNodes.length ? "" : "no query node serves");
}

function renderCollections(view) {
  const rows = [];
  for (const c of view.collections) {
    const groups = c.replicas.length ? c.replicas : [{ id: 0, nodes: [] }];
    for (const g of groups) {
      const leaders = c.shards.filter((s) => s.replica === g.id)
        .map((s) => `shard ${s.shard}: ${s.leader || "none"}`).join(", ");
      rows.push(el("tr", { "data-collection": c.name, "data-replica": g.id },
        el("td", {}, c.name + (c.released ? " (released)" : "")),
        el("td", { class: "num" }, c.rows),
        el("td", { class: "num" }, c.segments),
        el("td", { class: "num" }, g.id),
        el("td", {}, g.nodes.join(", ")),
        el("td", {}, leaders)));
    }
  }
  fill("replicas", rows);
  const notes = [...view.notes];
  if (view.more) notes.push(`${view.more} more collections not shown`);
  if (!view.collections.length) notes.push("no collections");
  note("replicas-note", notes.join("; "));
}

function renderPlugins(listing) {
  fill("plugins", (listing.active || []).map((a) => el("tr", { "data-kind": a.kind },
    el("td", {}, a.kind),
    el("td", {}, a.name),
    el("td", {}, a.version),
    el("td", {}, (a.sha256 || "").slice(0, 12)),
    el("td", {}, when(a.changed_at_ms)),
    el("td", {}, a.by))));
  const off = [];
  for (const n of listing.nodes || []) {
    for (const s of n.slots || []) if (s.disabled) off.push(`${s.kind} on ${n.node_id}`);
  }
  note("plugins-note", off.length ? "switched off after failures (the built-in answers): " + off.join(", ") : "");
}

function renderEvents(events) {
  const handoffs = [...events.handoffs].reverse().slice(0, 50);
  fill("handoffs", handoffs.map((h) => el("tr", { "data-reason": h.reason },
    el("td", {}, when(h.at_ms)),
    el("td", {}, h.reason),
    el("td", { class: "num" }, h.collection),
    el("td", {}, h.online_node_id),
    el("td", {}, h.online_segment_ids.join(", ")),
    el("td", {}, h.offline_node_id),
    el("td", {}, h.offline_segment_ids.join(", ")),
    el("td", {}, h.released_ms ? `${h.released_ms - h.at_ms} ms` : ""))));
  note("handoffs-note", handoffs.length ? "" : "none yet");
  const steps = [...events.scaling].reverse().slice(0, 50);
  fill("scaling", steps.map((s) => el("tr", {},
    el("td", {}, when(s.at_ms)), el("td", {}, s.role), el("td", {}, s.node_id), el("td", {}, s.action),
    el("td", {}, s.detail))));
  note("scaling-note", steps.length ? "" : "none yet");
}

/// Each slow search as a waterfall: routing, then every query node's share side by side, then
/// the merge, as the proxy timed them.
function renderSlow(slow) {
  const list = document.getElementById("slow");
  list.replaceChildren(...slow.searches.map((s) => {
    const width = 900, label = 190, row = 16, scale = (width - label - 70) / Math.max(s.ms, 0.001);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${(s.nodes.length + 2) * (row + 4) + 4}` });
    let y = 4;
    const bar = (name, cls, start, ms) => {
      chart.append(svg("text", { x: 0, y: y + row * 0.75 }, name));
      chart.append(svg("rect", {
        class: cls, x: label + start * scale, y, width: Math.max(1, ms * scale), height: row,
      }));
      chart.append(svg("text", { x: label + (start + ms) * scale + 4, y: y + row * 0.75 }, `${ms.toFixed(1)} ms`));
      y += row + 4;
    };
    bar("get_routing", "routing", 0, s.routing_ms);
    for (const n of s.nodes) {
      bar(`do_search ${n.node}`, n.error ? "node failed" : "node", s.routing_ms, n.ms);
    }
    bar("do_merge", "merge", Math.max(0, s.ms - s.merge_ms), s.merge_ms);
    const rows = s.nodes.reduce((sum, n) => sum + n.rows_searched, 0);
    const head = el("div", {},
      el("strong", {}, `${s.ms.toFixed(1)} ms`),
      ` ${when(s.at_ms)} · ${s.collection} · nq ${s.nq} · top-k ${s.top_k} · ${s.consistency} · `
        + `${rows} rows on ${s.nodes.length} query node(s)`,
      s.trace_id ? el("span", { class: "muted" }, ` · trace ${s.trace_id}`) : "",
      s.error ? el("span", { class: "error" }, ` · ${s.error}`) : "");
    return el("div", { class: "search", "data-ms": s.ms }, head, chart);
  }));
  note("slow-note", `searches of ${slow.threshold_ms} ms or more through proxy ${slow.proxy} (it keeps its last 32)`
    + (slow.searches.length ? "" : ": none yet"));
}

const SECTIONS = [
  ["/v1/status", renderNodes, "nodes-note"],
  ["/v1/collections", renderCollections, "replicas-note"],
  ["/v1/plugins", renderPlugins, "plugins-note"],
  ["/v1/events", renderEvents, "handoffs-note"],
  ["/v1/searches/slow", renderSlow, "slow-note"],
];

async function refresh() {
  const outcomes = await Promise.allSettled(SECTIONS.map(([path, render]) => api(path).then(render)));
  let signIn = null;
  outcomes.forEach((o, i) => {
    if (o.status === "rejected") {
      if (o.reason instanceof Unauthenticated) signIn = o.reason.message;
      else note(SECTIONS[i][2], `${SECTIONS[i][0]}: ${o.reason.message}`);
    }
  });
  const login = document.getElementById("login");
  login.hidden = signIn === null;
  document.getElementById("login-why").textContent = signIn || "";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.setAttribute("data-loaded", "true");
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("quiver.token", token);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
