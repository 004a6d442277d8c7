// The demo page: one visitors-stream client (the count) and, for moderators
// and admins, one dashboard-stream client, both footfall-client.js.
//
// URL parameters: community, role (dev mode: member | moderator | admin),
// guest=1 (no token), transport (auto | websocket | sse | polling). In dev
// mode, ?community=ID&role=R connects at once as a new visitor (a random sub
// per tab, kept over reloads); ?community=ID&guest=1 connects at once as a guest, in any
// mode: the footfall_vid cookie makes every tab of this browser one visitor.
// Test knobs:
// poll (poll interval, ms), climb (wait before trying a better transport, ms;
// it doubles once at most).
import { FootfallClient, tokenExpiry } from './footfall-client.js';

const $ = (id) => /** @type {any} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
const numParam = (name) => {
  const n = Number(params.get(name));
  return Number.isFinite(n) && n > 0 ? n : undefined;
};

const randomId = (n = 8) => {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
};

/**
 * This tab's visitor in dev mode: a random sub, kept in sessionStorage so
 * that a reload is the same visitor (and the leave grace hides it) while
 * another tab is another visitor.
 */
function devSub() {
  const key = 'footfall-dev-sub';
  try {
    let sub = sessionStorage.getItem(key);
    if (!sub) sessionStorage.setItem(key, (sub = `dev-${randomId()}`));
    return sub;
  } catch {
    return `dev-${randomId()}`; // storage refused: one visitor per page load
  }
}

const state = {
  dev: false,
  apiKey: '',
  /** What /dev/info says, when it says it: the leave grace ("5s"), the public communities. */
  leaveGrace: '',
  /** @type {string[] | null} */ publicCommunities: null,
  guest: false,
  countAt: 0, // when the count last changed
  sub: devSub(), // this tab's visitor in dev mode
  community: '',
  /** @type {FootfallClient | null} */ visitors: null,
  /** @type {FootfallClient | null} */ dashboard: null,
  /** @type {string[]} */ sims: [],
  simSeq: 0,
  simTimer: 0,
  /** @type {{t: number, v: number}[]} */ samples: [],
  /** @type {Map<string, {value: unknown, timestamp?: string}>} */ metrics: new Map(),
  /** The dashboard's visitor history chart (moderators and admins only). */
  history: {
    /** @type {'hour' | 'minute'} */ step: 'hour',
    /** @type {import('./footfall-client.js').VisitorHistory | null} */ data: null,
    /** @type {AbortController | null} */ inflight: null,
    refresh: 0, // the every-minute timer
    soon: 0, // a refresh asked for by a new peak, throttled
    loadedAt: 0,
  },
};

// ---------------------------------------------------------------- log

const LOG_MAX = 200;
function log(tag, text, kind = '') {
  const li = document.createElement('li');
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const t = document.createElement('span');
  t.className = `tag ${kind}`;
  t.textContent = tag;
  const code = document.createElement('code');
  code.textContent = text;
  li.append(time, t, code);
  const ol = $('log');
  ol.prepend(li);
  while (ol.children.length > LOG_MAX) ol.lastElementChild.remove();
}
$('log-clear').addEventListener('click', () => ($('log').textContent = ''));

const short = { websocket: 'ws', sse: 'sse', polling: 'poll' };

// ---------------------------------------------------------------- dev mode

async function loadDevInfo() {
  try {
    const r = await fetch('/dev/info', { cache: 'no-store' });
    if (!r.ok) return;
    const info = await r.json();
    state.dev = info.dev === true;
    state.apiKey = info.api_key || '';
    if (typeof info.leave_grace === 'string') state.leaveGrace = info.leave_grace;
    if (Array.isArray(info.public_communities)) state.publicCommunities = info.public_communities.map((c) => String(c).toLowerCase());
  } catch {
    /* not dev mode */
  }
}

/** Mints a token for this page's visitor through POST /dev/token. */
async function mint(community, role) {
  const r = await fetch('/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ community, role, sub: state.sub }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`dev token: HTTP ${r.status} ${body.message ?? ''}`.trim());
  return body.token;
}

/** The service API (dev: the key from /dev/info). */
async function service(path, body, { keepalive = false } = {}) {
  const r = await fetch(`/api/v1/communities/${encodeURIComponent(state.community)}${path}`, {
    method: 'POST',
    keepalive,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${state.apiKey}` },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
  return r.status === 202 || r.status === 204 ? null : r.json();
}

// ---------------------------------------------------------------- rendering

function setConn(detail) {
  $('conn').dataset.state = detail.status;
  $('status').textContent = detail.status;
  let text = '';
  switch (detail.status) {
    case 'reconnecting':
      text = `Reconnecting${detail.retryIn !== undefined ? ` in ${(detail.retryIn / 1000).toFixed(1)} s` : ''}${detail.code ? ` (close ${detail.code}${detail.reason ? `: ${detail.reason}` : ''})` : ''}.`;
      break;
    case 'stopped':
      text = `Stopped: ${detail.code ?? ''} ${detail.reason ?? ''}`.trim() + explain(detail.code);
      break;
    case 'paused':
      text = 'Polling paused while the tab is hidden.';
      break;
    case 'connected':
      text = '';
      break;
  }
  $('status-detail').textContent = text;
  $('status-detail').classList.toggle('bad', detail.status === 'stopped');
}

function explain(code) {
  if (code === 4001 && state.guest) return ' (this community admits no guests: it is not in FOOTFALL_PUBLIC_COMMUNITIES)';
  return (
    { 4001: ' (no credential)', 4002: ' (bad credential)', 4003: ' (not allowed here)', 4004: ' (expired)' }[code] ?? ''
  );
}

/** The note under the count: why reloads, here or in another tab, leave it alone. */
function renderGrace(connected) {
  $('grace-note').hidden = !connected;
  const grace = state.leaveGrace && state.leaveGrace !== '0s' ? ` (${state.leaveGrace} here)` : '';
  const who = state.guest
    ? 'Every tab of this browser is the same guest. '
    : 'Tabs signed in as the same user are one visitor. ';
  $('grace-text').textContent = state.leaveGrace === '0s'
    ? `${who}This node runs with FOOTFALL_LEAVE_GRACE=0s, though: a reload makes the visitor leave and come back.`
    : `${who}When a visitor's last tab closes or reloads, footfall keeps it present for the leave grace${grace}; back within it, nobody sees it leave or join.`;
}

const facts = { since: 0, messages: 0, reconnects: 0, prev: '' };
function renderFacts(transport) {
  if (transport !== undefined) $('f-transport').textContent = transport ?? '–';
  renderSteady();
  $('f-since').textContent = facts.since ? new Date(facts.since).toLocaleTimeString([], { hour12: false }) : '–';
  $('f-messages').textContent = String(facts.messages);
  $('f-reconnects').textContent = String(facts.reconnects);
}

function setCount(n) {
  $('count').textContent = n === null || n === undefined ? '–' : String(n);
  state.countAt = typeof n === 'number' ? Date.now() : 0;
  renderSteady();
  sample(n);
}

/** How long the count has not moved: a reload elsewhere leaves it alone. */
function renderSteady() {
  const s = state.countAt ? Math.floor((Date.now() - state.countAt) / 1000) : -1;
  $('f-steady').textContent = s < 0 ? '–' : s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function sample(v) {
  if (typeof v !== 'number') return;
  const now = Date.now();
  const last = state.samples[state.samples.length - 1];
  if (last && last.v === v) return;
  state.samples.push({ t: now, v });
  const keep = now - 5 * 60 * 1000;
  while (state.samples.length > 2 && state.samples[1].t < keep) state.samples.shift();
  drawChart();
}

/** A step chart of the realtime count, window from 20 s up to 5 min. */
function drawChart() {
  const svg = $('chart');
  // Drawn at the chart's own pixel width, so that its text keeps its size.
  const W = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600);
  const H = 160;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const padL = 28;
  const padR = 8;
  const padT = 10;
  const padB = 22;
  const s = state.samples;
  const now = Date.now();
  if (s.length === 0) {
    svg.innerHTML = `<line class="grid-line" x1="${padL}" x2="${W - padR}" y1="${H - padB}" y2="${H - padB}"/>` +
      `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text>`;
    return;
  }
  const span = Math.min(5 * 60 * 1000, Math.max(20 * 1000, now - s[0].t));
  const t0 = now - span;
  const max = Math.max(1, ...s.map((p) => p.v));
  const step = max <= 5 ? 1 : max <= 20 ? 5 : 10 ** Math.floor(Math.log10(max));
  const top = Math.ceil(max / step) * step;
  const x = (t) => padL + ((Math.max(t, t0) - t0) / span) * (W - padL - padR);
  const y = (v) => padT + (1 - v / top) * (H - padT - padB);
  let d = '';
  let prev = null;
  for (const p of s) {
    if (prev === null) d += `M${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    else d += `H${x(p.t).toFixed(1)}V${y(p.v).toFixed(1)}`;
    prev = p;
  }
  d += `H${x(now).toFixed(1)}`;
  const area = `${d}V${y(0)}H${x(s[0].t).toFixed(1)}Z`;
  const grid = [0, top / 2, top]
    .filter((v, i, a) => a.indexOf(v) === i && Number.isInteger(v))
    .map((v) => `<line class="grid-line" x1="${padL}" x2="${W - padR}" y1="${y(v)}" y2="${y(v)}"/><text x="${padL - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`)
    .join('');
  const label = span >= 60000 ? `${Math.round(span / 60000)} min ago` : `${Math.round(span / 1000)} s ago`;
  svg.innerHTML = `${grid}<path class="area" d="${area}"/><path class="line" d="${d}"/>` +
    `<text x="${padL}" y="${H - 4}">${label}</text><text x="${W - padR}" y="${H - 4}" text-anchor="end">now</text>`;
  $('chart-caption').textContent = `Realtime count, last ${label.replace(' ago', '')}`;
}
setInterval(() => {
  drawChart();
  renderSteady();
}, 1000);
addEventListener('resize', drawChart);

/** HH:MM in the viewer's time zone, 00-23 whatever the locale's habit. */
const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });

function setDashboard(d) {
  const today = d.today_visitors ?? {};
  $('d-realtime').textContent = d.realtime_count ?? '–';
  $('d-auth').textContent = today.authenticated_visitors ?? '–';
  $('d-anon').textContent = today.anonymous_visitors ?? '–';
  $('d-total').textContent = today.total_unique_visitors ?? '–';
  renderPeak(d.peak_today);
  sample(d.realtime_count);
  // A count above the chart's current bucket: raise its bar now (the
  // server recorded that count too), and refresh the rest soon.
  const points = state.history.data?.points;
  const last = points?.[points.length - 1];
  if (last && typeof d.realtime_count === 'number' && d.realtime_count > last.peak) {
    const bucketMs = state.history.step === 'minute' ? 60e3 : 3600e3;
    if (Date.now() < last.time.getTime() + bucketMs) {
      last.peak = d.realtime_count;
      drawHistory();
    }
    refreshHistorySoon();
  }
}

/**
 * Today's peak and when it was first reached (docs/protocol.md, peak
 * today: `at` is RFC 3339), as "Peak today: N at HH:MM" in local time.
 * @param {{count: number, at: string} | undefined} peak
 */
function renderPeak(peak) {
  const tile = $('d-peak-tile');
  if (!peak) {
    $('d-peak').textContent = '–';
    $('d-peak-at').textContent = '';
    tile.removeAttribute('title');
    tile.removeAttribute('aria-label');
    delete tile.dataset.at;
    return;
  }
  const at = peak.count > 0 ? hhmm(peak.at) : '';
  $('d-peak').textContent = String(peak.count);
  $('d-peak-at').textContent = at ? `at ${at}` : 'nobody yet today';
  const label = at ? `Peak today: ${peak.count} at ${at}` : 'Peak today: nobody yet';
  tile.title = label;
  tile.setAttribute('aria-label', label);
  tile.dataset.at = peak.at;
}

function resetDashboard(locked) {
  for (const id of ['d-realtime', 'd-auth', 'd-anon', 'd-total']) $(id).textContent = '–';
  renderPeak(undefined);
  $('dash-note').hidden = !locked;
  $('dash-note').textContent = state.guest
    ? 'Dashboards never admit guests: connect as a moderator or admin to see today\'s visitors and the analytics metrics.'
    : 'Connect as a moderator or admin to see today\'s visitors and the analytics metrics.';
  $('dashboard-card').classList.toggle('locked', locked);
}

function renderMetrics() {
  const ul = $('metrics');
  ul.textContent = '';
  if (state.metrics.size === 0) {
    ul.innerHTML = '<li class="empty muted">No metric yet.</li>';
    return;
  }
  const rows = [...state.metrics].sort((a, b) => String(b[1].timestamp).localeCompare(String(a[1].timestamp)));
  for (const [name, m] of rows) {
    const li = document.createElement('li');
    li.dataset.metric = name;
    const n = document.createElement('span');
    n.className = 'name';
    n.textContent = name;
    const v = document.createElement('span');
    v.className = 'value';
    const obj = m.value !== null && typeof m.value === 'object';
    v.className = obj ? 'value obj' : 'value';
    v.textContent = obj ? JSON.stringify(m.value) : String(m.value);
    const t = document.createElement('time');
    t.textContent = m.timestamp ? new Date(m.timestamp).toLocaleTimeString([], { hour12: false }) : '';
    li.append(n, v, t);
    ul.append(li);
  }
}

// ---------------------------------------------------------------- history

const HISTORY = {
  hour: { buckets: 24, ms: 3600 * 1000, title: 'Last 24 hours', unit: 'hour', tickEvery: 6 },
  minute: { buckets: 60, ms: 60 * 1000, title: 'Last 60 minutes', unit: 'minute', tickEvery: 15 },
};

/** Shows the history chart and loads it now and every minute (dashboard viewers only). */
function startHistory() {
  stopHistory();
  $('history').hidden = false;
  renderHistoryRange();
  loadHistory();
  state.history.refresh = setInterval(loadHistory, 60 * 1000);
}

function stopHistory() {
  const h = state.history;
  clearInterval(h.refresh);
  clearTimeout(h.soon);
  h.refresh = h.soon = 0;
  h.inflight?.abort();
  h.inflight = null;
  h.data = null;
  $('history').hidden = true;
  $('history-chart').textContent = '';
  $('history-chart').dataset.state = 'idle';
}

/** A refresh for a new peak: at once, or 5 s after the last load at the earliest. */
function refreshHistorySoon() {
  const h = state.history;
  if (h.soon || !state.dashboard) return;
  const wait = Math.max(0, h.loadedAt + 5000 - Date.now());
  h.soon = setTimeout(() => {
    h.soon = 0;
    loadHistory();
  }, wait);
}

/**
 * Loads the last 24 hours by the hour (or 60 minutes by the minute) through
 * the dashboard client's visitorHistory, with its credential
 * (docs/protocol.md, history): from a time inside the oldest bucket to now,
 * so the answer has exactly 24 (60) points, the last the current bucket.
 */
async function loadHistory() {
  const h = state.history;
  const client = state.dashboard;
  if (!client) return;
  h.inflight?.abort();
  const ctrl = new AbortController();
  h.inflight = ctrl;
  const { step } = h;
  const spec = HISTORY[step];
  const to = new Date();
  const from = new Date(to.getTime() - (spec.buckets - 1) * spec.ms);
  const svg = $('history-chart');
  if (!h.data) svg.dataset.state = 'loading';
  try {
    const data = await client.visitorHistory({ from, to, step, signal: ctrl.signal });
    if (h.inflight !== ctrl || state.dashboard !== client) return;
    h.data = data;
    h.loadedAt = Date.now();
    svg.dataset.from = from.toISOString();
    svg.dataset.to = to.toISOString();
    drawHistory();
  } catch (err) {
    if (ctrl.signal.aborted || h.inflight !== ctrl) return;
    h.loadedAt = Date.now();
    const why = err?.name === 'FootfallHTTPError' ? `HTTP ${err.status} ${err.error}: ${err.message}` : String(err?.message ?? err);
    svg.dataset.state = 'error';
    svg.setAttribute('aria-label', `Visitor history unavailable: ${why}`);
    $('history-status').textContent = `History unavailable (${why}).`;
    $('history-status').classList.add('bad');
    log('error', `history: ${why}`, 'status');
  } finally {
    if (h.inflight === ctrl) h.inflight = null;
  }
}

function renderHistoryRange() {
  const spec = HISTORY[state.history.step];
  $('history-title').textContent = spec.title;
  $('history-unit').textContent = spec.unit;
  $('history-hours').setAttribute('aria-pressed', String(state.history.step === 'hour'));
  $('history-minutes').setAttribute('aria-pressed', String(state.history.step === 'minute'));
}

for (const [id, step] of /** @type {const} */ ([['history-hours', 'hour'], ['history-minutes', 'minute']])) {
  $(id).addEventListener('click', () => {
    if (state.history.step === step) return;
    state.history.step = step;
    state.history.data = null;
    renderHistoryRange();
    $('history-chart').textContent = '';
    loadHistory();
  });
}

const fmtAvg = (x) => (Math.round(x * 10) / 10).toLocaleString([], { maximumFractionDigits: 1 });

/**
 * Bars of each bucket's peak, a line of its average. The SVG says what it
 * shows: aria-label with the figures, a <title> per bar, and data-* for
 * scripts (points, last-peak, max-peak, step, from, to; per bar time, peak,
 * average).
 */
function drawHistory() {
  const svg = $('history-chart');
  const data = state.history.data;
  if (!data) return;
  const spec = HISTORY[data.step] ?? HISTORY.hour;
  const pts = data.points;
  const W = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600);
  const H = 150;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const padL = 28;
  const padR = 8;
  const padT = 10;
  const padB = 22;
  const n = Math.max(1, pts.length);
  const slot = (W - padL - padR) / n;
  const bw = Math.max(1, Math.min(slot * 0.72, slot - 1));
  const max = Math.max(1, ...pts.map((p) => Math.max(p.peak, p.average)));
  const step = max <= 5 ? 1 : max <= 20 ? 5 : 10 ** Math.floor(Math.log10(max));
  const top = Math.ceil(max / step) * step;
  const y = (v) => padT + (1 - v / top) * (H - padT - padB);
  const cx = (i) => padL + slot * i + slot / 2;
  const end = (p, i) => pts[i + 1]?.time ?? new Date(p.time.getTime() + spec.ms);
  const span = (p, i) => `${hhmm(p.time)}–${hhmm(end(p, i))}`;

  const grid = [0, top / 2, top]
    .filter((v, i, a) => a.indexOf(v) === i && Number.isInteger(v))
    .map((v) => `<line class="grid-line" x1="${padL}" x2="${W - padR}" y1="${y(v)}" y2="${y(v)}"/><text x="${padL - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`)
    .join('');
  const bars = pts.map((p, i) => {
    const h = Math.max(p.peak > 0 ? 2 : 1, y(0) - y(p.peak));
    const cls = `bar${p.peak === 0 ? ' zero' : ''}${i === pts.length - 1 ? ' now' : ''}`;
    const what = i === pts.length - 1 ? `${span(p, i)} (so far)` : span(p, i);
    return `<rect class="${cls}" x="${(cx(i) - bw / 2).toFixed(1)}" y="${(y(0) - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" rx="${Math.min(2, bw / 3).toFixed(1)}"` +
      ` data-time="${p.time.toISOString()}" data-peak="${p.peak}" data-average="${p.average}"><title>${what}: peak ${p.peak}, average ${fmtAvg(p.average)}</title></rect>`;
  }).join('');
  const avg = pts.length > 1
    ? `<path class="avg" d="${pts.map((p, i) => `${i ? 'L' : 'M'}${cx(i).toFixed(1)},${y(p.average).toFixed(1)}`).join('')}"/>`
    : '';
  // Ticks on round hours (every 6) or minutes (every 15) of local time;
  // where footfall's hours do not start on the viewer's round hours (its
  // FOOTFALL_TIMEZONE is half an hour off), every 6th bar back from now.
  const unit = data.step === 'minute' ? (t) => t.getMinutes() : (t) => t.getHours();
  const aligned = pts.some((p) => p.time.getSeconds() === 0 && (data.step === 'minute' || p.time.getMinutes() === 0));
  const ticks = pts.map((p, i) => {
    const t = p.time;
    const on = aligned ? (data.step === 'minute' || t.getMinutes() === 0) && unit(t) % spec.tickEvery === 0 : (pts.length - 1 - i) % spec.tickEvery === 0;
    if (!on) return '';
    const x = Math.min(W - padR - 14, Math.max(padL + 14, cx(i)));
    return `<text x="${x.toFixed(1)}" y="${H - 5}" text-anchor="middle">${hhmm(t)}</text>`;
  }).join('');
  svg.innerHTML = `${grid}${bars}${avg}${ticks}`;

  const last = pts[pts.length - 1];
  const best = pts.reduce((a, p) => (a === null || p.peak > a.peak ? p : a), null);
  const bestAt = best ? span(best, pts.indexOf(best)) : '';
  const summary = !last
    ? 'no data'
    : best.peak === 0
      ? `nobody present in the last ${spec.buckets} ${spec.unit}s`
      : `highest peak ${best.peak} (${bestAt}); this ${spec.unit} so far: peak ${last.peak}, average ${fmtAvg(last.average)}`;
  svg.setAttribute('aria-label', `Visitors per ${spec.unit}, ${spec.title.toLowerCase()}, ${pts.length} bars: ${summary}.`);
  Object.assign(svg.dataset, {
    state: 'ready',
    step: data.step,
    points: String(pts.length),
    lastPeak: last ? String(last.peak) : '',
    maxPeak: best ? String(best.peak) : '',
  });
  $('history-status').classList.remove('bad');
  $('history-status').textContent = best && best.peak > 0 ? `Highest: ${best.peak} (${bestAt}) · updated ${hhmm(Date.now())}` : `Nobody yet · updated ${hhmm(Date.now())}`;
}
addEventListener('resize', () => {
  if (state.history.data) drawHistory();
});

// ---------------------------------------------------------------- connect

/** Whether a token lets its holder open the dashboard of community. */
function dashboardAllowed(token, community, role) {
  if (state.guest) return false; // dashboards never admit guests
  if (state.dev && !$('token').value.trim()) return role === 'moderator' || role === 'admin';
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    if (claims.role === 'admin') return true;
    const roles = claims.communities ?? {};
    const r = roles[community] ?? roles[community.toLowerCase()];
    return r === 'moderator' || r === 'admin';
  } catch {
    return false;
  }
}

function disconnect() {
  $('grace-note').hidden = true;
  stopHistory();
  state.visitors?.close();
  state.dashboard?.close();
  state.visitors = state.dashboard = null;
  $('connect').disabled = false;
  $('disconnect').disabled = true;
  $('request-count').disabled = true;
}

async function connect() {
  disconnect();
  const community = $('community').value.trim().toLowerCase();
  const role = $('role').value;
  const transport = $('transport-choice').value;
  const pasted = $('token').value.trim();
  if (!/^[0-9a-f-]+$/.test(community)) {
    $('status-detail').textContent = 'A community id is made of hex digits and dashes.';
    return;
  }
  state.community = community;
  const guest = asGuest();
  state.guest = guest;
  $('connect').disabled = true;
  $('community-label').textContent = `community ${community}${guest ? ', as a guest' : ''}`;
  history.replaceState(null, '', `?${new URLSearchParams({ community, ...(guest ? { guest: '1' } : state.dev && !pasted ? { role } : {}), transport })}`);

  let token = guest ? '' : pasted;
  /** @type {(() => Promise<string>) | undefined} */
  let getToken;
  if (guest) {
    // No token, no getToken: the client sends no credential and footfall
    // admits the page as a guest if the community is public.
    const listed = state.publicCommunities;
    const known = listed && !listed.includes('*') && !listed.includes(community) ? ' footfall says this community is not public: expect 4001.' : '';
    $('identity').textContent = `You are a guest, named by this browser's footfall_vid cookie (HttpOnly: this page cannot read it).${known}`;
  } else if (state.dev && !pasted) {
    getToken = () => mint(community, role);
    try {
      token = await getToken();
    } catch (err) {
      $('status-detail').textContent = String(err.message ?? err);
      $('connect').disabled = false;
      return;
    }
    const exp = tokenExpiry(token);
    $('identity').textContent = `You are ${state.sub} (${role}), a dev token minted by /dev/token${exp ? `, valid until ${new Date(exp).toLocaleTimeString([], { hour12: false })}` : ''}.`;
  } else {
    if (!token) {
      $('status-detail').textContent = 'Paste a token (JWT) first.';
      $('connect').disabled = false;
      return;
    }
    // On 4004, take the token field again if it was changed.
    let used = token;
    getToken = async () => {
      const v = $('token').value.trim();
      if (!v || v === used) throw new Error('the token expired: paste a fresh one and connect again');
      used = v;
      return v;
    };
    $('identity').textContent = 'Using the pasted token.';
  }

  const common = {
    community,
    token,
    getToken,
    transport,
    pollInterval: numParam('poll'),
    climbAfter: numParam('climb'),
    maxClimbAfter: numParam('climb') && numParam('climb') * 2,
  };
  for (const k of Object.keys(common)) if (common[k] === undefined) delete common[k];

  state.samples = [];
  state.metrics.clear();
  renderMetrics();
  setCount(null);
  drawChart();

  const v = new FootfallClient({ ...common, stream: 'visitors' });
  state.visitors = v;
  facts.since = facts.messages = facts.reconnects = 0;
  facts.prev = '';
  renderFacts(null);
  v.on('count', (n) => setCount(n));
  v.on('status', (d) => {
    setConn(d);
    if (d.status === 'connected' || d.status === 'stopped' || d.status === 'closed') renderGrace(d.status === 'connected');
    if (d.status === 'connected' && !facts.since) facts.since = Date.now();
    if (d.status === 'reconnecting' && facts.prev === 'connected') facts.reconnects++;
    facts.prev = d.status;
    if (d.status === 'stopped' || d.status === 'closed') facts.since = 0;
    renderFacts();
    if (d.status !== 'connected') log('status', `visitors: ${d.status}${d.code ? ` ${d.code}` : ''}${d.reason ? ` ${d.reason}` : ''}`, 'status');
    if (d.status === 'stopped' || d.status === 'closed') {
      $('connect').disabled = false;
    }
  });
  v.on('transport', (t) => {
    $('transport').textContent = t ?? 'none';
    renderFacts(t);
    if (t) log('status', `visitors: transport ${t}`, 'status');
  });
  v.on('message', (m, info) => {
    facts.messages++;
    renderFacts();
    log(`visitors·${short[info.transport]}`, info.raw);
  });
  $('disconnect').disabled = false;
  $('request-count').disabled = false;
  v.connect();

  const allowed = dashboardAllowed(token, community, role);
  resetDashboard(!allowed);
  if (allowed) {
    const d = new FootfallClient({ ...common, stream: 'dashboard' });
    state.dashboard = d;
    d.on('dashboard', setDashboard);
    d.on('analytics', (a) => {
      state.metrics.set(a.metric, { value: a.value, timestamp: a.timestamp });
      renderMetrics();
    });
    d.on('status', (s) => {
      if (s.status !== 'connected') log('status', `dashboard: ${s.status}${s.code ? ` ${s.code}` : ''}${s.reason ? ` ${s.reason}` : ''}`, 'status');
    });
    d.on('message', (m, info) => log(`dashboard·${short[info.transport]}`, info.raw));
    d.connect();
    startHistory();
  }
  setDevButtons();
}

/** Whether the form says "guest (no token)". */
const asGuest = () => $('as-guest').checked;

/** Shows the token fields or the guest hint, as the choice says. */
function renderAs() {
  const guest = asGuest();
  for (const el of document.querySelectorAll('.token-only')) el.hidden = guest || (el.classList.contains('dev-only') && !state.dev);
  for (const el of document.querySelectorAll('.guest-only')) el.hidden = !guest;
  $('token').required = !state.dev && !guest;
}
for (const el of document.querySelectorAll('input[name="as"]')) el.addEventListener('change', renderAs);

$('connect-form').addEventListener('submit', (e) => {
  e.preventDefault();
  connect();
});
$('disconnect').addEventListener('click', () => disconnect());
$('request-count').addEventListener('click', () => state.visitors?.requestCount());

// ---------------------------------------------------------------- simulation

function setDevButtons() {
  const on = state.dev && !!state.apiKey && !!state.community;
  $('anon-join').disabled = !on;
  $('anon-leave').disabled = !on || state.sims.length === 0;
  $('metric-post').disabled = !on;
  $('anon-status').textContent = state.sims.length === 0
    ? 'No simulated visitor.'
    : `${state.sims.length} simulated anonymous visitor${state.sims.length > 1 ? 's' : ''} (kept present by heartbeats).`;
}

async function simulate(action) {
  try {
    if (action === 'join') {
      const id = `anon-${state.sub.slice(4)}-${++state.simSeq}`;
      state.sims.push(id);
      setDevButtons();
      await service('/visitor-events', { visitor_id: id, authenticated: false, action: 'join' });
    } else {
      const id = state.sims.pop();
      setDevButtons();
      if (id) await service('/visitor-events', { visitor_id: id, authenticated: false, action: 'leave' });
    }
  } catch (err) {
    log('error', String(err.message ?? err), 'status');
  }
  // Service-API visitors stay present for the presence TTL after their last
  // sign of life: keep them alive while this page is open. One steady timer:
  // restarting it at every click would let quick clicks put off every
  // heartbeat past the TTL of the first visitor.
  if (state.sims.length === 0) {
    clearInterval(state.simTimer);
    state.simTimer = 0;
  } else if (!state.simTimer) {
    state.simTimer = setInterval(() => {
      const beats = state.sims.map((id) => ({ visitor_id: id, authenticated: false, action: 'heartbeat' }));
      if (beats.length) service('/visitor-events', beats).catch((err) => log('error', String(err.message ?? err), 'status'));
    }, 2000);
  }
}
$('anon-join').addEventListener('click', () => simulate('join'));
$('anon-leave').addEventListener('click', () => simulate('leave'));
$('metric-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const metric = $('metric-name').value.trim();
  const raw = $('metric-value').value.trim();
  const value = raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  try {
    await service('/metrics', { metric, value });
  } catch (err) {
    log('error', String(err.message ?? err), 'status');
  }
});
addEventListener('pagehide', () => {
  if (state.sims.length && state.apiKey) {
    const leaves = state.sims.map((id) => ({ visitor_id: id, authenticated: false, action: 'leave' }));
    service('/visitor-events', leaves, { keepalive: true }).catch(() => {});
  }
  disconnect();
});

// ---------------------------------------------------------------- start

async function start() {
  if (params.get('community')) $('community').value = params.get('community');
  const t = params.get('transport');
  if (t && [...$('transport-choice').options].some((o) => o.value === t)) $('transport-choice').value = t;
  const role = params.get('role');
  if (role && [...$('role').options].some((o) => o.value === role)) $('role').value = role;

  const guest = params.get('guest') === '1';
  if (guest) $('as-guest').checked = true;

  await loadDevInfo();
  for (const el of document.querySelectorAll('.dev-only')) el.hidden = !state.dev;
  $('dev-badge').hidden = !state.dev;
  $('token-hint').textContent = state.dev ? '(optional: empty mints a dev token for the role)' : '(JWT, required)';
  $('as-token-label').textContent = state.dev ? 'signed in (dev token or pasted JWT)' : 'signed in (pasted JWT)';
  renderAs();
  setDevButtons();
  drawChart();
  if (params.get('community') && (guest || (state.dev && role))) connect();
}
start();
