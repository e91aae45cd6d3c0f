// The emulator's console: reads /_console/api/* and renders events newest first.
// Every value from an event goes into the page as text (textContent), never as HTML: log content is untrusted.
"use strict";

const REFRESH_MS = 3000;
const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "1d": 86400e3, "7d": 7 * 86400e3 };
const $ = (id) => document.getElementById(id);
let busy = false;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function pad(n, w = 2) { return String(n).padStart(w, "0"); }

function formatTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function toLocalInput(ms) { return formatTime(ms).slice(0, 19).replace(" ", "T"); }

function params() {
  const q = new URLSearchParams(location.search);
  return {
    project: q.get("project") || "",
    name: q.get("name") || "",
    level: q.get("level") || "",
    range: q.get("range") || "all",
    from: q.get("from") || "",
    to: q.get("to") || "",
    auto: q.get("auto") !== "0",
    expand: q.get("expand") === "1",
  };
}

function saveParams() {
  const q = new URLSearchParams();
  const put = (k, v) => { if (v) q.set(k, v); };
  put("project", $("project").value);
  put("name", $("name").value);
  put("level", $("level").value);
  if ($("range").value !== "all") q.set("range", $("range").value);
  if ($("range").value === "custom") {
    put("from", $("from").value);
    put("to", $("to").value);
  }
  if (!$("auto").checked) q.set("auto", "0");
  if ($("expand").checked) q.set("expand", "1");
  const search = q.toString();
  history.replaceState(null, "", search ? `?${search}` : location.pathname);
}

function window_() {
  const r = $("range").value;
  if (r in RANGES) return { from: Date.now() - RANGES[r], to: null };
  if (r === "custom") {
    const f = $("from").value ? new Date($("from").value).getTime() : null;
    const t = $("to").value ? new Date($("to").value).getTime() : null;
    return { from: Number.isFinite(f) ? f : null, to: Number.isFinite(t) ? t : null };
  }
  return { from: null, to: null };
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error_msg || `HTTP ${r.status}`);
  return body;
}

function fillSelect(select, values, keep, allLabel) {
  const wanted = keep || select.value;
  const options = allLabel === null ? [] : [el("option", { value: "" }, allLabel)];
  for (const v of values) options.push(el("option", { value: v.value }, v.label));
  if (wanted && !values.some((v) => v.value === wanted)) options.push(el("option", { value: wanted }, wanted));
  select.replaceChildren(...options);
  select.value = wanted || (allLabel === null && values.length ? values[0].value : "");
}

function contentCell(text) {
  const lines = text.split("\n");
  if (lines.length === 1) return el("pre", { class: "content" }, text);
  const summary = el("summary", { "data-more": /Traceback \(most recent call last\)/.test(text) ? "traceback" : "more" },
    el("pre", { class: "content first" }, lines[0]));
  const more = el("pre", { class: "content more" }, lines.slice(1).join("\n"));
  return $("expand").checked ? el("details", { open: "" }, summary, more) : el("details", {}, summary, more);
}

function row(e) {
  const d = e.detail || {};
  const resource = [d.resource_name, d.resource_id].filter(Boolean);
  const res = resource.length === 2 ? `${resource[0]} (${resource[1]})` : (resource[0] || "");
  return el("tr", { class: "event", "data-event-id": e.event_id, "data-time": String(e.time) },
    el("td", { class: "c-time", title: new Date(e.time).toISOString() }, formatTime(e.time)),
    el("td", { class: "c-name" }, e.event_name),
    el("td", { class: "c-level" }, d.event_level ? el("span", { class: `level level-${d.event_level}` }, d.event_level) : ""),
    el("td", { class: "c-state" }, d.event_state ? el("span", { class: `state state-${d.event_state}` }, d.event_state) : ""),
    el("td", { class: "c-source" }, e.event_source),
    el("td", { class: "c-resource" }, res),
    el("td", { class: "c-content" }, contentCell(d.content || "")),
  );
}

async function loadProjects() {
  const data = await getJSON("/_console/api/projects");
  const values = data.projects.map((p) => ({ value: p.project_id, label: `${p.project_id} (${p.event_count})` }));
  fillSelect($("project"), values, $("project").value || params().project, null);
  return values.length;
}

async function loadEvents() {
  const project = $("project").value;
  const tbody = $("events").tBodies[0];
  if (!project) {
    tbody.replaceChildren();
    $("status").textContent = "No events yet in any project.";
    $("empty").hidden = false;
    return;
  }
  const q = new URLSearchParams({ project, limit: "200" });
  if ($("name").value) q.set("name", $("name").value);
  if ($("level").value) q.set("level", $("level").value);
  const w = window_();
  if (w.from !== null) q.set("from", String(Math.max(0, Math.floor(w.from))));
  if (w.to !== null) q.set("to", String(Math.floor(w.to)));
  const data = await getJSON(`/_console/api/events?${q}`);
  fillSelect($("name"), data.names.map((n) => ({ value: n, label: n })), $("name").value, "All names");
  // Keep the rows a reader has opened open across refreshes.
  const open = new Set([...tbody.querySelectorAll("tr.event details[open]")].map((d) => d.closest("tr").dataset.eventId));
  const rows = data.events.map(row);
  for (const r of rows) if (open.has(r.dataset.eventId)) r.querySelector("details")?.setAttribute("open", "");
  tbody.replaceChildren(...rows);
  const n = data.events.length;
  $("status").textContent = n < data.total ? `Newest ${n} of ${data.total} events` : `${n} event${n === 1 ? "" : "s"}`;
  $("empty").hidden = n > 0;
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    await loadProjects();
    await loadEvents();
    $("status").classList.remove("error");
    $("updated").textContent = `updated ${formatTime(Date.now()).slice(11, 19)}`;
  } catch (err) {
    $("status").textContent = `Cannot read events: ${err.message}`;
    $("status").classList.add("error");
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = $("auto").checked ? setInterval(refresh, REFRESH_MS) : null;
}

function showCustom() {
  const custom = $("range").value === "custom";
  for (const label of document.querySelectorAll("label.custom")) label.hidden = !custom;
  if (custom && !$("from").value) $("from").value = toLocalInput(Date.now() - 3600e3);
}

function init() {
  const p = params();
  $("level").value = p.level;
  $("range").value = p.range in RANGES || p.range === "custom" ? p.range : "all";
  $("from").value = p.from;
  $("to").value = p.to;
  $("auto").checked = p.auto;
  $("expand").checked = p.expand;
  if (p.name) fillSelect($("name"), [], p.name, "All names");
  $("hint").textContent = `CES_ENDPOINT=${location.origin} CES_PROJECT_ID=demo ces-logging send --name hello --content hi`;
  showCustom();
  const changed = () => { saveParams(); refresh(); };
  $("project").addEventListener("change", () => { $("name").value = ""; changed(); });
  for (const id of ["name", "level", "from", "to"]) $(id).addEventListener("change", changed);
  $("range").addEventListener("change", () => { showCustom(); changed(); });
  $("auto").addEventListener("change", () => { saveParams(); schedule(); });
  $("expand").addEventListener("change", () => {
    saveParams();
    for (const d of document.querySelectorAll("tr.event details")) d.open = $("expand").checked;
  });
  $("refresh").addEventListener("click", refresh);
  refresh();
  schedule();
}

document.addEventListener("DOMContentLoaded", init);
