// Safety Guard web console: plain ES modules, no build step, nothing fetched from outside.
// Uses only the HTTP API of DESIGN section 7 (see docs/api.md) and its SSE stream.

import { LANGS, applyStatic, formatDuration, formatTime, has, lang, setLang, t } from "./i18n.js";

const API = "/api/v1";
const KEY = { token: "sg.token", lang: "sg.lang", muted: "sg.muted" };
const ACTORS = new Set(["fire_brigade", "admin", "reader"]); // "reader": not yet known (see detectRole)
const RANK = { open: 0, acknowledged: 1, resolved: 2 };
const PAGE = 1000;
const MAX_UNRESOLVED = 20000;
const SITE_ROWS = 300;
const STATUS_ORDER = ["fire", "exit", "cameras", "offline", "fault", "noncompliant"];
const DETAIL_POLL_MS = 5000; // site detail: how often the devices (and so new snapshots) are re-read
const PROBLEM_ACTORS = new Set(["inspector", "admin"]); // docs/problems.md: who may note, close and reopen
const PROBLEM_ROWS = 500;
const PROBLEM_RANK = { overdue: 0, open: 1, rectified: 2 };
const SEVERITY_RANK = { critical: 0, major: 1, minor: 2 };
const KINDS = ["fire_alarm", "fire_alarm_exit_blocked", "exit_blocked", "camera_offline", "camera_stream_fault",
  "detector_offline", "detector_fault", "agent_offline"];
const TRIAGE_CARDS = 100; // site cards drawn at once (issue 13: 3,000 sites, 1,000 open alerts)
const BULK_PARALLEL = 4; // acknowledgements in flight at once during a bulk acknowledge
const DEFAULT_ZONE = "Asia/Shanghai"; // the gateway's problem_timezone unless the API says otherwise

const state = {
  token: null,
  role: null,
  ownSite: null,
  sites: new Map(), // id -> site
  sitesLoadedAt: 0,
  alerts: new Map(), // id -> alert
  // key -> provisional alert: raised while the database was away, not stored yet (docs/console.md);
  // the stored alert with the same key replaces it.
  provisional: new Map(),
  touched: null, // ids changed by the stream while a list refresh is in flight
  lastEventId: null,
  stream: null,
  retryTimer: null,
  muted: localStorage.getItem(KEY.muted) === "1",
  audio: null,
  view: "alerts",
  siteRowsShown: SITE_ROWS,
  detail: null, // {site, devices, alerts: Map}
  detailTimer: null,
  devicesSoon: null,
  snapshots: new Map(), // exit device id -> {want, fetchedFor, loading, failed, url, at, figure, img, caption}
  renderQueued: false,
  problems: null, // the inspector view's problem list as last fetched
  problemsSeq: 0, // the latest problem-list request of the inspector view (older answers are dropped)
  notified: new Map(), // alert id -> {open, items, error}: "who was told when" on the site detail
  selected: new Set(), // triage: alert ids chosen for a bulk acknowledge
  cardsShown: TRIAGE_CARDS,
  bulkRunning: false,
  zone: DEFAULT_ZONE,
  sample: null, // the last spot-check sample drawn in the inspector view
};

// ------------------------------------------------------------------ helpers

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "testid") el.dataset.testid = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, detail, error = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    // docs/api.md: refusals carry {"error": {"code", "message", ...params}} next to "detail".
    this.code = error && typeof error.code === "string" ? error.code : null;
    this.params = error ?? {};
  }
}

// What to show for a failed request, in the console's language: the API's code when it gave one
// (apierr.<code>), else a text for the status; the API's own (English) words only as a tooltip.
function errorText(err) {
  if (!(err instanceof ApiError)) return t("error.generic", { detail: err?.message ?? String(err) });
  if (err.code && has(`apierr.${err.code}`)) return t(`apierr.${err.code}`, err.params);
  const byStatus = { 400: "apierr.bad_request", 403: "error.forbidden", 404: "apierr.not_found", 409: "apierr.conflict",
    422: "apierr.bad_request" }[err.status];
  return byStatus ? t(byStatus) : t("error.generic", { detail: err.detail ?? err.message });
}

function showError(el, err) {
  el.textContent = errorText(err);
  el.title = err instanceof ApiError ? (err.detail ?? "") : "";
  el.dataset.code = err instanceof ApiError ? (err.code ?? "") : "";
  el.hidden = false;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : JSON.stringify(data?.detail ?? response.statusText);
    throw new ApiError(response.status, detail, data && typeof data.error === "object" ? data.error : null);
  }
  return data;
}

async function statusOf(path, method = "GET") {
  try {
    await api(path, { method });
    return 200;
  } catch (err) {
    if (err instanceof ApiError) return err.status;
    throw err;
  }
}

// Every page of a list route (`{"items", "next_cursor"}`), up to `max` items.
async function allPages(path, params = {}, max = Infinity) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ ...params, limit: String(Math.min(PAGE, max - items.length)) });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`${path}?${query}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

function siteLabel(id) {
  const site = state.sites.get(id);
  return site && site.name ? `${site.name} (${id})` : id;
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    renderAll();
  });
}

// ------------------------------------------------------------------ sign in and role

async function detectRole() {
  // A `GET /api/v1/me` is used when the API has one; until then the role is inferred from what
  // the token may do, with requests that change nothing.
  try {
    const me = await api(`${API}/me`);
    if (me && me.role) return { role: me.role, site: me.site ?? null };
  } catch {
    /* no such route yet */
  }
  // An institution token is refused (403) any other site before the site is even looked up.
  if ((await statusOf(`${API}/sites/zz--role-probe`)) === 403) {
    const page = await api(`${API}/sites?limit=1`);
    return { role: "institution", site: page.items[0]?.id ?? null };
  }
  if ((await statusOf(`${API}/dead-letters?limit=1`)) === 200) return { role: "admin", site: null };
  // Acknowledging a resolved alert is refused with 403 for read-only roles and 409 (nothing
  // changes) for those who may act.
  const resolved = await api(`${API}/alerts?state=resolved&limit=1`);
  if (resolved.items.length) {
    const code = await statusOf(`${API}/alerts/${resolved.items[0].id}/ack`, "POST");
    if (code === 403) return { role: "inspector", site: null };
    if (code === 409) return { role: "fire_brigade", site: null };
  }
  return { role: "reader", site: null }; // decided by the first acknowledge (403 makes it inspector)
}

async function signIn(token, { fromStorage = false } = {}) {
  const error = $("login-error");
  error.hidden = true;
  state.token = token;
  try {
    await api(`${API}/sites?limit=1`);
    const who = await detectRole();
    state.role = who.role;
    state.ownSite = who.site;
  } catch (err) {
    state.token = null;
    if (err instanceof ApiError && err.status === 401) {
      if (fromStorage) localStorage.removeItem(KEY.token);
      error.textContent = t("login.bad");
    } else {
      error.textContent = t("login.failed", { error: err.message });
      $("token-input").value = token;
      // The API may be restarting: a remembered token tries again by itself.
      if (fromStorage) setTimeout(() => { if (!state.token) signIn(token, { fromStorage: true }); }, 3000);
    }
    error.hidden = false;
    showLogin();
    return;
  }
  localStorage.setItem(KEY.token, token);
  showConsole();
  connectStream();
  loadSites();
}

function signOut() {
  closeStream();
  stopDetailPoll();
  clearSnapshots();
  localStorage.removeItem(KEY.token);
  Object.assign(state, {
    token: null, role: null, ownSite: null, sites: new Map(), sitesLoadedAt: 0, alerts: new Map(), provisional: new Map(),
    lastEventId: null, detail: null, problems: null, selected: new Set(), sample: null,
  });
  state.problemsSeq += 1;
  $("problems-table").tBodies[0].replaceChildren();
  $("problems-count").textContent = "";
  $("token-input").value = "";
  $("alert-feed").replaceChildren();
  showLogin();
  updateTitle();
}

function showLogin() {
  $("login-panel").hidden = false;
  $("console").hidden = true;
  for (const id of ["role-badge", "conn-badge", "mute-toggle", "logout-button"]) $(id).hidden = true;
  $("token-input").focus();
}

function showConsole() {
  $("login-panel").hidden = true;
  $("console").hidden = false;
  for (const id of ["role-badge", "conn-badge", "mute-toggle", "logout-button"]) $(id).hidden = false;
  renderChrome();
  route();
}

function mayAct() {
  return ACTORS.has(state.role);
}

// ------------------------------------------------------------------ live feed (SSE)

function setConn(value) {
  const badge = $("conn-badge");
  badge.dataset.state = value;
  badge.textContent = t(`conn.${value}`);
}

function closeStream() {
  clearTimeout(state.retryTimer);
  if (state.stream) state.stream.close();
  state.stream = null;
}

function connectStream() {
  closeStream();
  let url = `${API}/alerts/stream?access_token=${encodeURIComponent(state.token)}`;
  // A new EventSource does not carry the old one's Last-Event-ID: pass it as since_id.
  if (state.lastEventId !== null) url += `&since_id=${state.lastEventId}`;
  const stream = new EventSource(url);
  state.stream = stream;
  setConn(state.lastEventId === null ? "connecting" : "reconnecting");
  stream.onopen = () => {
    setConn("live");
    refreshAlerts(); // covers whatever changed before the stream was (re)established
  };
  stream.addEventListener("alert", (event) => {
    const alert = JSON.parse(event.data);
    if (alert.provisional) { // no event id: it is not a stored change (Last-Event-ID stays)
      mergeProvisional(alert);
      return;
    }
    if (event.lastEventId) state.lastEventId = Number(event.lastEventId);
    mergeAlert(alert, { live: true });
  });
  stream.onerror = () => {
    if (state.stream !== stream) return;
    setConn("reconnecting");
    // The browser retries network errors by itself (sending Last-Event-ID); after an HTTP error
    // the EventSource is closed for good, so we open a new one.
    if (stream.readyState === EventSource.CLOSED) {
      state.retryTimer = setTimeout(() => {
        if (state.token && state.stream === stream) connectStream();
      }, 3000);
    }
  };
}

function isNewer(a, b) {
  const ta = Date.parse(a.updated_at);
  const tb = Date.parse(b.updated_at);
  if (ta !== tb) return ta > tb;
  return RANK[a.state] >= RANK[b.state];
}

// At most one unresolved alert per (site, device, kind): the key a provisional alert shares with the
// stored one that replaces it (older stored changes carry no "key": made from its parts).
function alertKey(alert) {
  return alert.key ?? `${alert.site}/${alert.device ?? ""}/${alert.kind}`;
}

function storedUnresolved(key) {
  for (const alert of state.alerts.values()) if (alert.state !== "resolved" && alertKey(alert) === key) return alert;
  return null;
}

function mergeProvisional(alert) {
  const key = alertKey(alert);
  if (storedUnresolved(key)) return; // the stored alert is on screen already: it stands for it
  const known = state.provisional.has(key);
  state.provisional.set(key, alert);
  if (!known) beep();
  scheduleRender();
}

function mergeAlert(alert, { live = false } = {}) {
  const known = state.alerts.get(alert.id);
  if (known && !isNewer(alert, known)) return;
  const { history: _history, change_id: _change, ...plain } = alert;
  const replaced = state.provisional.delete(alertKey(plain));
  state.alerts.set(alert.id, plain);
  if (state.touched) state.touched.add(alert.id);
  if (state.detail && state.detail.site.id === alert.site) {
    state.detail.alerts.set(alert.id, plain);
    // An exit that becomes blocked sends a snapshot: look for it without waiting for the next poll.
    if (live && (plain.kind === "exit_blocked" || plain.kind === "fire_alarm_exit_blocked")) refreshDevicesSoon();
  }
  if (live && plain.severity === "critical" && plain.state === "open" && !replaced
      && (!known || known.state !== "open" || plain.count > known.count)) {
    beep();
  }
  scheduleRender();
}

async function refreshAlerts() {
  const touched = new Set();
  state.touched = touched;
  try {
    const [open, acknowledged, resolved] = await Promise.all([
      allPages(`${API}/alerts`, { state: "open" }, MAX_UNRESOLVED),
      allPages(`${API}/alerts`, { state: "acknowledged" }, MAX_UNRESOLVED),
      allPages(`${API}/alerts`, { state: "resolved" }, 200),
    ]);
    const fresh = new Map();
    for (const alert of [...resolved, ...acknowledged, ...open]) {
      const seen = fresh.get(alert.id);
      if (!seen || isNewer(alert, seen)) fresh.set(alert.id, alert);
    }
    for (const id of touched) {
      const live = state.alerts.get(id);
      const listed = fresh.get(id);
      if (live && (!listed || isNewer(live, listed))) fresh.set(id, live);
    }
    state.alerts = fresh;
    for (const key of [...state.provisional.keys()]) if (storedUnresolved(key)) state.provisional.delete(key);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
    return; // the stream's next (re)open refreshes again
  } finally {
    if (state.touched === touched) state.touched = null;
  }
  scheduleRender();
}

// ------------------------------------------------------------------ sound and title

function audioContext() {
  if (!state.audio) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    state.audio = new Ctx();
  }
  if (state.audio.state === "suspended") state.audio.resume().catch(() => {});
  return state.audio;
}

function beep() {
  if (state.muted) return;
  const ctx = audioContext();
  if (!ctx || ctx.state !== "running") return;
  const start = ctx.currentTime;
  for (let i = 0; i < 3; i += 1) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    osc.frequency.value = i % 2 ? 660 : 880;
    gain.gain.setValueAtTime(0.08, start + i * 0.25);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.25 + 0.2);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start + i * 0.25);
    osc.stop(start + i * 0.25 + 0.21);
  }
}

function openCritical() {
  let n = 0;
  for (const alert of state.alerts.values()) if (alert.severity === "critical" && alert.state === "open") n += 1;
  return n + state.provisional.size;
}

function updateTitle() {
  const n = state.token ? openCritical() : 0;
  document.title = n > 0 ? `(${n}) ${t("app.title")}` : t("app.title");
  const banner = $("critical-banner");
  banner.hidden = n === 0;
  banner.textContent = n > 0 ? t("feed.critical", { n }) : "";
}

// ------------------------------------------------------------------ rendering

function renderChrome() {
  applyStatic();
  const role = $("role-badge");
  role.textContent = state.role ? t(`role.${state.role}`) + (state.ownSite ? ` · ${state.ownSite}` : "") : "";
  role.dataset.role = state.role ?? "";
  const mute = $("mute-toggle");
  mute.textContent = t(state.muted ? "sound.off" : "sound.on");
  mute.dataset.muted = state.muted ? "true" : "false";
  const conn = $("conn-badge");
  if (conn.dataset.state && conn.dataset.state !== "idle") conn.textContent = t(`conn.${conn.dataset.state}`);
}

function renderAll() {
  updateTitle();
  if (!state.token) return;
  if (state.view === "alerts") renderFeed();
  else if (state.view === "sites") renderSites();
  else if (state.view === "site") renderDetail();
  else if (state.view === "inspector") renderInspectorHeader();
}

function kindText(kind) {
  return t(`kind.${kind}`);
}

function badge(cls, text, extra = {}) {
  return h("span", { class: `badge ${cls}`, ...extra }, text);
}

function alertRow(alert) {
  const actions = [];
  const provisional = alert.provisional === true; // no id yet: nothing to acknowledge until it is stored
  if (mayAct() && alert.state !== "resolved" && !provisional) {
    if (alert.state === "open") {
      actions.push(h("button", { type: "button", testid: "alert-ack", onclick: () => act(alert.id, "ack") }, t("alert.ack")));
    }
    actions.push(h("button", { type: "button", class: "secondary", testid: "alert-resolve",
      onclick: () => act(alert.id, "resolve") }, t("alert.resolve")));
  }
  const who = [];
  if (alert.acknowledged_at) {
    who.push(h("span", { testid: "alert-acked-by" }, `${t("state.acknowledged")}: `,
      t("alert.by", { who: alert.acknowledged_by ?? "—", at: formatTime(alert.acknowledged_at) })));
  }
  if (alert.resolved_at) {
    who.push(h("span", {}, `${t("state.resolved")}: `,
      t("alert.by", { who: alert.resolved_by ?? "—", at: formatTime(alert.resolved_at) })));
  }
  const reading = readingText(alert);
  return h("li", {
    class: `alert sev-${alert.severity} st-${alert.state}${provisional ? " provisional" : ""}`,
    testid: "alert-row",
    dataset: { alertId: alert.id ?? "", state: alert.state, severity: alert.severity, kind: alert.kind, site: alert.site,
      key: alertKey(alert), provisional: provisional ? "true" : "false" },
  },
  h("div", { class: "alert-main" },
    selectBox(alert),
    badge(`sev sev-${alert.severity}`, t(`severity.${alert.severity}`)),
    h("strong", { class: "kind" }, kindText(alert.kind)),
    provisional ? badge("provisional", t("alert.provisional"), { testid: "alert-provisional",
      title: t("alert.provisional-hint") }) : null,
    alert.detail && alert.detail.escalated ? badge("escalated", t("alert.escalated")) : null,
    alert.count > 1 ? badge("count", t("alert.count", { n: alert.count })) : null,
    badge(`state st-${alert.state}`, t(`state.${alert.state}`), { testid: "alert-state" })),
  h("div", { class: "alert-where" },
    h("span", { class: "where-site" }, // hidden inside a site card, which names the site once
      h("a", { href: `#/site/${encodeURIComponent(alert.site)}`, testid: "alert-site" }, siteLabel(alert.site)), " · "),
    alert.device ?? t("alert.site-level")),
  reading ? h("div", { class: "alert-reading", testid: "alert-reading" }, reading) : null,
  h("div", { class: "alert-when muted" },
    `${t("alert.opened")} ${formatTime(alert.opened_at)} · ${t("alert.updated")} ${formatTime(alert.updated_at)}`),
  who.length ? h("div", { class: "alert-who muted" }, ...who.flatMap((w, i) => (i ? [" · ", w] : [w]))) : null,
  actions.length ? h("div", { class: "alert-actions" }, ...actions) : null,
  h("p", { class: "error", testid: "alert-error", hidden: true }));
}

function feedOrder(a, b) {
  const ca = a.severity === "critical" && a.state === "open" ? 0 : 1;
  const cb = b.severity === "critical" && b.state === "open" ? 0 : 1;
  if (ca !== cb) return ca - cb;
  return Date.parse(b.updated_at) - Date.parse(a.updated_at) || (b.id ?? 0) - (a.id ?? 0);
}

function renderFeed() {
  renderTriage(); // grouped by site: see "triage" below
}

async function act(id, action) {
  const error = $("action-error");
  error.hidden = true;
  const row = document.querySelector(`[data-testid="alert-row"][data-alert-id="${id}"]`);
  const known = state.alerts.get(id);
  if (action === "resolve" && known && !window.confirm(t("confirm.resolve", {
    kind: kindText(known.kind), site: siteLabel(known.site), device: known.device ?? t("alert.site-level"),
  }))) return;
  for (const button of row?.querySelectorAll("button") ?? []) button.disabled = true;
  try {
    const alert = await api(`${API}/alerts/${id}/${action}`, { method: "POST", body: {} });
    mergeAlert(alert);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) {
      state.role = state.role === "reader" ? "inspector" : state.role;
      renderChrome();
    }
    showError(error, err);
    const inline = row?.querySelector('[data-testid="alert-error"]');
    if (inline) showError(inline, err);
    for (const button of row?.querySelectorAll("button") ?? []) button.disabled = false;
    if (state.view === "alerts" && err instanceof ApiError && err.status === 403) scheduleRender();
  }
}

// ------------------------------------------------------------------ triage (issue 13): alerts grouped by site

function triageOrder(a, b) {
  const sa = SEVERITY_RANK[a.severity] ?? 3;
  const sb = SEVERITY_RANK[b.severity] ?? 3;
  if (sa !== sb) return sa - sb;
  if (RANK[a.state] !== RANK[b.state]) return RANK[a.state] - RANK[b.state];
  return Date.parse(b.updated_at) - Date.parse(a.updated_at) || b.id - a.id;
}

function triageFilter() {
  return {
    state: $("feed-filter").value, city: $("triage-city").value, county: $("triage-county").value,
    kind: $("triage-kind").value, severity: $("triage-severity").value,
    q: $("triage-search").value.trim().toLowerCase(),
  };
}

function siteMatches(siteId, f) {
  if (!f.city && !f.county && !f.q) return true;
  const site = state.sites.get(siteId);
  if (f.city && site?.city !== f.city) return false;
  if (f.county && site?.county !== f.county) return false;
  if (f.q && !siteId.toLowerCase().includes(f.q) && !(site?.name ?? "").toLowerCase().includes(f.q)) return false;
  return true;
}

// [[site id, alerts sorted]] of the alerts the filters keep, the site with the worst alert first.
function triageGroups(f) {
  const bySite = new Map();
  // Provisional alerts (raised while the database was away) are triaged with the stored ones.
  for (const alert of [...state.alerts.values(), ...state.provisional.values()]) {
    if (f.state === "active" ? alert.state === "resolved" : alert.state !== f.state) continue;
    if (f.kind && alert.kind !== f.kind) continue;
    if (f.severity && alert.severity !== f.severity) continue;
    if (!siteMatches(alert.site, f)) continue;
    let list = bySite.get(alert.site);
    if (!list) bySite.set(alert.site, (list = []));
    list.push(alert);
  }
  const groups = [...bySite.entries()];
  for (const [, list] of groups) list.sort(triageOrder);
  groups.sort((a, b) => triageOrder(a[1][0], b[1][0]) || (a[0] < b[0] ? -1 : 1));
  return groups;
}

function contactText(site) {
  const who = [site?.contact_name, site?.contact_phone].filter(Boolean).join(" ");
  return `${t("detail.contact")}: ${who || "—"}`;
}

function siteCard(siteId, alerts) {
  const site = state.sites.get(siteId);
  const worst = alerts[0];
  const phone = site?.contact_phone;
  return h("li", {
    class: `site-card sev-${worst.severity}`, testid: "site-card",
    dataset: { site: siteId, severity: worst.severity, alerts: alerts.length },
  },
  h("div", { class: "card-head" },
    h("a", { href: `#/site/${encodeURIComponent(siteId)}`, testid: "card-site", class: "card-name" }, site?.name || siteId),
    h("small", { class: "mono muted" }, siteId),
    h("span", { class: "muted" }, [site?.city, site?.county, categoryText(site?.category)].filter(Boolean).join(" · ")),
    badge("count", t("triage.alerts", { n: alerts.length }), { testid: "card-count" })),
  h("div", { class: "card-info" },
    h("span", { testid: "card-address" }, `${t("detail.address")}: ${site?.address || "—"}`),
    h("span", { testid: "card-contact" }, `${t("detail.contact")}: `, site?.contact_name || (phone ? "" : "—"), " ",
      phone ? h("a", { href: `tel:${phone.replace(/[^0-9+]/g, "")}` }, phone) : null)),
  h("ol", { class: "card-alerts" }, ...alerts.map(alertRow)));
}

function renderTriage() {
  const f = triageFilter();
  const groups = triageGroups(f);
  const shown = groups.slice(0, state.cardsShown);
  $("alert-feed").replaceChildren(...shown.map(([site, alerts]) => siteCard(site, alerts)));
  const n = groups.reduce((sum, [, alerts]) => sum + alerts.length, 0);
  $("feed-empty").hidden = n > 0;
  $("feed-count").textContent = t("triage.count", { n, sites: groups.length });
  const more = $("feed-more");
  const rest = groups.length - shown.length;
  more.hidden = rest <= 0;
  more.textContent = t("triage.more", { n: Math.min(rest, TRIAGE_CARDS) });
  renderCountyBoard(f);
  renderBulkBar();
}

// A tile per county with unresolved alerts: its open critical and major counts; a click filters by it.
function renderCountyBoard(f) {
  const tiles = new Map();
  for (const alert of state.alerts.values()) {
    if (alert.state === "resolved") continue;
    const site = state.sites.get(alert.site);
    const city = site?.city ?? "";
    const county = site?.county ?? "";
    const key = `${city}\u0000${county}`;
    let tile = tiles.get(key);
    if (!tile) tiles.set(key, (tile = { city, county, critical: 0, major: 0, minor: 0, sites: new Set() }));
    tile[alert.severity] = (tile[alert.severity] ?? 0) + 1;
    tile.sites.add(alert.site);
  }
  const collator = new Intl.Collator(lang());
  const ordered = [...tiles.values()].sort((a, b) => b.critical - a.critical || b.major - a.major
    || collator.compare(a.city, b.city) || collator.compare(a.county, b.county));
  $("county-board").replaceChildren(...ordered.map((tile) => {
    const active = f.city === tile.city && f.county === tile.county;
    return h("button", {
      type: "button", class: `county-tile${tile.critical ? " has-critical" : ""}${active ? " active" : ""}`,
      testid: "county-tile", "aria-pressed": String(active),
      dataset: { city: tile.city, county: tile.county, critical: tile.critical, major: tile.major },
      onclick: () => filterByCounty(active ? null : tile),
    },
    h("span", { class: "tile-name" }, tile.county || t("triage.no_county"), h("small", {}, tile.city)),
    h("span", { class: "tile-counts" },
      h("span", { class: "tile-critical", testid: "tile-critical" }, t("triage.tile_critical", { n: tile.critical })),
      h("span", { class: "tile-major", testid: "tile-major" }, t("triage.tile_major", { n: tile.major }))));
  }));
}

function filterByCounty(tile) {
  $("triage-city").value = tile ? tile.city : "";
  fillTriageCounties(tile ? tile.county : "");
  state.cardsShown = TRIAGE_CARDS;
  scheduleRender();
}

function fillTriageFilters() {
  const cities = [...new Set([...state.sites.values()].map((s) => s.city).filter(Boolean))].sort();
  optionList($("triage-city"), cities);
  fillTriageCounties();
  const kinds = [...new Set([...KINDS, ...[...state.alerts.values()].map((a) => a.kind)])];
  const kind = $("triage-kind");
  const previousKind = kind.value;
  kind.replaceChildren(h("option", { value: "" }, t("sites.all")), ...kinds.map((k) => h("option", { value: k }, kindText(k))));
  kind.value = kinds.includes(previousKind) ? previousKind : "";
  const severity = $("triage-severity");
  const previousSeverity = severity.value;
  severity.replaceChildren(h("option", { value: "" }, t("sites.all")),
    ...Object.keys(SEVERITY_RANK).map((v) => h("option", { value: v }, t(`severity.${v}`))));
  severity.value = previousSeverity;
}

function fillTriageCounties(keep) {
  const city = $("triage-city").value;
  const counties = [...new Set([...state.sites.values()]
    .filter((s) => !city || s.city === city).map((s) => s.county).filter(Boolean))].sort();
  optionList($("triage-county"), counties, keep);
}

// ---- bulk acknowledge

function selectBox(alert) {
  if (!mayAct() || alert.state !== "open" || alert.provisional) return null; // provisional: no id to act on yet
  return h("input", {
    type: "checkbox", class: "select", testid: "alert-select", "aria-label": t("bulk.select_one"),
    checked: state.selected.has(alert.id),
    onchange: (e) => {
      if (e.currentTarget.checked) state.selected.add(alert.id);
      else state.selected.delete(alert.id);
      renderBulkBar();
    },
  });
}

function selectedOpen() {
  return [...state.selected].filter((id) => state.alerts.get(id)?.state === "open");
}

function renderBulkBar() {
  const bar = $("bulk-bar");
  bar.hidden = !mayAct();
  if (bar.hidden) return;
  for (const id of [...state.selected]) if (state.alerts.get(id)?.state !== "open") state.selected.delete(id);
  const n = state.selected.size;
  const button = $("bulk-ack");
  button.textContent = t("bulk.ack", { n });
  button.disabled = n === 0 || state.bulkRunning;
  $("select-none").disabled = n === 0;
}

async function bulkAcknowledge() {
  const ids = selectedOpen();
  if (!ids.length || state.bulkRunning) return;
  if (!window.confirm(t("bulk.confirm", { n: ids.length }))) return;
  state.bulkRunning = true;
  const status = $("bulk-status");
  const error = $("action-error");
  error.hidden = true;
  let done = 0;
  const failed = [];
  status.textContent = t("bulk.progress", { done, n: ids.length });
  renderBulkBar();
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try {
        mergeAlert(await api(`${API}/alerts/${id}/ack`, { method: "POST", body: {} }));
        state.selected.delete(id);
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        failed.push(err);
      }
      done += 1;
      status.textContent = t("bulk.progress", { done, n: ids.length });
    }
  };
  await Promise.all(Array.from({ length: Math.min(BULK_PARALLEL, ids.length) }, worker));
  state.bulkRunning = false;
  status.textContent = t("bulk.done", { ok: ids.length - failed.length, failed: failed.length });
  status.dataset.failed = String(failed.length);
  if (failed.length) showError(error, failed[0]);
  scheduleRender();
}

function wireTriage() {
  const again = () => { state.cardsShown = TRIAGE_CARDS; scheduleRender(); };
  $("triage-city").addEventListener("change", () => { fillTriageCounties(""); again(); });
  for (const id of ["triage-county", "triage-kind", "triage-severity"]) $(id).addEventListener("change", again);
  $("triage-search").addEventListener("input", again);
  $("feed-filter").addEventListener("change", again);
  $("feed-more").addEventListener("click", () => { state.cardsShown += TRIAGE_CARDS; scheduleRender(); });
  $("select-shown").addEventListener("click", () => {
    for (const [, alerts] of triageGroups(triageFilter())) {
      for (const alert of alerts) if (alert.state === "open") state.selected.add(alert.id);
    }
    scheduleRender();
  });
  $("select-none").addEventListener("click", () => { state.selected.clear(); scheduleRender(); });
  $("bulk-ack").addEventListener("click", bulkAcknowledge);
}

// ------------------------------------------------------------------ sites overview

async function loadSites(force = false) {
  if (!force && state.sitesLoadedAt && Date.now() - state.sitesLoadedAt < 60_000) return;
  const count = $("sites-count");
  if (!state.sitesLoadedAt) count.textContent = t("sites.loading");
  try {
    const items = await allPages(`${API}/sites`);
    state.sites = new Map(items.map((s) => [s.id, s]));
    state.noncompliant = await noncompliantSites();
    state.sitesLoadedAt = Date.now();
    fillSiteFilters();
    fillInspectorSites();
    fillTriageFilters();
    scheduleRender();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
  }
}

// Sites failing the real-time interface requirement: the leader keeps them as open (or overdue)
// not_compliant problems, so one listing covers thousands of sites without per-site requests.
async function noncompliantSites() {
  try {
    const lists = await Promise.all(["open", "overdue"].map(
      (status) => allPages(`${API}/problems`, { kind: "not_compliant", status })));
    return new Set(lists.flat().map((p) => p.site));
  } catch {
    return new Set();  // an API without the problem list: nothing to show
  }
}

function siteStatuses() {
  const flags = new Map();
  for (const site of state.noncompliant ?? []) flags.set(site, { flags: new Set(["noncompliant"]), open: 0 });
  for (const alert of state.alerts.values()) {
    if (alert.state === "resolved") continue;
    let set = flags.get(alert.site);
    if (!set) flags.set(alert.site, (set = { flags: new Set(), open: 0 }));
    set.open += 1;
    switch (alert.kind) {
      case "fire_alarm": set.flags.add("fire"); break;
      case "fire_alarm_exit_blocked": set.flags.add("fire"); set.flags.add("exit"); break;
      case "exit_blocked": set.flags.add("exit"); break;
      case "camera_offline": case "camera_stream_fault": set.flags.add("cameras"); break;
      case "agent_offline": set.flags.add("offline"); set.agentDown = true; break;
      case "detector_offline": set.flags.add("offline"); break;
      default: set.flags.add("fault");
    }
  }
  return flags;
}

function statusBadges(info) {
  const flags = info ? STATUS_ORDER.filter((f) => info.flags.has(f)) : [];
  if (!flags.length) return [badge("status st-ok", t("status.ok"), { "data-status": "ok" })];
  return flags.map((f) => badge(`status st-${f}`, t(`status.${f}`), { "data-status": f }));
}

function optionList(select, values, keepValue) {
  const previous = keepValue ?? select.value;
  select.replaceChildren(h("option", { value: "" }, t("sites.all")), ...values.map((v) => h("option", { value: v }, v)));
  select.value = values.includes(previous) ? previous : "";
}

function fillSiteFilters() {
  const cities = [...new Set([...state.sites.values()].map((s) => s.city).filter(Boolean))].sort();
  optionList($("city-filter"), cities);
  fillCounties();
  const status = $("status-filter");
  const previous = status.value;
  status.replaceChildren(
    h("option", { value: "" }, t("sites.all")),
    ...[...STATUS_ORDER, "ok"].map((s) => h("option", { value: s }, t(`status.${s}`))),
  );
  status.value = previous;
}

function fillCounties(keep) {
  const city = $("city-filter").value;
  const counties = [...new Set([...state.sites.values()]
    .filter((s) => !city || s.city === city).map((s) => s.county).filter(Boolean))].sort();
  optionList($("county-filter"), counties, keep);
}

function renderSites() {
  const q = $("site-search").value.trim().toLowerCase();
  const city = $("city-filter").value;
  const county = $("county-filter").value;
  const wanted = $("status-filter").value;
  const statuses = siteStatuses();
  const rows = [];
  for (const site of state.sites.values()) {
    if (city && site.city !== city) continue;
    if (county && site.county !== county) continue;
    if (q && !site.id.toLowerCase().includes(q) && !(site.name ?? "").toLowerCase().includes(q)) continue;
    const info = statuses.get(site.id);
    if (wanted === "ok" && info) continue;
    if (wanted && wanted !== "ok" && !(info && info.flags.has(wanted))) continue;
    rows.push(site);
  }
  const collator = new Intl.Collator(lang());
  rows.sort((a, b) => collator.compare(a.city ?? "", b.city ?? "") || collator.compare(a.county ?? "", b.county ?? "")
    || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const shown = rows.slice(0, state.siteRowsShown);
  const body = [];
  let group = null;
  for (const site of shown) {
    const key = `${site.city ?? ""} · ${site.county ?? ""}`;
    if (key !== group) {
      group = key;
      body.push(h("tr", { class: "group" }, h("th", { colspan: 6 }, key)));
    }
    const info = statuses.get(site.id);
    // The site list is not pushed live; an open agent_offline alert is.
    const reported = site.agent ? (site.agent.online ? "online" : "offline") : "unknown";
    const agent = info && info.agentDown ? "offline" : reported;
    body.push(h("tr", {
      testid: "site-row", class: info && info.flags.has("fire") ? "row-fire" : "",
      dataset: { site: site.id }, tabindex: 0,
      onclick: () => { location.hash = `#/site/${encodeURIComponent(site.id)}`; },
      onkeydown: (e) => { if (e.key === "Enter") location.hash = `#/site/${encodeURIComponent(site.id)}`; },
    },
    h("td", { class: "mono" }, site.id),
    h("td", {}, site.name ?? ""),
    h("td", {}, categoryText(site.category)),
    h("td", { testid: "site-status" }, ...statusBadges(info)),
    h("td", {}, h("span", { class: `dot ${agent}` }), t(`agent.${agent}`)),
    h("td", { class: "num" }, info ? info.open : 0)));
  }
  $("sites-table").tBodies[0].replaceChildren(...body);
  $("sites-count").textContent = t("sites.shown", { shown: shown.length, total: rows.length });
  const more = $("sites-more");
  const rest = rows.length - shown.length;
  more.hidden = rest <= 0;
  more.textContent = t("sites.more", { n: Math.min(rest, SITE_ROWS) });
}

// ------------------------------------------------------------------ site detail

async function openDetail(siteId) {
  state.detail = null;
  state.notified = new Map();
  stopDetailPoll();
  clearSnapshots();
  $("site-head").replaceChildren(h("p", { class: "muted" }, t("sites.loading")));
  $("devices-table").tBodies[0].replaceChildren();
  $("timeline").replaceChildren();
  $("site-problems-section").hidden = true;
  $("site-problem-error").hidden = true;
  try {
    const [site, devices, alerts] = await Promise.all([
      api(`${API}/sites/${encodeURIComponent(siteId)}`),
      api(`${API}/sites/${encodeURIComponent(siteId)}/devices`),
      api(`${API}/alerts?${new URLSearchParams({ site: siteId, limit: "200" })}`),
    ]);
    if (state.view !== "site") return;
    state.detail = { site, devices: devices.items, alerts: new Map(alerts.items.map((a) => [a.id, a])) };
    for (const alert of alerts.items) {
      const known = state.alerts.get(alert.id);
      if (known && isNewer(known, alert)) state.detail.alerts.set(alert.id, known);
    }
    startDetailPoll();
    renderDetail();
    loadSiteProblems(site.id);
  } catch (err) {
    $("site-head").replaceChildren(h("p", { class: "error", testid: "detail-error" }, errorText(err)));
  }
}

function deviceState(device) {
  const s = device.state;
  if (!s || typeof s !== "object") return device.status ? wordOr(`devstate.${device.status}`, device.status) : "—";
  return readingWords(s, device.kind).join(t("list.sep")) || (device.status ? wordOr(`devstate.${device.status}`, device.status) : "—");
}

function renderDetail() {
  const detail = state.detail;
  if (!detail) return;
  const { site } = detail;
  const info = siteStatuses().get(site.id);
  $("site-head").replaceChildren(
    h("h1", { testid: "site-title" }, site.name ?? site.id, " ", h("small", { class: "mono" }, site.id)),
    h("p", {}, [site.city, site.county, categoryText(site.category)].filter(Boolean).join(" · ")),
    h("p", { class: "muted" }, `${t("detail.address")}: ${site.address || "—"} · ${contactText(site)} · ${t("detail.cameras_required")}: ${site.cameras_required ?? 0}`),
    h("p", {}, ...statusBadges(info)),
  );
  const rows = detail.devices.map((d) => h("tr", { testid: "device-row", dataset: { device: d.id, online: String(Boolean(d.online)) } },
    h("td", { class: "mono" }, d.id, d.name ? h("div", { class: "muted" }, d.name) : null),
    h("td", {}, t(`devkind.${d.kind}`)),
    h("td", {}, d.location ?? ""),
    h("td", {}, h("span", { class: `dot ${d.online ? "online" : "offline"}` }), t(d.online ? "agent.online" : "agent.offline")),
    h("td", {}, formatTime(d.last_seen)),
    h("td", {}, deviceState(d),
      d.latest_snapshot_at ? h("div", { class: "muted", testid: "device-snapshot" },
        t("device.snapshot_at", { at: formatTime(d.latest_snapshot_at) })) : null)));
  $("devices-table").tBodies[0].replaceChildren(...(rows.length ? rows
    : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, t("detail.none")))]));
  renderSnapshots(detail);
  const alerts = [...detail.alerts.values()].sort((a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at) || b.id - a.id);
  $("timeline").replaceChildren(...(alerts.length ? alerts.map((a) => h("li", {
    testid: "timeline-item", class: `sev-${a.severity} st-${a.state}`, dataset: { alertId: a.id, state: a.state },
  },
  h("time", { datetime: a.opened_at }, formatTime(a.opened_at)),
  h("div", {},
    badge(`sev sev-${a.severity}`, t(`severity.${a.severity}`)), " ",
    h("strong", {}, kindText(a.kind)), " · ", a.device ?? t("alert.site-level"), " ",
    badge(`state st-${a.state}`, t(`state.${a.state}`)),
    a.acknowledged_at ? h("div", { class: "muted" }, `${t("state.acknowledged")}: `,
      t("alert.by", { who: a.acknowledged_by ?? "—", at: formatTime(a.acknowledged_at) })) : null,
    a.resolved_at ? h("div", { class: "muted" }, `${t("state.resolved")}: `,
      t("alert.by", { who: a.resolved_by ?? "—", at: formatTime(a.resolved_at) })) : null,
    notifiedBlock(a))))
    : [h("li", { class: "muted" }, t("detail.none"))]));
}

// ------------------------------------------------------------------ alert detail: who was told when

function notifiedBlock(alert) {
  const entry = state.notified.get(alert.id);
  const toggle = h("button", { type: "button", class: "link", testid: "notify-toggle",
    onclick: () => toggleNotified(alert.id) }, t(entry?.open ? "notify.hide" : "notify.show"));
  if (!entry?.open) return h("div", { class: "notify" }, toggle);
  let body;
  if (entry.error) body = h("p", { class: "error" }, t("error.generic", { detail: entry.error }));
  else if (!entry.items) body = h("p", { class: "muted" }, t("notify.loading"));
  else if (!entry.items.length) body = h("p", { class: "muted", testid: "notify-none" }, t("notify.none"));
  else {
    body = h("table", { class: "notify-table", testid: "notify-table" },
      h("thead", {}, h("tr", {}, ...["notify.when", "notify.channel", "notify.step", "notify.event", "notify.result"]
        .map((key) => h("th", {}, t(key))))),
      h("tbody", {}, ...entry.items.map(notifiedRow)));
  }
  return h("div", { class: "notify" }, toggle, body);
}

function notifiedRow(d) {
  const last = d.attempts[d.attempts.length - 1];
  const when = last ? last.at : d.done_at ?? d.due_at;
  const result = last ? `${t(`notify.result.${last.result}`)}${last.response_code ? ` (${last.response_code})` : ""}` : "";
  return h("tr", { testid: "notify-row", dataset: { channel: d.channel, state: d.state, event: d.event } },
    h("td", {}, formatTime(when)),
    h("td", { class: "mono" }, d.channel),
    h("td", { class: "num" }, d.step + 1),
    h("td", {}, t(`notify.event.${d.event}`)),
    h("td", {}, badge(`state ns-${d.state}`, t(`notify.state.${d.state}`)),
      d.attempts.length > 1 ? ` ${t("notify.attempts", { n: d.attempts.length })}` : "",
      result ? ` · ${result}` : "",
      d.note ? h("div", { class: "muted" }, d.note) : null));
}

function toggleNotified(id) {
  const entry = state.notified.get(id) ?? { open: false, items: null, error: null };
  entry.open = !entry.open;
  state.notified.set(id, entry);
  scheduleRender();
  if (entry.open) loadNotified(id);
}

async function loadNotified(id) {
  const entry = state.notified.get(id);
  if (!entry) return;
  try {
    const answer = await api(`${API}/alerts/${encodeURIComponent(id)}/notifications`);
    entry.items = answer.items;
    entry.error = null;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      return;
    }
    entry.error = err.detail ?? err.message;
  }
  scheduleRender();
}

// ------------------------------------------------------------------ site detail: exit snapshots

function startDetailPoll() {
  stopDetailPoll();
  state.detailTimer = setInterval(() => {
    if (state.view !== "site" || !state.detail) {
      stopDetailPoll();
      return;
    }
    for (const snap of state.snapshots.values()) {
      if (snap.failed && !snap.loading) snap.fetchedFor = null; // try a failed image again
    }
    refreshDevices();
    for (const [id, entry] of state.notified) if (entry.open) loadNotified(id); // steps go on meanwhile
  }, DETAIL_POLL_MS);
}

function stopDetailPoll() {
  clearInterval(state.detailTimer);
  clearTimeout(state.devicesSoon);
  state.detailTimer = null;
  state.devicesSoon = null;
}

function refreshDevicesSoon() {
  if (state.devicesSoon) return;
  state.devicesSoon = setTimeout(() => {
    state.devicesSoon = null;
    refreshDevices();
  }, 1000);
}

// The devices list carries each device's `latest_snapshot_at`; a change there fetches the new image.
async function refreshDevices() {
  const detail = state.detail;
  if (!detail || state.view !== "site") return;
  try {
    const devices = await api(`${API}/sites/${encodeURIComponent(detail.site.id)}/devices`);
    if (state.detail !== detail) return;
    detail.devices = devices.items;
    scheduleRender();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
  }
}

function clearSnapshots() {
  for (const snap of state.snapshots.values()) if (snap.url) URL.revokeObjectURL(snap.url);
  state.snapshots = new Map();
  $("snapshots").replaceChildren();
  $("snapshots-section").hidden = true;
}

// `<img src>` cannot send the Authorization header: fetch the JPEG and show it from an object URL.
async function loadSnapshot(siteId, device, snap) {
  const at = snap.want;
  snap.loading = true;
  try {
    const response = await fetch(
      `${API}/sites/${encodeURIComponent(siteId)}/devices/${encodeURIComponent(device)}/snapshot`,
      { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" },
    );
    if (!response.ok) throw new ApiError(response.status, response.statusText);
    const blob = await response.blob();
    if (state.snapshots.get(device) !== snap) return; // left the site meanwhile
    if (snap.url) URL.revokeObjectURL(snap.url);
    snap.url = URL.createObjectURL(blob);
    snap.at = response.headers.get("X-Snapshot-At") || at;
    snap.failed = false;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      return;
    }
    snap.failed = true;
  } finally {
    snap.loading = false;
    snap.fetchedFor = at;
  }
  if (state.snapshots.get(device) === snap) scheduleRender(); // fetches again if `want` moved on
}

function snapshotEntry(device) {
  const img = h("img", { testid: "snapshot-img", alt: "", decoding: "async" });
  const caption = h("figcaption");
  const figure = h("figure", { class: "snapshot", testid: "snapshot", dataset: { device } }, img, caption);
  return { want: null, fetchedFor: null, loading: false, failed: false, url: null, at: null, figure, img, caption };
}

// Unresolved exit_blocked alerts of the open site, by device: the site's alerts plus every
// unresolved one the console follows (the site's list holds only its newest 200).
function blockedExits(detail) {
  const alerts = new Map(detail.alerts);
  for (const alert of state.alerts.values()) {
    if (alert.site !== detail.site.id) continue;
    const known = alerts.get(alert.id);
    if (!known || isNewer(alert, known)) alerts.set(alert.id, alert);
  }
  const blocked = new Map();
  for (const alert of alerts.values()) {
    if (alert.kind === "exit_blocked" && alert.device && alert.state !== "resolved") blocked.set(alert.device, alert);
  }
  return blocked;
}

function renderSnapshots(detail) {
  const blocked = blockedExits(detail);
  const figures = [];
  const shown = new Set();
  for (const device of detail.devices) {
    if (device.kind !== "exit" || !device.latest_snapshot_at) continue;
    shown.add(device.id);
    let snap = state.snapshots.get(device.id);
    if (!snap) state.snapshots.set(device.id, (snap = snapshotEntry(device.id)));
    snap.want = device.latest_snapshot_at;
    if (snap.want !== snap.fetchedFor && !snap.loading) loadSnapshot(detail.site.id, device.id, snap);
    const alert = blocked.get(device.id);
    const label = device.name ? `${device.name} (${device.id})` : device.id;
    snap.figure.classList.toggle("blocked", Boolean(alert));
    Object.assign(snap.figure.dataset, { blocked: String(Boolean(alert)), alertState: alert ? alert.state : "",
      at: snap.at ?? "" });
    // The figure (and its image) is kept across renders: only a new object URL reloads it.
    if (snap.url && snap.img.getAttribute("src") !== snap.url) snap.img.src = snap.url;
    snap.img.hidden = !snap.url;
    snap.img.alt = `${t("device.snapshot")} · ${label}`;
    let when;
    if (snap.url) when = t("device.snapshot_at", { at: formatTime(snap.at) });
    else when = t(snap.failed ? "snapshot.failed" : "snapshot.loading");
    snap.caption.replaceChildren(
      h("strong", {}, label),
      alert ? badge("status st-exit", t("status.exit"), { "data-status": "exit" }) : null,
      h("time", { testid: "snapshot-time", datetime: snap.at ?? undefined, class: "muted" }, when),
    );
    figures.push(snap.figure);
  }
  for (const [id, snap] of state.snapshots) {
    if (shown.has(id)) continue;
    if (snap.url) URL.revokeObjectURL(snap.url);
    state.snapshots.delete(id);
  }
  $("snapshots").replaceChildren(...figures);
  $("snapshots-section").hidden = figures.length === 0;
}

// ------------------------------------------------------------------ inspector view

function fillInspectorSites() {
  const cities = [...new Set([...state.sites.values()].map((s) => s.city).filter(Boolean))].sort();
  optionList($("inspector-city"), cities);
  const city = $("inspector-city").value;
  const select = $("inspector-site");
  const previous = select.value;
  const ids = [...state.sites.values()].filter((s) => !city || s.city === city).map((s) => s.id).sort();
  select.replaceChildren(h("option", { value: "" }, t("inspector.pick")),
    ...ids.map((id) => h("option", { value: id }, siteLabel(id))));
  select.value = ids.includes(previous) ? previous : (state.ownSite && ids.includes(state.ownSite) ? state.ownSite : "");
  if (state.view === "inspector" && select.value !== previous) {
    loadCompliance(select.value);
    loadProblems();
  }
}

function renderInspectorHeader() {
  /* the panel is filled by loadCompliance; nothing live to redraw */
}

async function loadCompliance(siteId) {
  const panel = $("inspector-panel");
  if (!siteId) {
    panel.replaceChildren(h("p", { class: "muted" }, t("inspector.pick")));
    return;
  }
  panel.replaceChildren(h("p", { class: "muted", testid: "compliance-status", dataset: { available: "loading" } },
    t("inspector.loading")));
  const base = `${API}/sites/${encodeURIComponent(siteId)}/compliance`;
  const [compliance, daily] = await Promise.all([api(base).catch(() => null), api(`${base}/daily`).catch(() => null)]);
  if ($("inspector-site").value !== siteId) return;
  if (daily && daily.time_zone) state.zone = daily.time_zone;
  if (compliance) {
    panel.replaceChildren(...complianceView(compliance, daily));
    return;
  }
  let devices = [];
  try {
    devices = (await api(`${API}/sites/${encodeURIComponent(siteId)}/devices`)).items;
  } catch {
    devices = [];
  }
  const cameras = devices.filter((d) => d.kind === "camera");
  const open = [...state.alerts.values()].filter((a) => a.site === siteId && a.state !== "resolved").sort(feedOrder);
  const site = state.sites.get(siteId);
  panel.replaceChildren(
    h("p", { class: "notice", testid: "compliance-status", dataset: { available: "false" } },
      t("inspector.unavailable", { site: siteId })),
    h("p", { testid: "compliance-summary" }, t("inspector.summary", {
      online: cameras.filter((c) => c.online).length, total: cameras.length,
      required: site?.cameras_required ?? 0, open: open.length,
    })),
    h("ul", { class: "problems" }, ...open.map((a) => h("li", {},
      badge(`sev sev-${a.severity}`, t(`severity.${a.severity}`)), " ", kindText(a.kind), " · ",
      a.device ?? t("alert.site-level"), " · ", formatTime(a.opened_at)))));
}

function percent(share) {
  return `${(share * 100).toFixed(share >= 0.99 && share < 1 ? 2 : 1)} %`;
}

function seconds(value) {
  return value === null || value === undefined ? "–" : `${value < 10 ? value.toFixed(2) : Math.round(value)} s`;
}

// null: no verdict, the site was not reporting yet (docs/compliance.md)
function verdictBadge(compliant, extra = {}) {
  if (compliant === null || compliant === undefined) return badge("st-unknown", t("compliance.unknown"), extra);
  return badge(compliant ? "st-ok" : "st-noncompliant", t(compliant ? "compliance.yes" : "compliance.no"), extra);
}

// Reasons as codes with parameters (reason_codes), in the console's language; older answers: the text.
function reasonTexts(item) {
  if (Array.isArray(item.reason_codes)) return item.reason_codes.map(reasonText);
  return item.reasons ?? [];
}

function reasonText(reason) {
  const key = `reason.${reason.code}`;
  if (!has(key)) return reason.code;
  const params = { ...reason };
  for (const [name, value] of Object.entries(params)) if (typeof value === "number") params[name] = formatNumber(value);
  return t(key, params);
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : String(Math.round(value * 1000) / 1000);
}

/* GET /sites/{site}/compliance (the last 24 h) and /compliance/daily (the last 7 local days): docs/compliance.md */
function complianceView(c, daily) {
  const cameras = h("table", { class: "grid", testid: "compliance-cameras" },
    h("thead", {}, h("tr", {}, ...["camera", "online", "outages", "longest", "p50", "p95"].map(
      (col) => h("th", {}, t(`compliance.col.${col}`))))),
    h("tbody", {}, ...c.cameras.map((cam) => h("tr", { testid: "compliance-camera", dataset: { device: cam.device } },
      h("td", {}, cam.device), h("td", {}, percent(cam.online_share)), h("td", {}, String(cam.outages)),
      h("td", { testid: "compliance-longest" }, formatDuration(cam.longest_outage_s)), h("td", {}, seconds(cam.delay_p50_s)),
      h("td", {}, seconds(cam.delay_p95_s))))));
  const view = [
    h("h2", { testid: "compliance-status", dataset: { available: "true" } }, t("inspector.available"), " ",
      verdictBadge(c.compliant, { testid: "compliance-verdict", dataset: { compliant: String(c.compliant) } })),
    h("p", { class: "muted" }, t("compliance.period", {
      from: formatTime(c.from), to: formatTime(c.to), reporting: c.cameras_reporting, required: c.cameras_required,
    }), c.measured_from && c.measured_from !== c.from
      ? h("span", { testid: "compliance-measured-from" }, " ", t("compliance.measured_from", { at: formatTime(c.measured_from) }))
      : null),
    h("ul", { class: "problems" }, ...reasonTexts(c).map((reason) => h("li", { testid: "compliance-reason" }, reason))),
    c.cameras.length ? cameras : h("p", { class: "muted" }, t("compliance.no-cameras")),
  ];
  if (daily) {
    view.push(h("h3", {}, t("compliance.daily", { zone: daily.time_zone })),
      h("table", { class: "grid", testid: "compliance-daily" },
        h("thead", {}, h("tr", {}, ...["date", "verdict", "reasons"].map((col) => h("th", {}, t(`compliance.col.${col}`))))),
        h("tbody", {}, ...[...daily.days].reverse().map((day) => h("tr", {
          testid: "compliance-day", dataset: { date: day.date, compliant: String(day.compliant) },
        }, h("td", {}, formatDay(day.date)), h("td", {}, verdictBadge(day.compliant)),
        h("td", {}, reasonTexts(day).join(t("list.sep"))))))));
  }
  return view;
}

// ------------------------------------------------------------------ problem list (docs/problems.md)

function mayActOnProblems() {
  return PROBLEM_ACTORS.has(state.role);
}

function problemOrder(a, b) {
  const ra = PROBLEM_RANK[a.status] ?? 3;
  const rb = PROBLEM_RANK[b.status] ?? 3;
  if (ra !== rb) return ra - rb;
  if (a.status === "rectified") return Date.parse(b.rectified_at) - Date.parse(a.rectified_at) || b.id - a.id;
  return Date.parse(a.deadline) - Date.parse(b.deadline) || b.id - a.id;
}

function problemDetail(p) {
  const d = p.detail ?? {};
  if (p.kind === "detector_untested" && d.required !== undefined) return t("problems.tests", d);
  if (p.kind === "not_compliant" && Array.isArray(d.reason_codes) && d.reason_codes.length) {
    return d.reason_codes.map(reasonText).join(t("list.sep"));
  }
  if (p.kind === "not_compliant" && Array.isArray(d.reasons) && d.reasons.length) return d.reasons.join("; ");
  return null;
}

// Rows of a problem table; `reload` runs after each hand action, `error` shows the API's refusal.
function problemRows(problems, { reload, error, colspan = 8 }) {
  if (!problems.length) return [h("tr", {}, h("td", { colspan, class: "muted", testid: "problems-empty" }, t("problems.empty")))];
  const now = Date.now();
  return problems.map((p) => {
    const overdue = p.status === "overdue" || (p.status === "open" && Date.parse(p.deadline) <= now);
    const actions = [];
    if (mayActOnProblems()) {
      const button = (action, cls) => h("button", { type: "button", class: cls, testid: `problem-${action}`,
        onclick: (e) => problemAction(p, action, e.currentTarget.closest("tr"), { reload, error }) }, t(`problems.${action}`));
      actions.push(button("note", "secondary"));
      actions.push(p.status === "rectified" ? button("reopen", "secondary") : button("close"));
    }
    let rectified = "—";
    if (p.rectified_at) {
      rectified = p.closed_by ? t("problems.closed_by", { who: p.closed_by, at: formatTime(p.rectified_at) })
        : t("problems.auto", { at: formatTime(p.rectified_at) });
    }
    const extra = problemDetail(p);
    return h("tr", {
      testid: "problem-row", class: `problem ps-${p.status}${overdue ? " overdue" : ""}`,
      dataset: { problemId: p.id, site: p.site, kind: p.kind, status: p.status, overdue: String(overdue) },
    },
    h("td", { class: "mono" }, `#${p.id}`),
    h("td", {}, h("a", { href: `#/site/${encodeURIComponent(p.site)}` }, siteLabel(p.site)),
      h("div", { class: "muted mono" }, p.device ?? t("alert.site-level"))),
    h("td", {}, h("strong", { testid: "problem-kind" }, t(`pkind.${p.kind}`)),
      extra ? h("div", { class: "muted small" }, extra) : null),
    h("td", {}, badge(`pstatus ps-${p.status}`, t(`pstatus.${p.status}`), { testid: "problem-status" })),
    h("td", {}, formatTime(p.opened_at)),
    h("td", { class: "deadline", testid: "problem-deadline" }, h("time", { datetime: p.deadline }, formatTime(p.deadline)),
      overdue && p.status !== "rectified" ? h("div", { class: "overdue-note" }, t("problems.overdue_by")) : null),
    h("td", { testid: "problem-rectified" }, rectified),
    h("td", { class: "problem-actions" }, ...actions));
  });
}

// The unresolved alert behind a problem of an alert kind (same site, device and kind), if the console knows one.
function openAlertOf(problem) {
  for (const alert of state.alerts.values()) {
    if (alert.state !== "resolved" && alert.site === problem.site && alert.kind === problem.kind
        && (alert.device ?? null) === (problem.device ?? null)) return alert;
  }
  return null;
}

async function problemAction(problem, action, row, { reload, error }) {
  // Closing while its alert is still open is allowed with a reason only (the API says alert_still_open).
  let stillOpen = action === "close" && problem.status !== "rectified" && openAlertOf(problem) !== null;
  let note = window.prompt(t(stillOpen ? "problems.prompt.close_open_alert" : `problems.prompt.${action}`), "");
  if (note === null) return; // cancelled
  let text = note.trim();
  error.hidden = true;
  if ((action === "note" || stillOpen) && !text) {
    error.textContent = t(stillOpen ? "apierr.alert_still_open" : "problems.note_required");
    error.hidden = false;
    return;
  }
  for (const button of row?.querySelectorAll("button") ?? []) button.disabled = true;
  try {
    try {
      await api(`${API}/problems/${problem.id}/${action}`, { method: "POST", body: text ? { note: text } : {} });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "alert_still_open" && !stillOpen)) throw err;
      stillOpen = true; // the console did not know the alert: ask again, saying why
      note = window.prompt(t("problems.prompt.close_open_alert"), "");
      text = (note ?? "").trim();
      if (!text) throw err;
      await api(`${API}/problems/${problem.id}/${action}`, { method: "POST", body: { note: text } });
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      return;
    }
    showError(error, err);
  }
  await reload();
}

async function fetchProblems(params, filter, max = PROBLEM_ROWS) {
  const statuses = filter === "active" ? ["open", "overdue"] : filter === "all" ? [null] : [filter];
  const lists = await Promise.all(statuses.map((status) => allPages(`${API}/problems`,
    status ? { ...params, status } : params, max)));
  return lists.flat().sort(problemOrder);
}

async function loadProblems() {
  const seq = ++state.problemsSeq;
  const body = $("problems-table").tBodies[0];
  const count = $("problems-count");
  const params = {};
  const site = $("inspector-site").value;
  const city = $("inspector-city").value;
  if (site) params.site = site;
  if (city) params.city = city;
  if (!body.children.length) count.textContent = t("problems.loading");
  let problems;
  try {
    problems = await fetchProblems(params, $("problem-status-filter").value);
  } catch (err) {
    if (seq !== state.problemsSeq) return;
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      return;
    }
    body.replaceChildren();
    count.textContent = "";
    showError($("problem-error"), err);
    return;
  }
  if (seq !== state.problemsSeq) return;
  state.problems = problems;
  renderProblems();
}

function renderProblems() {
  if (!state.problems) return;
  const problems = state.problems;
  $("problems-table").tBodies[0].replaceChildren(...problemRows(problems,
    { reload: loadProblems, error: $("problem-error") }));
  const overdue = problems.filter((p) => p.status === "overdue").length;
  $("problems-count").textContent = t("problems.count", { n: problems.length, overdue });
}

async function loadSiteProblems(siteId) {
  let problems;
  try {
    problems = await fetchProblems({ site: siteId }, "all", 200);
  } catch {
    return; // the section stays hidden
  }
  if (!state.detail || state.detail.site.id !== siteId) return;
  state.detail.problems = problems;
  renderSiteProblems();
}

function renderSiteProblems() {
  const detail = state.detail;
  if (!detail || !detail.problems) return;
  $("site-problems-table").tBodies[0].replaceChildren(...problemRows(detail.problems,
    { reload: () => loadSiteProblems(detail.site.id), error: $("site-problem-error") }));
  $("site-problems-section").hidden = false;
}

// ------------------------------------------------------------------ readings and categories in words

function wordOr(key, fallback) {
  return has(key) ? t(key) : fallback;
}

function categoryText(category) {
  if (!category) return "";
  return wordOr(`category.${category.toLowerCase()}`, category);
}

function epochOrIso(value) {
  return typeof value === "number" ? new Date(value * 1000).toISOString() : value;
}

function pct(value) {
  return `${Math.round(value * 10) / 10} %`;
}

// A device's reading (device_state.reading, or an alert's detail) as people say it.
function readingWords(r, kind) {
  const words = [];
  if (r.state && !(kind === "exit" && r.state === "blocked" && r.blocked_ratio !== undefined)) {
    words.push(wordOr(`devstate.${r.state}`, r.state));
  }
  if (r.stream && r.stream !== "ok") words.push(wordOr(`reading.stream.${r.stream}`, r.stream));
  if (r.stream === "ok" && kind === "camera") words.push(t("reading.stream.ok"));
  if (typeof r.battery_pct === "number") words.push(t("reading.battery", { pct: pct(r.battery_pct) }));
  if (typeof r.obscuration_pct === "number") words.push(t("reading.obscuration", { pct: pct(r.obscuration_pct) }));
  if (typeof r.blocked_ratio === "number" && (r.state === "blocked" || r.state === undefined)) {
    words.push(t("reading.blocked", { pct: pct(r.blocked_ratio * 100) }));
  }
  if (r.blocked_since) {
    const since = epochOrIso(r.blocked_since);
    words.push(t("reading.blocked_since", { at: formatTime(since), for: formatDuration((Date.now() - Date.parse(since)) / 1000) }));
  }
  return words;
}

// What raised an alert, from its detail: battery %, obscuration, blocked since, last heard from...
function readingText(alert) {
  const d = alert.detail ?? {};
  const words = [];
  switch (alert.kind) {
    case "fire_alarm":
      if (typeof d.obscuration_pct === "number") words.push(t("reading.obscuration", { pct: pct(d.obscuration_pct) }));
      if (d.detector_normal) words.push(t("reading.detector_normal"));
      break;
    case "detector_fault":
      if (d.state && d.state !== "normal") words.push(wordOr(`devstate.${d.state}`, d.state));
      if (typeof d.battery_pct === "number") words.push(t("reading.battery", { pct: pct(d.battery_pct) }));
      break;
    case "exit_blocked":
      words.push(...readingWords({ blocked_ratio: d.blocked_ratio, blocked_since: d.blocked_since ?? undefined }, "exit"));
      break;
    case "camera_stream_fault":
      if (d.stream) words.push(wordOr(`reading.stream.${d.stream}`, d.stream));
      break;
    case "camera_offline": case "detector_offline":
      words.push(d.last_seen ? t("reading.last_seen", { at: formatTime(d.last_seen) }) : t("reading.never_seen"));
      break;
    case "agent_offline":
      words.push(t("reading.offline_since", { at: formatTime(alert.opened_at) }));
      break;
    case "fire_alarm_exit_blocked":
      words.push(t("reading.compound", { detectors: (d.detectors ?? []).join(", "), exits: (d.exits ?? []).join(", ") }));
      break;
    default:
      break;
  }
  if (d.escalated && d.escalated_at) words.push(t("reading.escalated_at", { at: formatTime(d.escalated_at) }));
  return words.join(t("list.sep"));
}

// ------------------------------------------------------------------ inspector: exports and the spot-check sample

function showExports() {
  const section = $("exports-section");
  section.hidden = !mayActOnProblems();
  if (section.hidden) return;
  const today = localDate(new Date());
  if (!$("export-from").value) $("export-from").value = `${today.slice(0, 8)}01`; // this month so far
  if (!$("export-to").value) $("export-to").value = today;
  if (!$("sample-seed").value) $("sample-seed").value = String(Math.floor(Math.random() * 1e6));
}

// "YYYY-MM-DD" of an instant in the gateway's zone
function localDate(date) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: state.zone, year: "numeric", month: "2-digit", day: "2-digit" })
    .format(date);
}

// The zone's offset ("+08:00") on a local day: the API takes RFC 3339 instants.
function zoneOffset(day) {
  const noon = new Date(`${day}T12:00:00Z`);
  const name = new Intl.DateTimeFormat("en-US", { timeZone: state.zone, timeZoneName: "longOffset" })
    .formatToParts(noon).find((p) => p.type === "timeZoneName")?.value ?? "GMT";
  const m = /GMT([+-]\d{2}):?(\d{2})?/.exec(name);
  return m ? `${m[1]}:${m[2] ?? "00"}` : "Z";
}

function nextDay(day) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 1);
  return d.toISOString().slice(0, 10);
}

// [from, to) of the chosen local days, the last one included.
function exportPeriod() {
  const first = $("export-from").value;
  const last = $("export-to").value;
  if (!first || !last || first > last) throw new Error(t("exports.bad_period"));
  const end = nextDay(last);
  return { from: `${first}T00:00:00${zoneOffset(first)}`, to: `${end}T00:00:00${zoneOffset(end)}` };
}

function fileName(disposition, fallback) {
  const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(disposition ?? "");
  if (utf8) return decodeURIComponent(utf8[1]);
  const plain = /filename="([^"]+)"/i.exec(disposition ?? "");
  return plain ? plain[1] : fallback;
}

// Fetch with the token (a plain link cannot send it) and hand the file to the browser.
async function download(path, params, fallback) {
  const response = await fetch(`${path}?${new URLSearchParams(params)}`, { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { data = null; }
    throw new ApiError(response.status, typeof data?.detail === "string" ? data.detail : response.statusText, data?.error ?? null);
  }
  const name = fileName(response.headers.get("Content-Disposition"), fallback);
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return name;
}

async function exportAction(run) {
  const error = $("export-error");
  const status = $("export-status");
  error.hidden = true;
  status.textContent = t("exports.working");
  try {
    const name = await run();
    status.textContent = name ? t("exports.saved", { name }) : "";
  } catch (err) {
    status.textContent = "";
    if (err instanceof ApiError) showError(error, err);
    else {
      error.textContent = err.message;
      error.hidden = false;
    }
  }
}

function downloadReport(kind) {
  return exportAction(() => {
    const format = $("export-format").value;
    const params = { ...exportPeriod(), format };
    const city = $("inspector-city").value;
    if (kind === "summary" && !city) throw new Error(t("exports.city_needed"));
    if (city) params.city = city;
    return download(`${API}/reports/${kind}`, params, `${kind}.${format}`);
  });
}

function sampleParams() {
  const params = { level: $("sample-level").value, seed: $("sample-seed").value || "0" };
  const city = $("inspector-city").value;
  if (params.level === "city") {
    if (!city) throw new Error(t("exports.city_needed"));
    params.city = city;
  }
  return params;
}

function drawSample() {
  return exportAction(async () => {
    state.sample = await api(`${API}/inspections/sample?${new URLSearchParams(sampleParams())}`);
    renderSample();
    return null;
  });
}

function renderSample() {
  const box = $("sample-result");
  const sample = state.sample;
  $("download-sample").hidden = !sample;
  if (!sample) {
    box.replaceChildren();
    return;
  }
  box.replaceChildren(
    h("p", { testid: "sample-summary" }, t("sample.summary", {
      sampled: sample.sampled, institutions: sample.institutions, covered: sample.counties_covered,
      counties: sample.counties, seed: sample.seed,
    })),
    h("table", { class: "grid", testid: "sample-table" },
      h("thead", {}, h("tr", {}, ...["site", "name", "county", "category", "risk", "why"].map(
        (col) => h("th", {}, t(`sample.col.${col}`))))),
      h("tbody", {}, ...sample.sites.map((s) => h("tr", { testid: "sample-row", dataset: { site: s.site } },
        h("td", { class: "mono" }, s.site), h("td", {}, s.name), h("td", {}, [s.city, s.county].filter(Boolean).join(" · ")),
        h("td", {}, categoryText(s.category)), h("td", { class: "num" }, String(s.risk)),
        h("td", {}, (s.reasons ?? []).join(t("list.sep"))))))));
}

function wireExports() {
  $("download-ledger").addEventListener("click", () => downloadReport("ledger"));
  $("download-summary").addEventListener("click", () => downloadReport("summary"));
  $("draw-sample").addEventListener("click", drawSample);
  $("download-sample").addEventListener("click", () => exportAction(() => {
    const params = sampleParams();
    return download(`${API}/inspections/sample`, { ...params, format: "csv" }, `inspection-${params.level}-${params.seed}.csv`);
  }));
}

function formatDay(iso) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(lang(), { year: "numeric", month: "long", day: "numeric", weekday: "short", timeZone: "UTC" })
    .format(new Date(`${iso}T00:00:00Z`));
}

// ------------------------------------------------------------------ routing and wiring

function route() {
  if (!state.token) return;
  const [, view = "alerts", arg] = (location.hash || "#/alerts").split("/");
  const known = ["alerts", "sites", "site", "inspector"];
  state.view = known.includes(view) ? view : "alerts";
  for (const el of document.querySelectorAll("[data-view]")) el.hidden = el.dataset.view !== state.view;
  for (const tab of document.querySelectorAll("[data-tab]")) {
    const active = tab.dataset.tab === state.view || (state.view === "site" && tab.dataset.tab === "sites");
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", String(active));
  }
  if (state.view === "sites") loadSites();
  if (state.view === "site" && arg) openDetail(decodeURIComponent(arg));
  if (state.view !== "site") {
    stopDetailPoll();
    clearSnapshots();
  }
  if (state.view === "inspector") {
    loadCompliance($("inspector-site").value);
    loadProblems();
    showExports();
  }
  scheduleRender();
}

function switchLang() {
  const next = LANGS[(LANGS.indexOf(lang()) + 1) % LANGS.length];
  setLang(next);
  localStorage.setItem(KEY.lang, next);
  renderChrome();
  fillSiteFilters();
  fillInspectorSites();
  if (state.view === "inspector") loadCompliance($("inspector-site").value);
  renderProblems();
  renderSiteProblems();
  fillTriageFilters();
  renderSample();
  renderAll();
}

function init() {
  setLang(localStorage.getItem(KEY.lang) || "zh-CN");
  // Both problem tables have the same columns: one header in index.html, copied before translating.
  $("site-problems-table").tHead.replaceWith($("problems-table").tHead.cloneNode(true));
  applyStatic();
  updateTitle();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    audioContext(); // a user gesture: lets the alarm sound play later
    const token = $("token-input").value.trim();
    if (token) signIn(token);
  });
  $("logout-button").addEventListener("click", signOut);
  $("lang-toggle").addEventListener("click", switchLang);
  $("mute-toggle").addEventListener("click", () => {
    state.muted = !state.muted;
    localStorage.setItem(KEY.muted, state.muted ? "1" : "0");
    if (!state.muted) audioContext();
    renderChrome();
  });
  document.addEventListener("pointerdown", () => { if (!state.muted && state.token) audioContext(); }, { once: true });
  $("feed-filter").addEventListener("change", scheduleRender);
  const resetAndRender = () => { state.siteRowsShown = SITE_ROWS; scheduleRender(); };
  $("site-search").addEventListener("input", resetAndRender);
  $("city-filter").addEventListener("change", () => { fillCounties(""); resetAndRender(); });
  $("county-filter").addEventListener("change", resetAndRender);
  $("status-filter").addEventListener("change", resetAndRender);
  $("sites-more").addEventListener("click", () => { state.siteRowsShown += SITE_ROWS; scheduleRender(); });
  $("inspector-site").addEventListener("change", (e) => {
    loadCompliance(e.target.value);
    loadProblems();
  });
  $("inspector-city").addEventListener("change", () => {
    fillInspectorSites();
    loadProblems();
  });
  $("problem-status-filter").addEventListener("change", loadProblems);
  wireTriage();
  wireExports();
  window.addEventListener("hashchange", route);
  const saved = localStorage.getItem(KEY.token);
  if (saved) signIn(saved, { fromStorage: true });
  else showLogin();
}

init();
