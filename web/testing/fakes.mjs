// Test doubles for the client's unit tests: a manual clock and fake
// WebSocket, EventSource, fetch and document.

/** Lets pending promise callbacks run. */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A clock whose time moves only through advance(). */
export function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  let seq = 0;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++seq;
      timers.set(id, { at: now + Math.max(0, ms || 0), fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    random: () => 0.5,
    /** Runs every timer due within ms, in order, letting promises settle. */
    async advance(ms = 0) {
      const end = now + ms;
      await flush();
      for (;;) {
        let next = null;
        for (const [id, t] of timers) {
          if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
        }
        if (next === null) break;
        timers.delete(next[0]);
        now = next[1].at;
        next[1].fn();
        await flush();
      }
      now = end;
      await flush();
    },
    /** Runs timers one by one until pred() holds; fails after limit ms. */
    async until(pred, limit = 600000) {
      const end = now + limit;
      await flush();
      while (!pred()) {
        let next = null;
        for (const [id, t] of timers) {
          if (next === null || t.at < next[1].at) next = [id, t];
        }
        if (next === null || next[1].at > end) throw new Error('fake clock: condition not met');
        timers.delete(next[0]);
        now = Math.max(now, next[1].at);
        next[1].fn();
        await flush();
      }
    },
    pending: () => timers.size,
  };
}

/** A WebSocket class whose instances the test drives. */
export function fakeWebSocket() {
  const instances = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = false;
      instances.push(this);
    }
    send(data) {
      const m = JSON.parse(data);
      this.sent.push(m);
      if (m.type === 'ping' && FakeWebSocket.autoPong) queueMicrotask(() => this.deliver({ type: 'pong', timestamp: 'x' }));
    }
    close() {
      this.closedByClient = true;
      this.readyState = 3;
    }
    // the server's side
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }
    deliver(msg) {
      this.onmessage?.({ data: JSON.stringify(msg) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    refuse() {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: '' });
    }
  }
  FakeWebSocket.instances = instances;
  FakeWebSocket.autoPong = true;
  FakeWebSocket.last = () => instances[instances.length - 1];
  return FakeWebSocket;
}

/** An EventSource class whose instances the test drives. */
export function fakeEventSource() {
  const instances = [];
  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.listeners = {};
      this.closed = false;
      instances.push(this);
    }
    addEventListener(type, fn) {
      (this.listeners[type] ??= []).push(fn);
    }
    close() {
      this.closed = true;
      this.readyState = 2;
    }
    // the server's side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    deliver(msg, id = '') {
      for (const fn of this.listeners[msg.type] ?? []) fn({ type: msg.type, data: JSON.stringify(msg), lastEventId: id });
    }
    /** A network error (EventSource retries) or, fatal, an HTTP error (it gives up). */
    fail({ fatal = false } = {}) {
      this.readyState = fatal ? 2 : 0;
      for (const fn of this.listeners.error ?? []) fn({ type: 'error' });
    }
  }
  FakeEventSource.instances = instances;
  FakeEventSource.last = () => instances[instances.length - 1];
  return FakeEventSource;
}

/**
 * A fetch that answers with respond(url, init) -> {status, body?, headers?},
 * or throws when respond returns 'network-error'. Records every call.
 */
export function fakeFetch(respond) {
  const calls = [];
  const fn = async (url, init = {}) => {
    calls.push({ url: String(url), headers: { ...(init.headers ?? {}) }, credentials: init.credentials, signal: init.signal });
    const r = await respond(String(url), init);
    if (r === 'network-error') throw new TypeError('fetch failed');
    const body = r.body === undefined || r.status === 304 ? null : typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
    return new Response(body, { status: r.status, headers: r.headers ?? {} });
  };
  fn.calls = calls;
  return fn;
}

/** A document whose visibility the test sets. */
export function fakeDocument(state = 'visible') {
  const listeners = new Set();
  return {
    visibilityState: state,
    addEventListener(type, fn) {
      if (type === 'visibilitychange') listeners.add(fn);
    },
    removeEventListener(type, fn) {
      if (type === 'visibilitychange') listeners.delete(fn);
    },
    set(s) {
      this.visibilityState = s;
      for (const fn of [...listeners]) fn();
    },
    listenerCount: () => listeners.size,
  };
}

/** A JWT-shaped token (unsigned) with the given exp (seconds). */
export function fakeJWT(exp, sub = 'user-1') {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp })}.c2ln`;
}

export const COMMUNITY = '123e4567-e89b-12d3-a456-426614174000';

export function countMsg(count, type = 'visitor_count') {
  return { type, community_id: COMMUNITY, count, timestamp: '2025-10-10T14:31:00Z' };
}
