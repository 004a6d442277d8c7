// Type declarations of footfall-client.js, footfall's browser client. They
// describe the module as it is; web/test-types/ checks that they name exactly
// what it exports, and that the seed's TypeScript components type-check
// against them with `tsc --strict` (docs/frontend.md).

/** A way to reach footfall, best first. */
export type Transport = 'websocket' | 'sse' | 'polling';
/** 'auto' tries WebSocket, then SSE, then REST polling, and climbs back up later. */
export type TransportChoice = 'auto' | Transport;
/** The visitor count (members and up) or the moderators' dashboard. */
export type StreamName = 'visitors' | 'dashboard';
/**
 * idle: not started; connecting; connected; reconnecting (after a drop, or
 * for a fresh token); paused (polling in a hidden tab); stopped (refused:
 * 4001-4003, or no fresh token); closed (by close()).
 */
export type Status = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'paused' | 'stopped' | 'closed';

export interface StatusDetail {
  status: Status;
  transport: Transport | null;
  /** The close code or auth code (4001-4004), when there is one. */
  code?: number;
  reason?: string;
  /** Milliseconds until the next attempt, while reconnecting. */
  retryIn?: number;
}

/** Today's distinct visitors (since midnight in FOOTFALL_TIMEZONE). */
export interface TodayVisitors {
  authenticated_visitors: number;
  anonymous_visitors: number;
  total_unique_visitors: number;
}

/** Today's highest count and when it was first reached (RFC 3339). */
export interface PeakToday {
  count: number;
  at: string;
}

/** The `data` of a dashboard_update, as the client keeps it. */
export interface DashboardFigures {
  today_visitors: TodayVisitors;
  realtime_count: number;
  community_id: string;
  /** Today's peak; footfall always sends it, a platform's broadcast may not. */
  peak_today?: PeakToday;
  /** The message's timestamp. */
  timestamp?: string;
}

export interface AnalyticsUpdate {
  metric: string;
  /** Any JSON value the platform posted. */
  value: unknown;
  timestamp?: string;
}

/** The size of a history bucket. */
export type HistoryStep = 'minute' | 'hour' | 'day';

/** What visitorHistory asks for. */
export interface HistoryOptions {
  /**
   * Start: a Date, an RFC 3339 string (sent as it is), or ms since the epoch.
   * Default (footfall's): an hour (minute), a day (hour) or 30 days (day) before `to`.
   */
  from?: Date | string | number;
  /** End, likewise; default: now. Footfall answers up to now at most. */
  to?: Date | string | number;
  /** Bucket size; default 'hour'. Footfall keeps minutes 48 hours, hours 90 days, days 400 days. */
  step?: HistoryStep;
  /** Aborts the request (the promise rejects with fetch's AbortError). */
  signal?: AbortSignal;
}

/** One bucket of the visitor history. */
export interface HistoryPoint {
  /** The bucket's start. */
  time: Date;
  /** The highest count in the bucket; 0 when nobody was present. */
  peak: number;
  /** The time-weighted average count in the bucket. */
  average: number;
  /** Day points: distinct signed-in visitors that day. */
  authenticated_visitors?: number;
  /** Day points: distinct anonymous visitors that day. */
  anonymous_visitors?: number;
  /** Day points: both. */
  total_unique_visitors?: number;
  /** Day points: when the peak was first reached; absent for a day with nobody. */
  peak_at?: Date | null;
}

/** What visitorHistory resolves to: the endpoint's JSON with its times as Dates. */
export interface VisitorHistory {
  community_id: string;
  step: HistoryStep;
  /** Oldest first, one per bucket from `from` to `to`; the last is the current bucket so far. */
  points: HistoryPoint[];
}

/** A REST request footfall refused: the status and the error body `{"error","message","code"?,"field"?}`. */
export class FootfallHTTPError extends Error {
  constructor(status: number, body?: { error?: string; message?: string; code?: number; field?: string });
  /** The HTTP status. */
  status: number;
  /** The body's slug: invalid_query, unauthorized, forbidden, not_found, ... */
  error: string;
  /** The auth code (4001-4004) of an authentication outcome. */
  code: number | undefined;
  /** The parameter a 400 names: from, to or step. */
  field: string | undefined;
}

// Server messages (README, "The protocol in short"). Timestamps are RFC 3339
// UTC, whole seconds.

export interface VisitorCountMessage {
  type: 'visitor_count';
  community_id: string;
  count: number;
  /** Net change since the last count this connection was sent (coalesced and request_count answers). */
  change?: number;
  timestamp: string;
}
export interface VisitorJoinedMessage {
  type: 'visitor_joined';
  community_id: string;
  count: number;
  timestamp: string;
}
export interface VisitorLeftMessage {
  type: 'visitor_left';
  community_id: string;
  count: number;
  timestamp: string;
}
export interface DashboardUpdateMessage {
  type: 'dashboard_update';
  data: {
    today_visitors: TodayVisitors;
    realtime_count: number;
    community_id: string;
    peak_today?: PeakToday;
  };
  timestamp: string;
}
export interface AnalyticsUpdateMessage {
  type: 'analytics_update';
  metric: string;
  value: unknown;
  timestamp: string;
}
export interface PongMessage {
  type: 'pong';
  timestamp: string;
}
export interface AuthOkMessage {
  type: 'auth_ok';
  expires_at: string;
}
export interface ErrorMessage {
  type: 'error';
  /** invalid_json, invalid_message, unknown_type, message_too_large, rate_limited, invalid_token, forbidden, expired */
  code: string;
  message: string;
}
/** Any message footfall sends, told apart by `type`. */
export type ServerMessage =
  | VisitorCountMessage
  | VisitorJoinedMessage
  | VisitorLeftMessage
  | DashboardUpdateMessage
  | AnalyticsUpdateMessage
  | PongMessage
  | AuthOkMessage
  | ErrorMessage;
/** The messages that carry a visitor count. */
export type CountMessage = VisitorCountMessage | VisitorJoinedMessage | VisitorLeftMessage;

/** What the 'error' event and onError receive. */
export interface ClientError {
  /** A close or auth code (4001-4004), an HTTP status, or an error message's code. */
  code?: number | string;
  reason?: string;
  /** The server's error message, when one arrived. */
  message?: ServerMessage;
}

/** Why getToken is asked: at start without a token, on 4004, or before `exp`. */
export type TokenReason = 'initial' | 'expired' | 'refresh';

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): any;
  clearTimeout(id: any): void;
  /** In [0, 1). */
  random(): number;
}

export interface ClientOptions {
  /** The community id. */
  community: string;
  /** The gateway's base URL, http(s)://host[:port][/prefix]; default: the page's origin. */
  url?: string;
  /** 'visitors' (default) or 'dashboard' (moderators, admins). */
  stream?: StreamName;
  /**
   * A JWT. Without it getToken is asked before the first attempt; without
   * both, the client connects with no credential: a guest of a public
   * community, or whoever the browser's cookies make it (4001 otherwise).
   */
  token?: string;
  /** Returns a fresh JWT: asked on 4004 (expired), before `exp`, and at start without token. */
  getToken?: (reason: TokenReason) => string | Promise<string>;
  /**
   * Send cookies with SSE and REST when footfall is on another origin.
   * Default: true without token and getToken, false with them.
   */
  withCredentials?: boolean;
  /** 'auto' (default): WebSocket, then SSE, then polling. */
  transport?: TransportChoice;
  /** Milliseconds between WebSocket pings (25000). */
  pingInterval?: number;
  /** Milliseconds to wait for an answer to a ping before reconnecting (10000). */
  pongTimeout?: number;
  /** Milliseconds between polls (5000); keep it under the presence TTL. */
  pollInterval?: number;
  /** Milliseconds an attempt may take to open (10000). */
  connectTimeout?: number;
  /** First reconnect delay ceiling, ms (500). */
  backoffBase?: number;
  /** Reconnect delay ceiling, ms (30000). */
  backoffCap?: number;
  /** Milliseconds a connection must last to reset the backoff (10000). */
  stableAfter?: number;
  /** Failed attempts before 'auto' falls back (2). */
  failuresBeforeFallback?: number;
  /** Milliseconds before 'auto' tries a better transport again (60000), doubling per failure. */
  climbAfter?: number;
  /** Cap of that wait, ms (600000). */
  maxClimbAfter?: number;
  /** Milliseconds before `exp` to ask getToken for a fresh token (60000). */
  refreshBefore?: number;
  onCount?: FootfallEvents['count'];
  onStatus?: FootfallEvents['status'];
  onTransport?: FootfallEvents['transport'];
  onDashboard?: FootfallEvents['dashboard'];
  onAnalytics?: FootfallEvents['analytics'];
  onMessage?: FootfallEvents['message'];
  onError?: FootfallEvents['error'];
  /** WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: any;
  /** EventSource implementation (default: globalThis.EventSource). */
  EventSource?: any;
  /** fetch implementation (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** For page visibility (default: globalThis.document); null: always visible. */
  document?: any;
  /** Timers and randomness (tests). */
  clock?: Partial<Clock>;
}

/** The client's events and their listeners. */
export interface FootfallEvents {
  /** The number of visitors present now (dashboard stream: the realtime count). */
  count: (count: number, msg: ServerMessage) => void;
  status: (detail: StatusDetail) => void;
  transport: (transport: Transport | null) => void;
  /** Dashboard stream. */
  dashboard: (figures: DashboardFigures) => void;
  /** Dashboard stream, WebSocket and SSE. */
  analytics: (update: AnalyticsUpdate) => void;
  /** Every server message, raw. */
  message: (msg: ServerMessage, info: { transport: Transport; raw: string }) => void;
  /** The client stopped, or an `error` message arrived. */
  error: (err: ClientError) => void;
}

/** One live stream of one community: the visitor count (default) or the moderators' dashboard. */
export class FootfallClient {
  constructor(options: ClientOptions);
  readonly community: string;
  readonly stream: StreamName;
  readonly transportChoice: TransportChoice;
  /** The number of visitors present (dashboard stream: the realtime count); null before the first message. */
  get count(): number | null;
  get status(): Status;
  /** The transport in use or being tried; null before start and after close. */
  get transport(): Transport | null;
  /** The last dashboard figures (dashboard stream), or null. */
  get dashboard(): DashboardFigures | null;
  /** The latest value of each analytics metric seen. */
  get metrics(): Record<string, { value: unknown; timestamp?: string }>;
  /** The id of the last SSE event received (used to resume). */
  get lastEventId(): string | null;
  /** Adds a listener; returns the function that removes it. */
  on<E extends keyof FootfallEvents>(name: E, fn: FootfallEvents[E]): () => void;
  off<E extends keyof FootfallEvents>(name: E, fn: FootfallEvents[E]): void;
  /** Starts (or restarts after stop/close). */
  connect(): void;
  /** Ends the connection for good (until connect()). */
  close(): void;
  /** Replaces the token: sent at once on an open WebSocket, used by the next SSE connection and poll. */
  setToken(token: string): void;
  /** Asks for the current count now: request_count on WebSocket, a snapshot fetch on SSE and polling. */
  requestCount(): void;
  /**
   * The visitor history (peak and average count per minute, hour or day) of
   * this community, or of another one, with the client's credential
   * (moderators, admins). Times come back as Dates; a refusal rejects with
   * a FootfallHTTPError.
   */
  visitorHistory(options?: HistoryOptions): Promise<VisitorHistory>;
  visitorHistory(community: string, options?: HistoryOptions): Promise<VisitorHistory>;
}

/** Shorthand for new FootfallClient(options). */
export function createClient(options: ClientOptions): FootfallClient;

// Building blocks, exported for tests and for those who build their own
// client; the names above are the stable surface.

export const TRANSPORTS: readonly Transport[];

/** Exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)) ms. */
export function backoffDelay(attempt: number, opts?: { base?: number; cap?: number }, random?: () => number): number;
/** What a close code means: 'stop' (4001-4003), 'refresh' (4004), 'retry' (anything else). */
export function closeAction(code: number | undefined): 'stop' | 'refresh' | 'retry';
/** What an HTTP answer of the SSE or REST endpoints means. */
export function httpAction(status: number, code?: number): 'ok' | 'stop' | 'refresh' | 'retry';
/** The `exp` of a JWT in ms since the epoch, or null. */
export function tokenExpiry(token: string | undefined): number | null;
/** The endpoints of one stream of one community. */
export function endpoints(base: string, community: string, stream: StreamName): { websocket: string; sse: string; rest: string };

/** The fallback state machine behind transport 'auto'. */
export class TransportLadder {
  constructor(opts?: { transport?: TransportChoice; failuresBeforeFallback?: number; climbAfter?: number; maxClimbAfter?: number });
  order: Transport[];
  threshold: number;
  climbAfter: number;
  maxClimbAfter: number;
  state: Map<Transport, { failures: number; blockedUntil: number; penalty: number; tripped: boolean }>;
  isLast(t: Transport): boolean;
  pick(now: number): Transport;
  failure(t: Transport, now: number): boolean;
  stable(t: Transport): void;
  climbTarget(current: Transport, now: number): Transport | null;
  nextClimbAt(current: Transport): number | null;
}

/** How a transport's connection ended: before it opened (failed), after (dropped), refused (stop), or expired (refresh). */
export interface Outcome {
  kind: 'failed' | 'dropped' | 'stop' | 'refresh';
  code?: number;
  reason?: string;
}
export interface TransportHandlers {
  open(): void;
  message(msg: ServerMessage, raw: string): void;
  end(outcome: Outcome): void;
  paused(paused: boolean): void;
  reconnecting(): void;
  reopened(): void;
}
export interface Connection {
  close(): void;
  send(obj: object): boolean;
}
export interface TransportEnv {
  urls: ReturnType<typeof endpoints>;
  /** The JWT to send; '' sends no credential. */
  token: () => string;
  withCredentials: boolean;
  clock: Clock;
  opts: { pingInterval: number; pongTimeout: number; pollInterval: number; connectTimeout: number };
  WebSocket: any;
  EventSource: any;
  fetch: typeof fetch;
  document: any;
  lastEventId: () => string | null;
  setLastEventId: (id: string) => void;
}
export function openWebSocket(env: TransportEnv, h: TransportHandlers): Connection;
export function openSSE(env: TransportEnv, h: TransportHandlers): Connection;
export function openPolling(env: TransportEnv, h: TransportHandlers): Connection;
