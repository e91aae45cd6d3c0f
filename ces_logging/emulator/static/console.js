// The emulator's console: reads /_console/api/* and renders events newest first, a timeline and one event's detail.
// Every value from an event goes into the page as text (textContent), never as HTML: log content is untrusted.
// Bidirectional and invisible control characters are shown as visible markers, so a U+202E cannot reverse
// what a reader sees, and each value is a bidi isolate (console.css), so right-to-left text stays in its cell.
"use strict";

const REFRESH_MS = 3000;
const PAGE = 200;
const FOLD_CHARS = 300; // longer single lines fold like a traceback does
const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "1d": 86400e3, "7d": 7 * 86400e3 };
const MIN_BARS = 30;
const MAX_BAR_PX = 40;
const LEVELS = ["Info", "Minor", "Major", "Critical"]; // stacked bottom to top
const SVG = "http://www.w3.org/2000/svg";
// C0/C1 controls but tab and newline, bidi embeddings, overrides, isolates and marks, zero-width space,
// line/paragraph separators, invisible operators and the BOM. ZWJ/ZWNJ stay: emoji and scripts need them.
const HIDDEN = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200B\u200E\u200F\u2028-\u202E\u2060-\u206F\uFEFF]/g;
const $ = (id) => document.getElementById(id);

const state = { rows: [], next: null, total: 0, older: false, timeline: null, selected: null };
let busy = false;
let again = null; // a refresh asked for while one ran: null, or whether it starts the list again
let timer = null;
let typing = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function codePoint(c) { return c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"); }

// Text with every hidden character replaced by a visible marker (U+202E in a box).
function safe(text) {
  const frag = document.createDocumentFragment();
  const s = String(text ?? "");
  let last = 0;
  for (const m of s.matchAll(HIDDEN)) {
    if (m.index > last) frag.append(s.slice(last, m.index));
    frag.append(el("span", { class: "ctl", title: "a control character, shown instead of applied" }, `U+${codePoint(m[0])}`));
    last = m.index + m[0].length;
  }
  if (last < s.length) frag.append(s.slice(last));
  return frag;
}

// JSON as the API gave it, with the hidden characters written as \uXXXX escapes (still valid JSON).
function rawJSON(value) {
  return JSON.stringify(value, null, 2).replace(HIDDEN, (c) => `\\u${codePoint(c).toLowerCase()}`);
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
    q: q.get("q") || "",
    event: q.get("event") || "",
    auto: q.get("auto") !== "0",
    expand: q.get("expand") === "1",
  };
}

// The URL holds the filters and the open event, so a view can be shared or bookmarked.
function viewURL(eventId) {
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
  put("q", $("q").value.trim());
  if (!$("auto").checked) q.set("auto", "0");
  if ($("expand").checked) q.set("expand", "1");
  put("event", eventId);
  const search = q.toString();
  return search ? `?${search}` : location.pathname;
}

function saveParams() { history.replaceState(null, "", viewURL(state.selected)); }

function window_() {
  const r = $("range").value;
  if (r in RANGES) return { from: Date.now() - RANGES[r], to: null, now: Date.now() };
  if (r === "custom") {
    const f = $("from").value ? new Date($("from").value).getTime() : null;
    // the inputs show whole seconds: "to" takes in its whole second
    const t = $("to").value ? new Date($("to").value).getTime() + 999 : null;
    return { from: Number.isFinite(f) ? f : null, to: Number.isFinite(t) ? t : null };
  }
  return { from: null, to: null };
}

function filterQuery() {
  const q = new URLSearchParams({ project: $("project").value });
  if ($("name").value) q.set("name", $("name").value);
  if ($("level").value) q.set("level", $("level").value);
  if ($("q").value.trim()) q.set("q", $("q").value.trim());
  const w = window_();
  if (w.from !== null) q.set("from", String(Math.max(0, Math.floor(w.from))));
  if (w.to !== null) q.set("to", String(Math.floor(w.to)));
  return { q, w };
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

// Long content folds: the first line (at most three lines of it) shows, the rest opens in place.
function contentCell(text) {
  const lines = text.split("\n");
  if (lines.length === 1 && text.length <= FOLD_CHARS) return el("pre", { class: "content" }, safe(text));
  const label = /Traceback \(most recent call last\)/.test(text) ? "traceback"
    : lines.length > 1 ? `${lines.length - 1} more line${lines.length === 2 ? "" : "s"}` : `${text.length} characters`;
  const summary = el("summary", { "data-more": label, title: "open or fold" }, el("pre", { class: "content first" }, safe(lines[0])));
  const parts = [summary];
  if (lines.length > 1) parts.push(el("pre", { class: "content more" }, safe(lines.slice(1).join("\n"))));
  return el("details", $("expand").checked ? { open: "" } : {}, ...parts);
}

function resourceText(d) {
  const resource = [d.resource_name, d.resource_id].filter(Boolean);
  return resource.length === 2 ? `${resource[0]} (${resource[1]})` : (resource[0] || "");
}

function levelBadge(level) { return level ? el("span", { class: `level level-${level}` }, level) : ""; }
function stateBadge(s) { return s ? el("span", { class: `state state-${s}` }, s) : ""; }

function row(e) {
  const d = e.detail || {};
  const tr = el("tr", { class: "event", "data-event-id": e.event_id, "data-time": String(e.time) },
    el("td", { class: "c-time", title: new Date(e.time).toISOString() }, formatTime(e.time)),
    el("td", { class: "c-name" }, el("a", { href: viewURL(e.event_id), class: "open", title: "show every field" }, safe(e.event_name))),
    el("td", { class: "c-level" }, levelBadge(d.event_level)),
    el("td", { class: "c-state" }, stateBadge(d.event_state)),
    el("td", { class: "c-source" }, safe(e.event_source)),
    el("td", { class: "c-resource" }, safe(resourceText(d))),
    el("td", { class: "c-content" }, contentCell(d.content || "")),
  );
  if (e.event_id === state.selected) tr.classList.add("selected");
  return tr;
}

// All rows again, or only ``added`` ones below those shown (a page loaded further down).
function renderRows(added) {
  const tbody = $("events").tBodies[0];
  if (added) tbody.append(...added.map(row));
  else {
    // Keep the rows a reader has opened open across refreshes.
    const open = new Set([...tbody.querySelectorAll("tr.event details[open]")].map((d) => d.closest("tr").dataset.eventId));
    const rows = state.rows.map(row);
    for (const r of rows) if (open.has(r.dataset.eventId)) r.querySelector("details")?.setAttribute("open", "");
    tbody.replaceChildren(...rows);
  }
  const n = state.rows.length;
  const search = $("q").value.trim() ? " matching the search" : "";
  $("status").textContent = n < state.total ? `Newest ${n} of ${state.total} events${search}`
    : `${n} event${n === 1 ? "" : "s"}${search}`;
  $("empty").hidden = n > 0;
  $("older").hidden = state.next === null;
}

async function loadProjects() {
  const data = await getJSON("/_console/api/projects");
  const values = data.projects.map((p) => ({ value: p.project_id, label: `${p.project_id} (${p.event_count})` }));
  fillSelect($("project"), values, $("project").value || params().project, null);
  return values.length;
}

// The newest page; pages a reader loaded further down stay, unless so many events arrived that a gap opened.
async function loadEvents(reset) {
  if (!$("project").value) {
    Object.assign(state, { rows: [], next: null, total: 0, older: false });
    renderRows();
    $("status").textContent = "No events yet in any project.";
    return;
  }
  const { q } = filterQuery();
  q.set("limit", String(PAGE));
  const data = await getJSON(`/_console/api/events?${q}`);
  fillSelect($("name"), data.names.map((n) => ({ value: n, label: n })), $("name").value, "All names");
  const ids = new Set(data.events.map((e) => e.event_id));
  const newest = state.rows[0];
  const gap = newest && !ids.has(newest.event_id) && data.next !== null;
  if (reset || !state.older || gap || data.total < state.rows.length) {
    Object.assign(state, { rows: data.events, next: data.next, older: false });
  } else {
    const last = data.events[data.events.length - 1];
    const kept = last ? state.rows.filter((e) => !ids.has(e.event_id) && e.time <= last.time) : [];
    state.rows = [...data.events, ...kept];
  }
  state.total = data.total;
  renderRows();
}

async function loadOlder() {
  if (state.next === null) return;
  const { q } = filterQuery();
  q.set("limit", String(PAGE));
  q.set("before", state.next);
  $("older").disabled = true;
  try {
    const data = await getJSON(`/_console/api/events?${q}`);
    const ids = new Set(state.rows.map((e) => e.event_id));
    const added = data.events.filter((e) => !ids.has(e.event_id));
    state.rows.push(...added);
    Object.assign(state, { next: data.next, total: data.total, older: true });
    renderRows(added);
  } catch (err) {
    showError(err);
  } finally {
    $("older").disabled = false;
  }
}

// --- the timeline: bars of events per minute (wider over long ranges), stacked by level ---------------------

async function loadTimeline() {
  if (!$("project").value) { state.timeline = null; drawTimeline(); return; }
  const { q, w } = filterQuery();
  if (w.now && !q.has("to")) q.set("to", String(Math.floor(w.now)));
  state.timeline = await getJSON(`/_console/api/timeline?${q}`);
  drawTimeline();
}

function barLabel(ms, width) {
  const t = formatTime(ms);
  return width >= 86400e3 ? t.slice(0, 10) : width >= 3600e3 ? t.slice(5, 16) : t.slice(11, 16);
}

function widthLabel(ms) {
  const m = ms / 60e3;
  if (m === 1) return "Events per minute";
  if (m < 60) return `Events per ${m} minutes`;
  if (m < 1440) return m === 60 ? "Events per hour" : `Events per ${m / 60} hours`;
  return m === 1440 ? "Events per day" : `Events per ${m / 1440} days`;
}

function drawTimeline() {
  const box = $("tl-box");
  const chart = $("timeline");
  const t = state.timeline;
  const W = Math.max(200, box.clientWidth);
  const H = 96;
  const top = 6;
  const bottom = 18;
  chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
  chart.setAttribute("width", String(W));
  chart.setAttribute("height", String(H));
  if (!t || t.from === null || t.to === null || !t.buckets.length) {
    chart.replaceChildren(svg("text", { x: W / 2, y: H / 2, class: "tl-none", "text-anchor": "middle" }, "No events in this range"));
    $("tl-title").textContent = widthLabel(t ? t.bucket_ms : 60e3);
    return;
  }
  const width = t.bucket_ms;
  // At least MIN_BARS slots, earlier ones added on the left: a burst within one minute is a bar, not a wall.
  const n = Math.max(MIN_BARS, Math.ceil((t.to + 1 - t.from) / width));
  const from = t.from + Math.ceil((t.to + 1 - t.from) / width) * width - n * width;
  const counts = new Map(t.buckets.map(([start, c]) => [start, c]));
  let max = 1;
  for (const c of counts.values()) max = Math.max(max, Object.values(c).reduce((a, b) => a + b, 0));
  const slot = W / n;
  const gap = slot > 4 ? 1 : 0;
  const barW = Math.max(1, Math.min(slot - gap, MAX_BAR_PX));
  const plot = H - top - bottom;
  const nodes = [svg("line", { x1: 0, x2: W, y1: H - bottom + 0.5, y2: H - bottom + 0.5, class: "tl-axis" })];
  for (let i = 0; i < n; i++) {
    const start = from + i * width;
    const c = counts.get(start);
    if (!c) continue;
    const total = Object.values(c).reduce((a, b) => a + b, 0);
    const x = i * slot + (slot - gap - barW) / 2;
    const g = svg("g", { class: "tl-bar", "data-from": start, "data-to": start + width - 1, "data-count": total, tabindex: 0 });
    const parts = [];
    g.append(svg("rect", { x: i * slot, y: top, width: Math.max(1, slot - gap), height: plot, class: "tl-hit" }));
    let y = H - bottom;
    for (const level of [...LEVELS, ""]) {
      const k = c[level];
      if (!k) continue;
      const h = Math.max(1, (k / max) * plot);
      y -= h;
      g.append(svg("rect", { x, y, width: barW, height: h, class: `tl-${level || "none"}` }));
      parts.push(`${k} ${level || "without level"}`);
    }
    g.append(svg("title", {}, `${formatTime(start).slice(0, 16)} – ${formatTime(start + width).slice(11, 16)}: ${parts.reverse().join(", ")}. Click to show them.`));
    nodes.push(g);
  }
  const ticks = Math.min(n, Math.max(2, Math.floor(W / 110)));
  for (let k = 0; k < ticks; k++) {
    const i = Math.round((k * (n - 1)) / Math.max(1, ticks - 1));
    const x = i * slot + slot / 2;
    const anchor = k === 0 ? "start" : k === ticks - 1 ? "end" : "middle";
    nodes.push(svg("text", { x: k === 0 ? 0 : k === ticks - 1 ? W : x, y: H - 4, class: "tl-tick", "text-anchor": anchor },
      barLabel(from + i * width, width)));
  }
  nodes.push(svg("text", { x: 2, y: top + 9, class: "tl-tick" }, `${max}`));
  chart.replaceChildren(...nodes);
  $("tl-title").textContent = widthLabel(width);
}

// Clicking a bar shows its events: the range becomes that bar's minutes.
function onTimelineClick(ev) {
  const bar = ev.target.closest?.("g.tl-bar");
  if (!bar) return;
  $("range").value = "custom";
  showCustom();
  $("from").value = toLocalInput(Number(bar.dataset.from));
  $("to").value = toLocalInput(Number(bar.dataset.to));
  changed();
}

// --- one event's detail: every field and the raw JSON -------------------------------------------------------

const KNOWN = ["content", "event_level", "event_state", "event_type", "sub_event_type", "event_user", "group_id",
  "resource_id", "resource_name", "dimensions"];

function field(dl, label, value) {
  const v = value instanceof Node ? value : safe(value === undefined || value === "" ? "—" : String(value));
  dl.append(el("dt", {}, label), el("dd", {}, v));
}

function renderDetail(e) {
  const d = e.detail || {};
  $("detail-title").replaceChildren(safe(e.event_name), " ", levelBadge(d.event_level));
  const dl = el("dl", { class: "fields" });
  field(dl, "Time", el("span", {}, formatTime(e.time), el("span", { class: "muted" }, `  ${new Date(e.time).toISOString()} · ${e.time}`)));
  field(dl, "Event ID", e.event_id);
  field(dl, "Event name", e.event_name);
  field(dl, "Source", e.event_source);
  field(dl, "Level", d.event_level);
  field(dl, "State", d.event_state ? stateBadge(d.event_state) : "");
  field(dl, "Type", d.event_type);
  field(dl, "Sub-type", d.sub_event_type);
  field(dl, "User", d.event_user);
  field(dl, "Group", d.group_id);
  field(dl, "Resource name", d.resource_name);
  field(dl, "Resource ID", d.resource_id);
  const dims = Array.isArray(d.dimensions) ? d.dimensions : [];
  field(dl, "Dimensions", dims.length
    ? el("table", { class: "dims" }, ...dims.map((x) => el("tr", {}, el("th", {}, safe(x?.name)), el("td", {}, safe(x?.value)))))
    : "none");
  for (const [k, v] of Object.entries(d)) if (!KNOWN.includes(k)) field(dl, k, typeof v === "string" ? v : JSON.stringify(v));
  $("detail-body").replaceChildren(
    dl,
    el("h3", {}, "Content"),
    el("pre", { class: "content full" }, safe(d.content || "")),
    el("h3", {}, "Raw JSON"),
    el("pre", { class: "content raw" }, rawJSON(e)),
  );
}

async function openDetail(eventId) {
  state.selected = eventId;
  saveParams();
  for (const tr of $("events").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.eventId === eventId);
  const known = state.rows.find((e) => e.event_id === eventId);
  $("detail").hidden = false;
  try {
    if (known) renderDetail(known);
    else {
      $("detail-body").replaceChildren(el("p", { class: "muted" }, "Loading…"));
      const q = new URLSearchParams({ project: $("project").value, id: eventId });
      renderDetail((await getJSON(`/_console/api/event?${q}`)).event);
    }
  } catch (err) {
    $("detail-title").textContent = "Event";
    $("detail-body").replaceChildren(el("p", { class: "error" }, `Cannot read this event: ${err.message}`));
  }
  $("detail-close").focus();
}

function closeDetail() {
  state.selected = null;
  $("detail").hidden = true;
  saveParams();
  for (const tr of $("events").tBodies[0].querySelectorAll("tr.selected")) tr.classList.remove("selected");
}

function onRowClick(ev) {
  if (ev.target.closest("summary, details[open] .more, button, input, select")) return;
  const tr = ev.target.closest("tr.event");
  if (!tr) return;
  if (ev.target.closest("a.open") && (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0)) return; // a new tab
  if (getSelection()?.toString() && !ev.target.closest("a.open")) return; // a reader selecting text to copy
  ev.preventDefault();
  openDetail(tr.dataset.eventId);
}

// --- refresh --------------------------------------------------------------------------------------------------

function showError(err) {
  $("status").textContent = `Cannot read events: ${err.message}`;
  $("status").classList.add("error");
}

async function refresh(reset = false) {
  if (busy) { again = again || reset; return; }
  busy = true;
  try {
    await loadProjects();
    await loadEvents(reset);
    await loadTimeline();
    $("status").classList.remove("error");
    $("updated").textContent = `updated ${formatTime(Date.now()).slice(11, 19)}`;
  } catch (err) {
    showError(err);
  } finally {
    busy = false;
  }
  if (again !== null) {
    const r = again;
    again = null;
    refresh(r);
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

// A filter changed: the list starts again from the newest event.
function changed() {
  saveParams();
  refresh(true);
}

function init() {
  const p = params();
  $("level").value = p.level;
  $("range").value = p.range in RANGES || p.range === "custom" ? p.range : "all";
  $("from").value = p.from;
  $("to").value = p.to;
  $("q").value = p.q;
  $("auto").checked = p.auto;
  $("expand").checked = p.expand;
  if (p.name) fillSelect($("name"), [], p.name, "All names");
  $("hint").textContent = `CES_ENDPOINT=${location.origin} CES_PROJECT_ID=demo ces-logging send --name hello --content hi`;
  showCustom();
  $("project").addEventListener("change", () => { $("name").value = ""; closeDetail(); changed(); });
  for (const id of ["name", "level", "from", "to"]) $(id).addEventListener("change", changed);
  $("range").addEventListener("change", () => { showCustom(); changed(); });
  $("q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(changed, 300); });
  $("q").addEventListener("keydown", (ev) => { if (ev.key === "Enter") { clearTimeout(typing); changed(); } });
  $("auto").addEventListener("change", () => { saveParams(); schedule(); });
  $("expand").addEventListener("change", () => {
    saveParams();
    for (const d of document.querySelectorAll("tr.event details")) d.open = $("expand").checked;
  });
  $("refresh").addEventListener("click", () => refresh());
  $("older").addEventListener("click", loadOlder);
  $("events").addEventListener("click", onRowClick);
  $("timeline").addEventListener("click", onTimelineClick);
  $("timeline").addEventListener("keydown", (ev) => { if (ev.key === "Enter") onTimelineClick(ev); });
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !$("detail").hidden) closeDetail(); });
  new ResizeObserver(() => drawTimeline()).observe($("tl-box"));
  refresh().then(() => { if (p.event && $("project").value) openDetail(p.event); });
  schedule();
}

document.addEventListener("DOMContentLoaded", init);
