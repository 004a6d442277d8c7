// footfall-client.js: the browser client of footfall's live visitor counts.
//
// A plain ES module with JSDoc types: serve it as it is (footfall serves it at
// /footfall-client.js) or import it from an app's bundler. No dependencies.
//
//   import { FootfallClient } from './footfall-client.js';
//   const client = new FootfallClient({
//     url: 'https://footfall.example.com',       // default: the page's origin
//     community: '123e4567-e89b-12d3-a456-426614174000',
//     token: jwt,                                  // or leave it out and give getToken
//     getToken: async () => fetchFreshJwt(),       // asked on close code 4004 (expired)
//   });                                            // neither: no credential (see below)
//   client.on('count', (n) => render(n));
//   client.on('status', (s) => showStatus(s));    // connecting, connected, ...
//   client.connect();
//   // later: client.close();
//
// Transports, best first: WebSocket (token in the `bearer` subprotocol), SSE
// (EventSource, token in ?token=, resumes with the last event id), REST polling
// (Authorization header, If-None-Match). With transport 'auto' the client falls
// back by itself when a transport cannot connect and climbs back up later; see
// TransportLadder below for the rules.
//
// Without token and getToken the client sends no credential at all (a
// WebSocket without subprotocol, SSE without ?token=, REST without
// Authorization) and the server decides by the cookies the browser sends: on
// a public community footfall admits the page as a guest, whom its
// footfall_vid cookie names, so that the tabs of one browser count once; a
// footfall_session cookie, or a platform's own cookies where footfall asks
// the platform, work the same way; elsewhere it refuses with 4001. Such a
// client sends cookies on SSE and REST also when footfall is on another
// origin (withCredentials), which footfall must allow for the page's origin.

/** @typedef {'websocket' | 'sse' | 'polling'} Transport */
/** @typedef {'auto' | Transport} TransportChoice */
/** @typedef {'visitors' | 'dashboard'} StreamName */
/**
 * @typedef {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'paused' | 'stopped' | 'closed'} Status
 * idle: not started; connecting: first attempt; connected: receiving; reconnecting:
 * waiting for or making another attempt; paused: polling in a hidden tab; stopped:
 * gave up for good (4001-4003, or no usable token; 4001 without a token means
 * the community does not admit guests); closed: close() was called.
 */
/**
 * @typedef {object} StatusDetail
 * @property {Status} status
 * @property {Transport | null} transport
 * @property {number} [code] close code or auth code (4001-4004), when there is one
 * @property {string} [reason]
 * @property {number} [retryIn] ms until the next attempt, while reconnecting
 */
/**
 * @typedef {object} TodayVisitors
 * @property {number} authenticated_visitors
 * @property {number} anonymous_visitors
 * @property {number} total_unique_visitors
 */
/**
 * @typedef {object} PeakToday
 * @property {number} count
 * @property {string} at
 */
/**
 * @typedef {object} DashboardFigures
 * @property {TodayVisitors} today_visitors
 * @property {number} realtime_count
 * @property {string} community_id
 * @property {PeakToday} [peak_today]
 * @property {string} [timestamp]
 */
/**
 * @typedef {object} AnalyticsUpdate
 * @property {string} metric
 * @property {unknown} value
 * @property {string} [timestamp]
 */
/** @typedef {'minute' | 'hour' | 'day'} HistoryStep */
/**
 * @typedef {object} HistoryOptions
 * @property {Date | string | number} [from] start (a Date, an RFC 3339 string, or ms since the epoch); default
 *   (footfall's): an hour (minute), a day (hour) or 30 days (day) before `to`
 * @property {Date | string | number} [to] end, likewise; default: now
 * @property {HistoryStep} [step] bucket size (default 'hour')
 * @property {AbortSignal} [signal] aborts the request
 */
/**
 * @typedef {object} HistoryPoint
 * @property {Date} time the bucket's start
 * @property {number} peak the highest count in the bucket (0: nobody came)
 * @property {number} average the time-weighted average count
 * @property {number} [authenticated_visitors] day points: distinct signed-in visitors
 * @property {number} [anonymous_visitors] day points: distinct anonymous visitors
 * @property {number} [total_unique_visitors] day points: both
 * @property {Date | null} [peak_at] day points: when the peak was first reached
 */
/**
 * @typedef {object} VisitorHistory
 * @property {string} community_id
 * @property {HistoryStep} step
 * @property {HistoryPoint[]} points oldest first; the last is the current bucket, so far
 */
/**
 * @typedef {object} ServerMessage
 * @property {string} type
 * @property {number} [count]
 * @property {number} [change]
 * @property {string} [community_id]
 * @property {string} [timestamp]
 * @property {any} [data]
 * @property {string} [metric]
 * @property {unknown} [value]
 * @property {string} [code]
 * @property {string} [message]
 */
/**
 * @typedef {object} Clock
 * @property {() => number} now
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(id: any) => void} clearTimeout
 * @property {() => number} random in [0, 1)
 */
/**
 * @typedef {object} ClientOptions
 * @property {string} community the community id
 * @property {string} [url] the gateway's base URL, http(s)://host[:port][/prefix]; default: the page's origin
 * @property {StreamName} [stream] 'visitors' (default) or 'dashboard' (moderators, admins)
 * @property {string} [token] a JWT; without it getToken is asked before the first attempt.
 *   Without both, the client connects with no credential: a guest of a public community
 *   (the footfall_vid cookie), or whoever the browser's cookies make it; 4001 otherwise
 * @property {(reason: 'initial' | 'expired' | 'refresh') => string | Promise<string>} [getToken]
 *   returns a fresh JWT; asked on 4004 (expired), before expiry when the token has an
 *   `exp` (sent on an open WebSocket as {"type":"auth"}), and at start without token
 * @property {boolean} [withCredentials] send cookies with SSE (EventSource withCredentials) and
 *   REST (fetch credentials 'include') when footfall is on another origin than the page; it
 *   must then allow that origin by name (an allow-all `*` admits no credentials). Default:
 *   true without token and getToken (cookies are then the credential), false with them.
 *   Same-origin requests send cookies either way; WebSocket handshakes always do
 * @property {TransportChoice} [transport] 'auto' (default): WebSocket, then SSE, then polling
 * @property {number} [pingInterval] ms between WebSocket pings (25000)
 * @property {number} [pongTimeout] ms to wait for an answer to a ping before reconnecting (10000)
 * @property {number} [pollInterval] ms between polls (5000); keep it under the presence TTL
 * @property {number} [connectTimeout] ms an attempt may take to open (10000)
 * @property {number} [backoffBase] first reconnect delay ceiling, ms (500)
 * @property {number} [backoffCap] reconnect delay ceiling, ms (30000)
 * @property {number} [stableAfter] ms a connection must last to reset the backoff (10000)
 * @property {number} [failuresBeforeFallback] failed attempts before 'auto' falls back (2)
 * @property {number} [climbAfter] ms before 'auto' tries a better transport again (60000), doubling per failure
 * @property {number} [maxClimbAfter] cap of that wait, ms (600000)
 * @property {number} [refreshBefore] ms before `exp` to ask getToken for a fresh token (60000)
 * @property {(count: number, msg: ServerMessage) => void} [onCount]
 * @property {(detail: StatusDetail) => void} [onStatus]
 * @property {(transport: Transport | null) => void} [onTransport]
 * @property {(figures: DashboardFigures) => void} [onDashboard]
 * @property {(update: AnalyticsUpdate) => void} [onAnalytics]
 * @property {(msg: ServerMessage, info: {transport: Transport, raw: string}) => void} [onMessage]
 * @property {(err: {code?: number | string, reason?: string, message?: ServerMessage}) => void} [onError]
 * @property {any} [WebSocket] WebSocket implementation (default: globalThis.WebSocket)
 * @property {any} [EventSource] EventSource implementation (default: globalThis.EventSource)
 * @property {typeof fetch} [fetch] fetch implementation (default: globalThis.fetch)
 * @property {any} [document] for visibility (default: globalThis.document); null: always visible
 * @property {Partial<Clock>} [clock] timers and randomness (tests)
 */

/** The transports, best first. @type {readonly Transport[]} */
export const TRANSPORTS = Object.freeze(/** @type {Transport[]} */ (['websocket', 'sse', 'polling']));

/** Server message types, which SSE sends as event names. */
const SSE_EVENT_TYPES = ['visitor_count', 'visitor_joined', 'visitor_left', 'dashboard_update', 'analytics_update', 'pong', 'auth_ok'];

// ---------------------------------------------------------------------------
// Pure logic: backoff, close codes, the fallback ladder. Exported for tests.

/**
 * The delay before reconnect attempt number `attempt` (0 for the first retry):
 * exponential backoff with full jitter, a random delay in
 * [0, min(cap, base * 2^attempt)).
 * @param {number} attempt
 * @param {{base?: number, cap?: number}} [opts]
 * @param {() => number} [random]
 * @returns {number} ms
 */
export function backoffDelay(attempt, { base = 500, cap = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}

/**
 * What a WebSocket close code (or an auth code from an HTTP error body) means
 * for the client: 'stop' for 4001-4003 (no credential, bad credential, not
 * allowed: retrying cannot help), 'refresh' for 4004 (expired: get a fresh
 * token, then reconnect), 'retry' for everything else (1001 shutdown, 1006
 * network, 1011, 1013 slow consumer, ...).
 * @param {number | undefined} code
 * @returns {'stop' | 'refresh' | 'retry'}
 */
export function closeAction(code) {
  if (code === 4001 || code === 4002 || code === 4003) return 'stop';
  if (code === 4004) return 'refresh';
  return 'retry';
}

/**
 * What an HTTP answer of the SSE or REST endpoints means: 'ok' (200, 304),
 * 'stop' / 'refresh' for auth outcomes (401/403 with `code` 4001-4004 in the
 * JSON body; a 401/403 without a code stops too), 'stop' for other client
 * errors (404: unknown community), 'retry' for 408, 425, 429 and 5xx.
 * @param {number} status
 * @param {number} [code] the body's `code`
 * @returns {'ok' | 'stop' | 'refresh' | 'retry'}
 */
export function httpAction(status, code) {
  if ((status >= 200 && status < 300) || status === 304) return 'ok';
  if (status === 401 || status === 403) return closeAction(code) === 'refresh' ? 'refresh' : 'stop';
  if (status === 408 || status === 425 || status === 429 || status >= 500) return 'retry';
  if (status >= 400) return 'stop';
  return 'retry';
}

/**
 * TransportLadder decides which transport to use: the fallback state machine.
 *
 * - The order is WebSocket, SSE, polling for 'auto', or just the chosen one.
 * - `pick` gives the best transport that is not blocked.
 * - `failure` records an attempt that ended before it was usable. After
 *   `failuresBeforeFallback` failures in a row, the transport is blocked for
 *   its penalty (first `climbAfter`), which then doubles up to
 *   `maxClimbAfter`, and the next `pick` gives the next one down: the client
 *   falls back. A transport that was blocked once is blocked again by a
 *   single failure, until it proves stable. The last transport is never left.
 * - `stable` records a connection that lasted: it clears that transport's
 *   failures and penalty.
 * - `climbTarget` gives, once a better transport's block has run out, the
 *   one to probe from the current one; the client opens it beside the
 *   working connection and switches only when it delivers (so the visitor
 *   never leaves), or records a failure and stays.
 */
export class TransportLadder {
  /**
   * @param {{transport?: TransportChoice, failuresBeforeFallback?: number, climbAfter?: number, maxClimbAfter?: number}} [opts]
   */
  constructor({ transport = 'auto', failuresBeforeFallback = 2, climbAfter = 60000, maxClimbAfter = 600000 } = {}) {
    if (transport !== 'auto' && !TRANSPORTS.includes(transport)) {
      throw new TypeError(`footfall: unknown transport ${JSON.stringify(transport)}`);
    }
    /** @type {Transport[]} */
    this.order = transport === 'auto' ? [...TRANSPORTS] : [transport];
    this.threshold = Math.max(1, failuresBeforeFallback);
    this.climbAfter = climbAfter;
    this.maxClimbAfter = Math.max(climbAfter, maxClimbAfter);
    /** @type {Map<Transport, {failures: number, blockedUntil: number, penalty: number, tripped: boolean}>} */
    this.state = new Map(this.order.map((t) => [t, { failures: 0, blockedUntil: 0, penalty: climbAfter, tripped: false }]));
  }

  /** @param {Transport} t */
  #s(t) {
    const s = this.state.get(t);
    if (!s) throw new Error(`footfall: transport ${t} is not on this ladder`);
    return s;
  }

  /** @param {Transport} t */
  isLast(t) {
    return this.order[this.order.length - 1] === t;
  }

  /**
   * The best transport not blocked at `now`.
   * @param {number} now
   * @returns {Transport}
   */
  pick(now) {
    for (const t of this.order) {
      if (this.#s(t).blockedUntil <= now) return t;
    }
    return this.order[this.order.length - 1];
  }

  /**
   * Records a failed attempt of `t`. Returns true when it is now blocked
   * (the caller falls back at once instead of backing off).
   * @param {Transport} t
   * @param {number} now
   * @returns {boolean}
   */
  failure(t, now) {
    if (this.isLast(t)) return false;
    const s = this.#s(t);
    s.failures++;
    if (s.failures < (s.tripped ? 1 : this.threshold)) return false;
    s.failures = 0;
    s.tripped = true;
    s.blockedUntil = now + s.penalty;
    s.penalty = Math.min(s.penalty * 2, this.maxClimbAfter);
    return true;
  }

  /**
   * Records that `t` held a connection long enough: its slate is clean.
   * @param {Transport} t
   */
  stable(t) {
    const s = this.#s(t);
    s.failures = 0;
    s.tripped = false;
    s.penalty = this.climbAfter;
  }

  /**
   * The best transport above `current` whose block has run out, if any.
   * @param {Transport} current
   * @param {number} now
   * @returns {Transport | null}
   */
  climbTarget(current, now) {
    const i = this.order.indexOf(current);
    for (let j = 0; j < i; j++) {
      if (this.#s(this.order[j]).blockedUntil <= now) return this.order[j];
    }
    return null;
  }

  /**
   * When a transport above `current` may be tried again (null: none is above).
   * @param {Transport} current
   * @returns {number | null}
   */
  nextClimbAt(current) {
    const i = this.order.indexOf(current);
    let at = null;
    for (let j = 0; j < i; j++) {
      const b = this.#s(this.order[j]).blockedUntil;
      if (at === null || b < at) at = b;
    }
    return at;
  }
}

/**
 * The `exp` of a JWT in ms since the epoch, or null.
 * @param {string | undefined} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  if (!token) return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return typeof json.exp === 'number' ? json.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * The endpoints of one stream of one community.
 * @param {string} base http(s) base URL
 * @param {string} community
 * @param {StreamName} stream
 */
export function endpoints(base, community, stream) {
  const root = base.replace(/\/+$/, '');
  const id = encodeURIComponent(community);
  const seg = stream === 'dashboard' ? 'visitor-dashboard' : 'visitors';
  return {
    websocket: root.replace(/^http/i, 'ws') + `/ws/communities/${id}/${seg}/`,
    sse: root + `/sse/communities/${id}/${seg}/`,
    rest: root + (stream === 'dashboard' ? `/api/v1/communities/${id}/visitor-dashboard` : `/api/v1/communities/${id}/visitors/count`),
  };
}

// ---------------------------------------------------------------------------
// One-off REST requests (visitor history).

/**
 * A REST request footfall refused: the HTTP status and the error body of
 * docs/protocol.md, fine print ({"error":SLUG,"message":..,"code"?,"field"?}).
 */
export class FootfallHTTPError extends Error {
  /**
   * @param {number} status
   * @param {{error?: string, message?: string, code?: number, field?: string}} [body]
   */
  constructor(status, body = {}) {
    super(body.message || `HTTP ${status}`);
    this.name = 'FootfallHTTPError';
    /** The HTTP status. */
    this.status = status;
    /** The body's slug: invalid_query, unauthorized, forbidden, not_found, ... */
    this.error = typeof body.error === 'string' ? body.error : 'http_error';
    /** The auth code (4001-4004) of an authentication outcome. @type {number | undefined} */
    this.code = typeof body.code === 'number' ? body.code : undefined;
    /** The parameter a 400 names (from, to, step). @type {string | undefined} */
    this.field = typeof body.field === 'string' ? body.field : undefined;
  }
}

/**
 * A history bound as the endpoint takes it: RFC 3339, whole seconds, UTC
 * for a Date or a number; a string is sent as it is (footfall checks it).
 * @param {Date | string | number} t
 * @param {string} name
 */
function rfc3339(t, name) {
  if (typeof t === 'string') return t;
  if (typeof t !== 'number' && !(t instanceof Date)) throw new TypeError(`footfall: ${name} must be a Date, an RFC 3339 string or ms since the epoch`);
  const d = new Date(t instanceof Date ? t.getTime() : t);
  if (Number.isNaN(d.getTime())) throw new TypeError(`footfall: ${name} is not a valid time`);
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The history endpoint's JSON with its times as Dates.
 * @param {any} body
 * @returns {VisitorHistory}
 */
function historyOf(body) {
  const points = body.points.map((/** @type {any} */ p) => {
    const point = { ...p, time: new Date(p.time) };
    if ('peak_at' in p) point.peak_at = typeof p.peak_at === 'string' && p.peak_at ? new Date(p.peak_at) : null;
    return point;
  });
  return { ...body, points };
}

// ---------------------------------------------------------------------------
// Transports. Each opens one connection and reports through handlers:
//   open()                 the connection works (first open)
//   message(msg, raw)      a server message
//   end(outcome)           it is over: {kind: 'failed'|'dropped'|'stop'|'refresh', code?, reason?}
//                          failed = ended before it opened; dropped = ended after
//   paused(bool)           polling paused/resumed in a hidden tab
//   reconnecting()         SSE: EventSource is reconnecting by itself
//   reopened()             SSE: and it is back
// and returns {close(), send(obj) -> bool}.

/**
 * @typedef {object} Outcome
 * @property {'failed' | 'dropped' | 'stop' | 'refresh'} kind
 * @property {number} [code]
 * @property {string} [reason]
 */
/**
 * @typedef {object} Handlers
 * @property {() => void} open
 * @property {(msg: ServerMessage, raw: string) => void} message
 * @property {(o: Outcome) => void} end
 * @property {(paused: boolean) => void} paused
 * @property {() => void} reconnecting
 * @property {() => void} reopened
 */
/** @typedef {{close(): void, send(obj: object): boolean}} Connection */
/**
 * @typedef {object} TransportEnv
 * @property {ReturnType<typeof endpoints>} urls
 * @property {() => string} token the JWT to send; '' sends no credential
 * @property {boolean} withCredentials cookies on cross-origin SSE and REST
 * @property {Clock} clock
 * @property {Required<Pick<ClientOptions, 'pingInterval' | 'pongTimeout' | 'pollInterval' | 'connectTimeout'>>} opts
 * @property {any} WebSocket
 * @property {any} EventSource
 * @property {typeof fetch} fetch
 * @property {any} document
 * @property {() => string | null} lastEventId
 * @property {(id: string) => void} setLastEventId
 */

/**
 * The fetch options of a REST request: the token, if any, as Authorization;
 * cookies also cross-origin when withCredentials.
 * @param {TransportEnv} env
 * @param {Record<string, string>} [extra] more headers
 * @param {AbortSignal} [signal]
 * @param {string} [token] the token to send (default: the client's)
 * @returns {RequestInit}
 */
function restInit(env, extra = {}, signal, token = env.token()) {
  /** @type {RequestInit} */
  const init = { headers: token ? { Authorization: `Bearer ${token}`, ...extra } : { ...extra }, cache: 'no-store' };
  if (env.withCredentials) init.credentials = 'include';
  if (signal) init.signal = signal;
  return init;
}

/** @param {string} raw */
function parse(raw) {
  try {
    const m = JSON.parse(raw);
    return m && typeof m === 'object' && typeof m.type === 'string' ? m : null;
  } catch {
    return null;
  }
}

/**
 * The auth outcome of a REST request, for SSE (EventSource hides statuses).
 * @param {TransportEnv} env
 * @returns {Promise<{status: number, code?: number}>} status 0: network error
 */
async function probeREST(env) {
  const ctrl = typeof AbortController === 'function' ? new AbortController() : null;
  const timer = env.clock.setTimeout(() => ctrl?.abort(), env.opts.connectTimeout);
  try {
    const res = await env.fetch(env.urls.rest, restInit(env, {}, ctrl?.signal));
    let code;
    if (res.status >= 400) {
      try {
        code = (await res.json()).code;
      } catch {
        /* not JSON */
      }
    }
    return { status: res.status, code };
  } catch {
    return { status: 0 };
  } finally {
    env.clock.clearTimeout(timer);
  }
}

/**
 * @param {{status: number, code?: number}} r
 * @param {boolean} opened
 * @returns {Outcome}
 */
function outcomeOfHTTP(r, opened) {
  const a = r.status === 0 ? 'retry' : httpAction(r.status, r.code);
  if (a === 'stop') return { kind: 'stop', code: r.code ?? r.status, reason: `HTTP ${r.status}` };
  if (a === 'refresh') return { kind: 'refresh', code: 4004, reason: 'expired' };
  return { kind: opened ? 'dropped' : 'failed', reason: r.status ? `HTTP ${r.status}` : 'network error' };
}

/**
 * WebSocket: the token in the `bearer` subprotocol (no subprotocol without a
 * token), pings, close codes.
 * @param {TransportEnv} env
 * @param {Handlers} h
 * @returns {Connection}
 */
export function openWebSocket(env, h) {
  const { clock, opts } = env;
  let opened = false;
  let delivered = false; // the server always sends a first message: until then it is not working
  let done = false;
  /** @type {any} */
  let ws = null;
  /** @type {any} */
  let openTimer = null;
  /** @type {any} */
  let pingTimer = null;
  /** @type {any} */
  let pongTimer = null;

  const cleanup = () => {
    clock.clearTimeout(openTimer);
    clock.clearTimeout(pingTimer);
    clock.clearTimeout(pongTimer);
    openTimer = pingTimer = pongTimer = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  };
  /** @param {Outcome} o */
  const finish = (o) => {
    if (done) return;
    done = true;
    cleanup();
    try {
      ws?.close();
    } catch {
      /* already closing */
    }
    h.end(o);
  };
  const schedulePing = () => {
    pingTimer = clock.setTimeout(() => {
      pingTimer = null;
      if (done || ws.readyState !== 1) return;
      ws.send(JSON.stringify({ type: 'ping' }));
      pongTimer = clock.setTimeout(() => finish({ kind: 'dropped', reason: 'no answer to ping' }), opts.pongTimeout);
    }, opts.pingInterval);
  };

  try {
    const token = env.token();
    ws = token ? new env.WebSocket(env.urls.websocket, ['bearer', token]) : new env.WebSocket(env.urls.websocket);
  } catch (err) {
    clock.setTimeout(() => finish({ kind: 'failed', reason: String(err) }), 0);
    return { close() { done = true; }, send: () => false };
  }
  openTimer = clock.setTimeout(() => finish({ kind: 'failed', reason: 'connect timeout' }), opts.connectTimeout);
  ws.onopen = () => {
    opened = true;
    clock.clearTimeout(openTimer);
    openTimer = null;
    schedulePing();
    h.open();
  };
  ws.onmessage = (/** @type {{data: any}} */ e) => {
    // Any message shows the connection is alive: the pong wait is over.
    if (pongTimer !== null) {
      clock.clearTimeout(pongTimer);
      pongTimer = null;
      schedulePing();
    }
    if (typeof e.data !== 'string') return;
    const msg = parse(e.data);
    delivered = true;
    if (msg) h.message(msg, e.data);
  };
  ws.onerror = () => {}; // a close event follows
  ws.onclose = (/** @type {{code: number, reason: string}} */ e) => {
    const a = closeAction(e.code);
    if (a === 'stop') finish({ kind: 'stop', code: e.code, reason: e.reason });
    else if (a === 'refresh') finish({ kind: 'refresh', code: e.code, reason: e.reason });
    else finish({ kind: delivered ? 'dropped' : 'failed', code: e.code, reason: e.reason });
  };
  return {
    close() {
      if (done) return;
      done = true;
      cleanup();
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    },
    send(obj) {
      if (done || !opened || ws.readyState !== 1) return false;
      ws.send(JSON.stringify(obj));
      return true;
    },
  };
}

/**
 * SSE: EventSource with ?token= when there is a token (and ?last_event_id=
 * when resuming), withCredentials when asked. While
 * open, EventSource reconnects by itself and sends Last-Event-ID, so the
 * server replays what was missed; only when it gives up (or keeps failing)
 * does the client take over.
 * @param {TransportEnv} env
 * @param {Handlers} h
 * @returns {Connection}
 */
export function openSSE(env, h) {
  const { clock, opts } = env;
  const maxNativeRetries = 3;
  let opened = false;
  let delivered = false; // as for WebSocket: working once the first event arrived
  let done = false;
  let errors = 0; // errors since the last open
  /** @type {any} */
  let es = null;
  /** @type {any} */
  let openTimer = null;

  const u = new URL(env.urls.sse);
  const token = env.token();
  if (token) u.searchParams.set('token', token);
  const last = env.lastEventId();
  if (last) u.searchParams.set('last_event_id', last);

  const cleanup = () => {
    clock.clearTimeout(openTimer);
    openTimer = null;
    if (es) {
      es.onopen = null;
      try {
        es.close();
      } catch {
        /* closed */
      }
    }
  };
  /** @param {Outcome} o */
  const finish = (o) => {
    if (done) return;
    done = true;
    cleanup();
    h.end(o);
  };
  /** @param {any} e */
  const onEvent = (e) => {
    if (done) return;
    if (e.lastEventId) env.setLastEventId(e.lastEventId);
    const msg = parse(e.data);
    delivered = true;
    if (msg) h.message(msg, e.data);
  };

  try {
    es = env.withCredentials ? new env.EventSource(u.toString(), { withCredentials: true }) : new env.EventSource(u.toString());
  } catch (err) {
    clock.setTimeout(() => finish({ kind: 'failed', reason: String(err) }), 0);
    return { close() { done = true; }, send: () => false };
  }
  openTimer = clock.setTimeout(() => finish({ kind: 'failed', reason: 'connect timeout' }), opts.connectTimeout);
  es.onopen = () => {
    if (done) return;
    clock.clearTimeout(openTimer);
    openTimer = null;
    errors = 0;
    if (!opened) {
      opened = true;
      h.open();
    } else {
      h.reopened();
    }
  };
  for (const type of SSE_EVENT_TYPES) es.addEventListener(type, onEvent);
  es.addEventListener('message', onEvent);
  es.addEventListener('error', (/** @type {any} */ e) => {
    if (done) return;
    if (typeof e.data === 'string' && e.data) {
      // The server's own `event: error`: the stream ends after it.
      onEvent(e);
      const msg = parse(e.data);
      if (msg?.code === 'expired') finish({ kind: 'refresh', code: 4004, reason: 'expired' });
      return;
    }
    if (es.readyState === 2) {
      // EventSource gave up (an HTTP error or a wrong content type): ask
      // the REST endpoint, which answers the same auth outcomes, why.
      const wasOpen = delivered;
      cleanup();
      probeREST(env).then((r) => {
        if (done) return;
        // A REST endpoint that works means SSE itself is what fails here.
        finish(r.status === 200 || r.status === 304 ? { kind: wasOpen ? 'dropped' : 'failed', reason: 'event stream refused' } : outcomeOfHTTP(r, wasOpen));
      });
      return;
    }
    // readyState CONNECTING: a network error, EventSource retries by itself.
    errors++;
    if (!delivered) finish({ kind: 'failed', reason: 'network error' });
    else if (errors > maxNativeRetries) finish({ kind: 'dropped', reason: 'network error' });
    else h.reconnecting();
  });
  return {
    close() {
      if (done) return;
      done = true;
      cleanup();
    },
    send: () => false,
  };
}

/**
 * REST polling: GET the snapshot with Authorization (when there is a token)
 * and If-None-Match every pollInterval; paused while the tab is hidden.
 * @param {TransportEnv} env
 * @param {Handlers} h
 * @returns {Connection}
 */
export function openPolling(env, h) {
  const { clock, opts } = env;
  const doc = env.document;
  let opened = false;
  let done = false;
  let paused = false;
  let etag = '';
  /** @type {any} */
  let timer = null;
  let inflight = false;
  /** @type {AbortController | null} */
  let ctrl = null;

  const hidden = () => !!doc && doc.visibilityState === 'hidden';
  const onVisibility = () => {
    if (done || hidden() || !paused) return;
    paused = false;
    h.paused(false);
    clock.clearTimeout(timer);
    timer = null;
    tick();
  };
  const cleanup = () => {
    clock.clearTimeout(timer);
    timer = null;
    doc?.removeEventListener?.('visibilitychange', onVisibility);
    ctrl?.abort();
  };
  /** @param {Outcome} o */
  const finish = (o) => {
    if (done) return;
    done = true;
    cleanup();
    h.end(o);
  };
  const next = () => {
    if (!done) timer = clock.setTimeout(tick, opts.pollInterval);
  };
  const tick = async () => {
    timer = null;
    if (done || inflight) return;
    if (hidden() && opened) {
      paused = true;
      h.paused(true);
      return; // onVisibility resumes
    }
    inflight = true;
    ctrl = typeof AbortController === 'function' ? new AbortController() : null;
    const abortTimer = clock.setTimeout(() => ctrl?.abort(), opts.connectTimeout);
    /** @type {Response | null} */
    let res = null;
    /** @type {ServerMessage | null} */
    let msg = null;
    let raw = '';
    let code;
    try {
      res = await env.fetch(env.urls.rest, restInit(env, etag ? { 'If-None-Match': etag } : {}, ctrl?.signal));
      if (res.status === 200) {
        raw = await res.text();
        msg = parse(raw);
        etag = res.headers.get('ETag') || '';
      } else if (res.status >= 400) {
        try {
          code = (await res.json()).code;
        } catch {
          /* not JSON */
        }
      }
    } catch {
      res = null;
    } finally {
      clock.clearTimeout(abortTimer);
      inflight = false;
    }
    if (done) return;
    if (!res) {
      finish({ kind: opened ? 'dropped' : 'failed', reason: 'network error' });
      return;
    }
    if (httpAction(res.status, code) !== 'ok' || (res.status === 200 && !msg)) {
      finish(outcomeOfHTTP({ status: res.status === 200 ? 502 : res.status, code }, opened));
      return;
    }
    if (!opened) {
      opened = true;
      h.open();
    }
    if (msg) h.message(msg, raw);
    next();
  };

  doc?.addEventListener?.('visibilitychange', onVisibility);
  clock.setTimeout(tick, 0);
  return {
    close() {
      if (done) return;
      done = true;
      cleanup();
    },
    send: () => false,
  };
}

const OPENERS = { websocket: openWebSocket, sse: openSSE, polling: openPolling };

// ---------------------------------------------------------------------------
// The client.

/**
 * One live stream of one community: the visitor count (default) or the
 * moderators' dashboard.
 *
 * Events (client.on(name, fn) returns a function that removes fn):
 * - 'count' (count, msg): the number of visitors present now
 * - 'status' (detail: StatusDetail)
 * - 'transport' (transport | null)
 * - 'dashboard' (figures: DashboardFigures): dashboard stream
 * - 'analytics' (update: AnalyticsUpdate): dashboard stream, WebSocket and SSE
 * - 'message' (msg, {transport, raw}): every server message, raw
 * - 'error' ({code, reason, message?}): the client stopped, or an `error` message arrived
 */
export class FootfallClient {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();
  /** @type {Required<Pick<ClientOptions, 'pingInterval' | 'pongTimeout' | 'pollInterval' | 'connectTimeout' | 'backoffBase' | 'backoffCap' | 'stableAfter' | 'refreshBefore'>>} */
  #o;
  /** @type {ClientOptions['getToken']} */
  #getToken;
  #token = '';
  /** @type {Clock} */
  #clock;
  /** @type {TransportLadder} */
  #ladder;
  /** @type {TransportEnv} */
  #env;
  /** The base URL, without trailing slashes. */
  #base = '';

  /** @type {Status} */
  #status = 'idle';
  /** @type {Transport | null} */
  #transport = null;
  /** @type {number | null} */
  #count = null;
  /** @type {DashboardFigures | null} */
  #dashboard = null;
  /** @type {Record<string, {value: unknown, timestamp?: string}>} */
  #metrics = {};
  /** @type {string | null} */
  #lastEventId = null;

  #running = false;
  #attempt = 0; // reconnects since the last stable connection
  #refreshes = 0; // token refreshes since the last stable connection
  #everOpened = false;
  /** @type {{t: Transport, conn: Connection | null} | null} */
  #main = null;
  /** @type {{t: Transport, conn: Connection | null} | null} */
  #probe = null;
  #timers = { retry: null, stable: null, climb: null, refresh: null };

  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !options.community) throw new TypeError('footfall: community is required');
    const g = /** @type {any} */ (globalThis);
    const base = options.url ?? g.location?.origin;
    if (!base) throw new TypeError('footfall: url is required outside a browser page');
    this.#base = String(base).replace(/\/+$/, '');
    this.community = options.community;
    /** @type {StreamName} */
    this.stream = options.stream === 'dashboard' ? 'dashboard' : 'visitors';
    /** @type {TransportChoice} */
    this.transportChoice = options.transport ?? 'auto';
    this.#o = {
      pingInterval: options.pingInterval ?? 25000,
      pongTimeout: options.pongTimeout ?? 10000,
      pollInterval: options.pollInterval ?? 5000,
      connectTimeout: options.connectTimeout ?? 10000,
      backoffBase: options.backoffBase ?? 500,
      backoffCap: options.backoffCap ?? 30000,
      stableAfter: options.stableAfter ?? 10000,
      refreshBefore: options.refreshBefore ?? 60000,
    };
    this.#getToken = options.getToken;
    this.#token = options.token ?? '';
    this.#clock = {
      now: options.clock?.now ?? (() => Date.now()),
      setTimeout: options.clock?.setTimeout ?? ((fn, ms) => setTimeout(fn, ms)),
      clearTimeout: options.clock?.clearTimeout ?? ((id) => clearTimeout(id)),
      random: options.clock?.random ?? Math.random,
    };
    this.#ladder = new TransportLadder({
      transport: this.transportChoice,
      failuresBeforeFallback: options.failuresBeforeFallback ?? 2,
      climbAfter: options.climbAfter ?? 60000,
      maxClimbAfter: options.maxClimbAfter ?? 600000,
    });
    this.#env = {
      urls: endpoints(base, this.community, this.stream),
      token: () => this.#token,
      withCredentials: options.withCredentials ?? (!options.token && typeof options.getToken !== 'function'),
      clock: this.#clock,
      opts: this.#o,
      WebSocket: options.WebSocket ?? g.WebSocket,
      EventSource: options.EventSource ?? g.EventSource,
      fetch: options.fetch ?? ((...a) => g.fetch(...a)),
      document: options.document === undefined ? g.document : options.document,
      lastEventId: () => this.#lastEventId,
      setLastEventId: (id) => {
        this.#lastEventId = id;
      },
    };
    const cb = /** @type {const} */ ([
      ['count', options.onCount], ['status', options.onStatus], ['transport', options.onTransport],
      ['dashboard', options.onDashboard], ['analytics', options.onAnalytics], ['message', options.onMessage], ['error', options.onError],
    ]);
    for (const [name, fn] of cb) if (typeof fn === 'function') this.on(name, fn);
  }

  /** The number of visitors present (on the dashboard stream: the realtime count); null before the first message. */
  get count() { return this.#count; }
  /** @returns {Status} */
  get status() { return this.#status; }
  /** The transport in use or being tried; null before start and after close. */
  get transport() { return this.#transport; }
  /** The last dashboard figures (dashboard stream), or null. */
  get dashboard() { return this.#dashboard; }
  /** The latest value of each analytics metric seen. */
  get metrics() { return { ...this.#metrics }; }
  /** The id of the last SSE event received (used to resume). */
  get lastEventId() { return this.#lastEventId; }

  /**
   * Adds a listener; returns the function that removes it.
   * @param {'count' | 'status' | 'transport' | 'dashboard' | 'analytics' | 'message' | 'error'} name
   * @param {Function} fn
   * @returns {() => void}
   */
  on(name, fn) {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  /** @param {string} name @param {Function} fn */
  off(name, fn) {
    this.#listeners.get(name)?.delete(fn);
  }

  /** @param {string} name @param {...any} args */
  #emit(name, ...args) {
    for (const fn of [...(this.#listeners.get(name) ?? [])]) {
      try {
        fn(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  /** Starts (or restarts after stop/close). */
  connect() {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#refreshes = 0;
    this.#everOpened = false;
    if (!this.#token && this.#getToken) {
      this.#setStatus('connecting');
      this.#fetchToken('initial', () => this.#connectNow());
      return;
    }
    this.#scheduleTokenRefresh();
    this.#connectNow();
  }

  /** Ends the connection for good (until connect()). */
  close() {
    if (!this.#running && this.#status === 'closed') return;
    this.#running = false;
    this.#teardown();
    this.#setTransport(null);
    this.#setStatus('closed');
  }

  /**
   * Replaces the token: sent at once on an open WebSocket ({"type":"auth"}),
   * used by the next SSE connection and the next poll. A connection opened
   * without a token (a guest signing in) is replaced at once by one with it:
   * footfall lets {"type":"auth"} renew a connection's credential, not
   * change who it is.
   * @param {string} token
   */
  setToken(token) {
    const hadNone = !this.#token;
    this.#token = token;
    if (this.#running) this.#scheduleTokenRefresh();
    if (hadNone && token && this.#running && this.#main) {
      this.#reconnectNow();
      return;
    }
    if (this.#main?.t === 'websocket') this.#main.conn?.send({ type: 'auth', token });
  }

  /**
   * Asks for the current count now: a request_count message on WebSocket,
   * a snapshot fetch on SSE and polling.
   */
  requestCount() {
    if (!this.#running) return;
    if (this.#main?.conn?.send({ type: 'request_count' })) return;
    const t = this.#main?.t;
    probeSnapshot(this.#env).then((r) => {
      if (r && this.#running && this.#main?.t === t) this.#handle(r.msg, r.raw, /** @type {Transport} */ (t ?? 'polling'));
    });
  }

  /**
   * The visitor history of this community (or another one), from footfall's
   * history endpoint (docs/protocol.md, history): the peak and time-weighted
   * average count per minute, hour or day, oldest first, the last point the
   * current bucket so far. It needs a moderator or admin credential and
   * sends the client's own, as its REST snapshots do (the token as
   * Authorization, or else cookies); without a token it asks getToken first,
   * and once more on 4004 (expired). The client need not be connected.
   *
   * Resolves to the endpoint's JSON with `time` (and the day points'
   * `peak_at`) as Date objects. Rejects with a FootfallHTTPError (status,
   * error, message, code, field) when footfall refuses, with a TypeError
   * for a bad step or time before any request, and with fetch's own error
   * for a network failure or an abort.
   *
   *   const { points } = await client.visitorHistory({ step: 'hour' }); // the last 24 hours
   *
   * @param {string | HistoryOptions} [community] default: the client's community
   * @param {HistoryOptions} [options]
   * @returns {Promise<VisitorHistory>}
   */
  async visitorHistory(community, options) {
    if (typeof community !== 'string') {
      options = community;
      community = this.community;
    }
    const { from, to, step = 'hour', signal } = options ?? {};
    if (step !== 'minute' && step !== 'hour' && step !== 'day') throw new TypeError(`footfall: unknown history step ${JSON.stringify(step)}`);
    // Bounds left out are footfall's to choose: `to` now, `from` an hour
    // (minute), a day (hour) or 30 days (day) before `to`.
    const query = new URLSearchParams({ step });
    if (from !== undefined) query.set('from', rfc3339(from, 'from'));
    if (to !== undefined) query.set('to', rfc3339(to, 'to'));
    const url = `${this.#base}/api/v1/communities/${encodeURIComponent(community)}/visitors/history?${query}`;
    let token = this.#token;
    if (!token && this.#getToken) {
      token = await this.#getToken('initial');
      if (typeof token !== 'string') token = '';
      if (token && !this.#running && !this.#token) this.#token = token;
    }
    for (let refreshed = false; ; refreshed = true) {
      const res = await this.#env.fetch(url, restInit(this.#env, { Accept: 'application/json' }, signal, token));
      /** @type {any} */
      let body = null;
      try {
        body = await res.json();
      } catch {
        /* not JSON */
      }
      if (res.ok && body && Array.isArray(body.points)) return historyOf(body);
      if (res.ok) throw new FootfallHTTPError(res.status, { error: 'invalid_response', message: 'the history endpoint answered something else than its JSON' });
      const err = new FootfallHTTPError(res.status, body && typeof body === 'object' ? body : {});
      if (refreshed || err.code !== 4004 || !this.#getToken) throw err;
      const fresh = await this.#getToken('expired');
      if (typeof fresh !== 'string' || !fresh || fresh === token) throw err;
      token = fresh;
      if (this.#running) this.setToken(fresh);
      else this.#token = fresh;
    }
  }

  // --- internals ---

  /** @param {Status} status @param {Partial<StatusDetail>} [extra] */
  #setStatus(status, extra = {}) {
    const changed = status !== this.#status || extra.code !== undefined || extra.retryIn !== undefined;
    this.#status = status;
    if (changed) this.#emit('status', { status, transport: this.#transport, ...extra });
  }

  /** @param {Transport | null} t */
  #setTransport(t) {
    if (t === this.#transport) return;
    this.#transport = t;
    this.#emit('transport', t);
  }

  /** @param {'retry' | 'stable' | 'climb' | 'refresh'} name */
  #clear(name) {
    const id = this.#timers[name];
    if (id !== null) this.#clock.clearTimeout(id);
    this.#timers[name] = null;
  }

  /** @param {'retry' | 'stable' | 'climb' | 'refresh'} name @param {() => void} fn @param {number} ms */
  #set(name, fn, ms) {
    this.#clear(name);
    this.#timers[name] = this.#clock.setTimeout(() => {
      this.#timers[name] = null;
      fn();
    }, ms);
  }

  #teardown() {
    for (const name of /** @type {const} */ (['retry', 'stable', 'climb', 'refresh'])) this.#clear(name);
    const main = this.#main;
    const probe = this.#probe;
    this.#main = this.#probe = null;
    main?.conn?.close();
    probe?.conn?.close();
  }

  /** @param {{code?: number, reason?: string}} why */
  #stop(why) {
    this.#running = false;
    this.#teardown();
    this.#setStatus('stopped', why);
    this.#emit('error', why);
  }

  /** @param {'initial' | 'expired' | 'refresh'} reason @param {() => void} then */
  #fetchToken(reason, then) {
    const getToken = this.#getToken;
    if (!getToken) {
      this.#stop({ code: 4004, reason: 'token expired and no getToken' });
      return;
    }
    Promise.resolve()
      .then(() => getToken(reason))
      .then(
        (token) => {
          if (!this.#running) return;
          if (typeof token !== 'string' || !token) {
            this.#stop({ code: reason === 'initial' ? 4001 : 4004, reason: 'getToken gave no token' });
            return;
          }
          this.#token = token;
          this.#scheduleTokenRefresh();
          then();
        },
        (err) => {
          if (this.#running) this.#stop({ code: reason === 'initial' ? 4001 : 4004, reason: `getToken failed: ${err?.message ?? err}` });
        },
      );
  }

  /** Asks getToken for a fresh token shortly before this one expires. */
  #scheduleTokenRefresh() {
    this.#clear('refresh');
    const exp = tokenExpiry(this.#token);
    if (!this.#getToken || exp === null) return;
    const now = this.#clock.now();
    const lifetime = exp - now;
    if (lifetime <= 0) return; // the server's 4004 will ask
    const at = Math.max(lifetime / 2, lifetime - this.#o.refreshBefore);
    this.#set('refresh', () => {
      const getToken = this.#getToken;
      if (!getToken || !this.#running) return;
      Promise.resolve()
        .then(() => getToken('refresh'))
        .then(
          (token) => {
            if (this.#running && typeof token === 'string' && token && token !== this.#token) this.setToken(token);
          },
          () => {}, // the connection lives until expiry; 4004 asks again
        );
    }, Math.min(at, 2 ** 31 - 1));
  }

  /** Replaces the connection (and any probe) with a new one at once. */
  #reconnectNow() {
    this.#clear('stable');
    this.#clear('climb');
    const main = this.#main;
    const probe = this.#probe;
    this.#main = this.#probe = null;
    main?.conn?.close();
    probe?.conn?.close();
    this.#connectNow();
  }

  #connectNow() {
    this.#clear('retry');
    if (!this.#running) return;
    const t = this.#ladder.pick(this.#clock.now());
    this.#setTransport(t);
    this.#setStatus(this.#everOpened || this.#attempt > 0 ? 'reconnecting' : 'connecting');
    const rec = { t, conn: /** @type {Connection | null} */ (null) };
    this.#main = rec;
    rec.conn = OPENERS[t](this.#env, this.#handlers(rec));
  }

  /**
   * The handlers of one connection, main or probe; they do nothing once it
   * is neither (closed, replaced).
   * @param {{t: Transport, conn: Connection | null}} rec
   * @returns {Handlers}
   */
  #handlers(rec) {
    return {
      open: () => {
        if (this.#main === rec) this.#opened(rec);
        // a probe counts as working only once it delivers a message
      },
      message: (msg, raw) => {
        if (this.#probe === rec) this.#promote(rec);
        if (this.#main === rec) this.#handle(msg, raw, rec.t);
      },
      end: (o) => {
        if (this.#probe === rec) {
          this.#probe = null;
          this.#ladder.failure(rec.t, this.#clock.now());
          if (this.#main) this.#scheduleClimb(this.#main.t);
          return;
        }
        if (this.#main === rec) this.#ended(rec, o);
      },
      paused: (p) => {
        if (this.#main === rec) this.#setStatus(p ? 'paused' : 'connected');
      },
      reconnecting: () => {
        if (this.#main === rec) this.#setStatus('reconnecting');
      },
      reopened: () => {
        if (this.#main === rec) this.#setStatus('connected');
      },
    };
  }

  /** @param {{t: Transport, conn: Connection | null}} rec */
  #opened(rec) {
    this.#everOpened = true;
    this.#setTransport(rec.t);
    this.#setStatus('connected');
    this.#set('stable', () => {
      this.#attempt = 0;
      this.#refreshes = 0;
      this.#ladder.stable(rec.t);
    }, this.#o.stableAfter);
    this.#scheduleClimb(rec.t);
  }

  /** @param {{t: Transport, conn: Connection | null}} rec @param {Outcome} o */
  #ended(rec, o) {
    this.#main = null;
    this.#clear('stable');
    this.#clear('climb');
    if (this.#probe) {
      const probe = this.#probe;
      this.#probe = null;
      probe.conn?.close();
    }
    const now = this.#clock.now();
    switch (o.kind) {
      case 'stop':
        this.#stop({ code: o.code, reason: o.reason });
        return;
      case 'refresh':
        if (++this.#refreshes > 3) {
          this.#stop({ code: 4004, reason: 'token still expired after refreshing' });
          return;
        }
        this.#setStatus('reconnecting', { code: o.code ?? 4004, reason: o.reason || 'token expired' });
        this.#fetchToken('expired', () => this.#connectNow());
        return;
      case 'failed':
        if (this.#ladder.failure(rec.t, now)) {
          // Fall back: the next transport down, at once.
          this.#connectNow();
          return;
        }
        break;
      case 'dropped':
        break;
    }
    const delay = backoffDelay(this.#attempt++, { base: this.#o.backoffBase, cap: this.#o.backoffCap }, this.#clock.random);
    this.#setStatus('reconnecting', { code: o.code, reason: o.reason, retryIn: delay });
    this.#set('retry', () => this.#connectNow(), delay);
  }

  /** @param {Transport} current */
  #scheduleClimb(current) {
    this.#clear('climb');
    const at = this.#ladder.nextClimbAt(current);
    if (at === null) return;
    this.#set('climb', () => this.#climb(current), Math.max(0, at - this.#clock.now()));
  }

  /** Opens the better transport beside the working one. @param {Transport} current */
  #climb(current) {
    if (!this.#running || this.#main?.t !== current || this.#probe) return;
    const target = this.#ladder.climbTarget(current, this.#clock.now());
    if (!target) {
      this.#scheduleClimb(current);
      return;
    }
    const rec = { t: target, conn: /** @type {Connection | null} */ (null) };
    this.#probe = rec;
    rec.conn = OPENERS[target](this.#env, this.#handlers(rec));
  }

  /** The probe delivered: it becomes the connection. @param {{t: Transport, conn: Connection | null}} rec */
  #promote(rec) {
    const old = this.#main;
    this.#probe = null;
    this.#main = rec;
    old?.conn?.close();
    this.#opened(rec);
  }

  /** @param {ServerMessage} msg @param {string} raw @param {Transport} t */
  #handle(msg, raw, t) {
    if (t !== 'sse') this.#lastEventId = null; // an SSE resume point from before would replay stale events
    this.#emit('message', msg, { transport: t, raw });
    switch (msg.type) {
      case 'visitor_count':
      case 'visitor_joined':
      case 'visitor_left':
        if (typeof msg.count === 'number') this.#setCount(msg.count, msg);
        break;
      case 'dashboard_update': {
        const d = msg.data;
        if (d && typeof d === 'object') {
          this.#dashboard = { ...d, timestamp: msg.timestamp };
          this.#emit('dashboard', this.#dashboard);
          if (typeof d.realtime_count === 'number') this.#setCount(d.realtime_count, msg);
        }
        break;
      }
      case 'analytics_update':
        if (typeof msg.metric === 'string') {
          this.#metrics[msg.metric] = { value: msg.value, timestamp: msg.timestamp };
          this.#emit('analytics', { metric: msg.metric, value: msg.value, timestamp: msg.timestamp });
        }
        break;
      case 'error':
        this.#emit('error', { code: msg.code, reason: msg.message, message: msg });
        break;
    }
  }

  /** @param {number} n @param {ServerMessage} msg */
  #setCount(n, msg) {
    if (n === this.#count) return;
    this.#count = n;
    this.#emit('count', n, msg);
  }
}

/**
 * One snapshot over REST (for requestCount on SSE and polling).
 * @param {TransportEnv} env
 * @returns {Promise<{msg: ServerMessage, raw: string} | null>}
 */
async function probeSnapshot(env) {
  try {
    const res = await env.fetch(env.urls.rest, restInit(env));
    if (res.status !== 200) return null;
    const raw = await res.text();
    const msg = parse(raw);
    return msg ? { msg, raw } : null;
  } catch {
    return null;
  }
}

/**
 * Shorthand for new FootfallClient(options).
 * @param {ClientOptions} options
 */
export function createClient(options) {
  return new FootfallClient(options);
}
