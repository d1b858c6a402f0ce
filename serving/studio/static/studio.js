// The cohort studio page. Live: reads /v1/studio and acts through the API (keys kept in this tab's
// sessionStorage only). Static (`seqcohort report`): the same page drawn from window.SEQCOHORT_DATA.
"use strict";

const STATIC = typeof window.SEQCOHORT_DATA === "object" && window.SEQCOHORT_DATA !== null;
const KEY = "seqcohort.key", ADMIN_KEY = "seqcohort.adminKey";
const state = { data: null, selected: null, colours: {} };
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en");
const pct = (x, d = 1) => (x == null || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(d)}%`);
const HOURS = Array.from({ length: 24 }, (_, i) => String(i));
const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

function showError(msg) { const b = $("error"); b.textContent = msg || ""; b.hidden = !msg; }

// ---------------------------------------------------------------- API with keys asked for on 401/403
function askKey(admin, message) {
  return new Promise((resolve) => {
    const d = $("key-dialog");
    $("key-title").textContent = admin ? "Admin key needed" : "API key needed";
    $("key-message").textContent = message || "";
    $("key-input").value = "";
    d.onclose = () => resolve(d.returnValue === "ok" ? $("key-input").value.trim() : null);
    d.returnValue = "";
    d.showModal();
  });
}

async function api(path, opts = {}, admin = false) {
  for (let attempt = 0; attempt < 4; attempt++) {
    const key = sessionStorage.getItem(admin ? ADMIN_KEY : KEY) || (admin ? null : sessionStorage.getItem(ADMIN_KEY));
    const headers = Object.assign({}, opts.headers || {}, key ? { "X-API-Key": key } : {});
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status !== 401 && r.status !== 403) {
      if (!r.ok) throw new Error(await detail(r));
      return r;
    }
    const k = await askKey(admin, await detail(r));
    if (!k) throw new Error(`refused: ${r.status === 401 ? "a key is required" : "the key was not accepted"}`);
    sessionStorage.setItem(admin ? ADMIN_KEY : KEY, k);
  }
  throw new Error("refused: the key was not accepted");
}

async function detail(r) {
  try {
    const d = await r.json();
    if (typeof d.detail === "string") return d.detail;
    if (Array.isArray(d.detail)) return d.detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
    return JSON.stringify(d);
  } catch (_) { return `${r.status} ${r.statusText}`; }
}

function download(blob, filename) {
  const a = h("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 30000);
}

// ---------------------------------------------------------------- cohort list
function cohortButton(c) {
  const rate = c.expected_goal_rate != null ? h("span", {}, "expected goal rate ", h("b", {}, pct(c.expected_goal_rate))) : null;
  let change = null;
  if (state.data.parent && c.size_change != null && c.size_change !== 0) {
    change = h("span", { class: c.size_change > 0 ? "up" : "down" },
      `${c.size_change > 0 ? "▲ +" : "▼ −"}${fmt.format(Math.abs(c.size_change))} since last version`);
  } else if (state.data.parent && c.size_change == null) change = h("span", {}, "new this version");
  return h("button", { type: "button", class: "cohort", "data-cohort": c.id, style: `--swatch:${state.colours[c.id]}`,
    onclick: () => select(c.id) },
  h("span", { class: "name" }, c.name, c.pinned ? h("span", { class: "badge" }, "pinned") : null),
  h("span", { class: "desc" }, c.description),
  c.suggested_action ? h("span", { class: "action" }, "→ ", c.suggested_action) : null,
  h("span", { class: "stats" }, h("span", {}, h("b", {}, fmt.format(c.size)), " users"), h("span", {}, h("b", {}, pct(c.share)), " of all"),
    rate, change));
}

function renderList() {
  const d = state.data, list = $("cohort-list");
  list.replaceChildren();
  if (d.tier_labels) {  // goal-aware: the first choice is among a handful of intent tiers
    d.tier_labels.forEach((label, t) => {
      const cs = d.cohorts.filter((c) => c.tier === t);
      if (!cs.length) return;
      const users = cs.reduce((s, c) => s + c.size, 0);
      const rate = cs.reduce((s, c) => s + c.size * (c.expected_goal_rate || 0), 0) / Math.max(users, 1);
      list.append(h("details", { class: "tier", open: t === 0 },
        h("summary", {}, label, " ", h("span", { class: "muted" }, `· ${cs.length} cohorts · ${fmt.format(users)} users · expected goal rate ${pct(rate)}`)),
        cs.map(cohortButton)));
    });
  } else list.append(...d.cohorts.map(cohortButton));
  $("summary").textContent = `${d.cohorts.length} cohorts · ${fmt.format(d.n_users)} users` +
    (d.goal ? ` · goal: ${d.goal}` : "");
  const m = $("merge");
  m.hidden = !(d.merge_candidates && d.merge_candidates.length);
  if (!m.hidden) {
    m.replaceChildren(h("h3", {}, "Merge candidates"), h("p", { class: "muted small" },
      "These cohorts differ in nothing the profile shows; consider merging them (seqcohort cluster)."),
    h("ul", {}, d.merge_candidates.map((p) => h("li", {}, p.names ? p.names.join(" + ") : JSON.stringify(p)))));
  }
}

// ---------------------------------------------------------------- sizing (goal-aware)
function renderSizing() {
  const d = state.data, box = $("sizing");
  if (!d.sizing || !d.sizing.length) { box.hidden = true; return; }
  box.hidden = false;
  const out = h("p", { id: "sizing-out", class: "small" }), chart = h("div", { id: "sizing-chart", class: "chart" });
  const slider = h("input", { id: "sizing-slider", type: "range", min: 0, max: d.sizing.length - 1, value: 19,
    "aria-label": "share of users targeted" });
  const update = () => {
    const p = d.sizing[Number(slider.value)];
    out.replaceChildren("Propensity ≥ ", h("b", {}, p.threshold.toFixed(3)), " → ", h("b", { id: "sizing-size" }, fmt.format(p.size)),
      ` users (${pct(p.size / d.n_users, 0)}), expected `, h("b", { id: "sizing-expected" }, fmt.format(Math.round(p.expected))),
      ` conversions (rate ${pct(p.rate)})`);
    Charts.render(chart, Charts.sizing(d.sizing, p));
  };
  slider.addEventListener("input", update);
  box.replaceChildren(h("h3", {}, `Audience sizing: ${d.goal || "goal"}`), slider, out, chart);
  update();
}

// ---------------------------------------------------------------- map and detail
async function renderMap() {
  const d = state.data;
  if (!d.map) return;
  $("map-note").textContent = `${fmt.format(d.map.points.x.length)} of ${fmt.format(d.map.n_users)} users; ${d.map.method}. ` +
    "Click a point to open its cohort.";
  await Charts.render($("map"), Charts.map(d.map.points, d.cohorts, state.selected), (datum) => select(datum.cohort_id));
}

function table(rows, title) {
  if (!rows || !rows.length) return null;
  return h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, title), h("th", { class: "num" }, "share"), h("th", { class: "num" }, "× pop."))),
    h("tbody", {}, rows.slice(0, 8).map((s) => h("tr", {}, h("td", {}, s.value), h("td", { class: "num" }, pct(s.share)),
      h("td", { class: "num" }, Number.isFinite(s.lift) ? s.lift.toFixed(1) : "–")))));
}

function timeline(events, contributions) {
  const max = contributions ? Math.max(1e-9, ...contributions.map((c) => Math.abs(c))) : 1;
  return h("ol", { class: "timeline" }, events.map((e, i) => {
    const c = contributions ? contributions[i] : null;
    const style = c == null ? null : `background: rgba(${c >= 0 ? "31,138,76" : "192,57,43"},${(0.08 + 0.6 * Math.abs(c) / max).toFixed(3)})`;
    const what = [e.event, e.category, e.text || e.item].filter(Boolean).join(" · ");
    return h("li", { style, "data-contribution": c == null ? null : c.toFixed(4) },
      h("span", { class: "when" }, String(e.ts).replace("T", " ").slice(0, 16)), h("span", {}, what),
      h("span", { class: "num" }, c != null ? (c >= 0 ? "+" : "") + c.toFixed(3) : e.amount != null ? fmt.format(e.amount) : ""));
  }));
}

async function explainUser(userId, target) {
  target.replaceChildren(h("p", { class: "muted" }, "explaining…"));
  try {
    const r = await (await api("/v1/explain", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: userId }) })).json();
    target.replaceChildren(h("p", { class: "small" }, `${userId} is in `, h("b", {}, r.cohort_name),
      ` (cosine ${r.similarity.toFixed(3)} to its centre). Green events hold the user there; red pull away.`),
    timeline(r.history, r.events.map((e) => e.contribution)));
  } catch (e) { target.replaceChildren(h("p", { class: "down" }, e.message)); }
}

function renderDetail() {
  const d = state.data, c = d.cohorts.find((x) => x.id === state.selected), box = $("detail");
  if (!c) return;
  const p = c.profile;
  const lift = h("div", { id: "chart-lift", class: "chart" }), hours = h("div", { id: "chart-hours", class: "chart" });
  const days = h("div", { id: "chart-days", class: "chart" });
  const actions = STATIC ? null : h("div", { class: "actions" },
    h("button", { type: "button", id: "download-csv", onclick: () => downloadMembers(c) }, "Download members (CSV)"),
    h("button", { type: "button", class: "ghost", id: "rename", onclick: () => rename(c) }, "Rename"),
    h("button", { type: "button", class: "ghost", id: "pin", onclick: () => pin(c, !c.pinned) }, c.pinned ? "Unpin name" : "Pin name"));
  const exemplars = (p.exemplars || []).map((x) => {
    const out = h("div");
    return h("div", { class: "exemplar" }, h("p", { class: "small" }, h("b", {}, x.user_id), ` · ${x.n_events} events`,
      STATIC ? null : h("button", { type: "button", class: "ghost", style: "margin-left:.5rem;padding:0 .5rem",
        onclick: () => explainUser(x.user_id, out) }, "why here?")),
    out, timeline(x.events.slice(-12), null));
  });
  box.replaceChildren(...[h("h2", { id: "detail-name" }, c.name, c.pinned ? h("span", { class: "badge" }, "pinned") : null),
    h("p", {}, c.description), c.suggested_action ? h("p", { class: "small" }, "Suggested action: ", h("b", {}, c.suggested_action)) : null,
    h("p", { class: "stats" }, h("span", {}, h("b", {}, fmt.format(c.size)), " users"), h("span", {}, h("b", {}, pct(c.share)), " of all"),
      c.expected_goal_rate != null ? h("span", {}, "expected goal rate ", h("b", {}, pct(c.expected_goal_rate))) : null,
      h("span", {}, "last seen ", h("b", {}, `${Math.round(p.recency_days)} d`), " ago (median)")),
    actions, h("h3", {}, "Profile against the population"), lift,
    h("div", { class: "grid2" }, h("div", {}, h("h3", {}, "Time of day (UTC)"), hours), h("div", {}, h("h3", {}, "Weekday"), days)),
    h("div", { class: "grid2" }, table(p.top_categories, "top categories"), table(p.top_items, "top items")),
    exemplars.length ? h("h3", {}, "Exemplar users (latest events)") : null, ...exemplars].filter((x) => x != null));
  Charts.render(lift, Charts.lift(p));
  Charts.render(hours, Charts.hist(p.hour_hist, HOURS, "hour"));
  Charts.render(days, Charts.hist(p.weekday_hist, DAYS, "weekday"));
}

function select(id) {
  state.selected = id;
  document.querySelectorAll(".cohort").forEach((b) => b.classList.toggle("selected", Number(b.dataset.cohort) === id));
  const btn = document.querySelector(`.cohort[data-cohort="${id}"]`);
  if (btn && btn.closest("details")) btn.closest("details").open = true;
  renderDetail();
  renderMap();
}

// ---------------------------------------------------------------- actions
async function downloadMembers(c) {
  try {
    const r = await api(`/v1/cohorts/${c.id}/members?format=csv`);
    const name = (r.headers.get("content-disposition") || "").match(/filename="([^"]+)"/);
    download(await r.blob(), name ? name[1] : `cohort-${c.id}.csv`);
  } catch (e) { showError(e.message); }
}

async function override(c, path, body) {
  try {
    await api(`/v1/cohorts/${c.id}/${path}`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body) }, true);
    showError("");
    await load(c.id);
  } catch (e) { showError(e.message); }
}

function rename(c) {
  const d = $("rename-dialog");
  $("rename-name").value = c.name; $("rename-description").value = c.description || "";
  d.onclose = () => {
    if (d.returnValue === "ok") override(c, "rename", { name: $("rename-name").value, description: $("rename-description").value || null });
  };
  d.returnValue = "";
  d.showModal();
}

function pin(c, pinned) { override(c, "pin", { pinned }); }

async function lookalikes(ev) {
  ev.preventDefault();
  const out = $("lookalike-out");
  try {
    const text = await $("lookalike-file").files[0].text();
    const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/).filter((l) => l.trim());
    const cells = (l) => l.split(",").map((c) => c.trim().replace(/^"|"$/g, ""));
    const col = Math.max(0, cells(lines[0] || "").indexOf("user_id"));  // the user_id column, else the first
    const ids = lines.map((l) => cells(l)[col]).filter((x) => x && x !== "user_id");
    const r = await (await api("/v1/lookalike", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ seed_user_ids: ids, size: Number($("lookalike-size").value) }) })).json();
    const csv = "user_id,score\n" + r.user_ids.map((u, i) => `${u},${r.scores[i]}`).join("\n") + "\n";
    download(new Blob([csv], { type: "text/csv" }), "lookalikes.csv");
    out.textContent = `${fmt.format(r.user_ids.length)} lookalikes of ${r.n_seeds} known seeds downloaded` +
      (r.unknown_seed_ids.length ? `; ${r.unknown_seed_ids.length} unknown seed ids ignored` : "") + ".";
  } catch (e) { out.textContent = e.message; }
}

// ---------------------------------------------------------------- start
async function load(keep) {
  state.data = STATIC ? window.SEQCOHORT_DATA : await (await api("/v1/studio")).json();
  const d = state.data;
  state.colours = Object.fromEntries(d.cohorts.map((c, i) => [c.id, Charts.colour(i)]));
  $("version").textContent = `version ${d.version} · as of ${String(d.as_of).slice(0, 10)}` + (STATIC ? " · report" : "");
  renderList();
  renderSizing();
  const first = keep != null && d.cohorts.some((c) => c.id === keep) ? keep : d.cohorts[0] && d.cohorts[0].id;
  if (first != null) select(first); else renderMap();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  if (STATIC) document.body.classList.add("static");
  $("key-button").addEventListener("click", async () => {
    const k = await askKey(false, "Use a read key, or the admin key to rename and pin.");
    if (k) { sessionStorage.setItem(KEY, k); load(state.selected).catch((e) => showError(e.message)); }
  });
  $("explain-form").addEventListener("submit", (e) => { e.preventDefault(); explainUser($("explain-user").value.trim(), $("explain-out")); });
  $("lookalike-form").addEventListener("submit", lookalikes);
  let t = null;
  window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(() => state.data && select(state.selected), 200); });
  load().catch((e) => showError(`Could not load the cohorts: ${e.message}`));
});
