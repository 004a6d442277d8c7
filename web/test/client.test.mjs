// Unit tests of FootfallClient's state machine with fake transports and a
// manual clock: no browser, no network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FootfallClient } from '../footfall-client.js';
import { COMMUNITY, countMsg, fakeClock, fakeDocument, fakeEventSource, fakeFetch, fakeJWT, fakeWebSocket } from '../testing/fakes.mjs';

const BASE = 'http://gw.test:8080';

/** A client on fakes; respond answers REST requests (default: a count of 7). */
function setup(opts = {}, respond = () => ({ status: 200, body: countMsg(7), headers: { ETag: '"e1"' } })) {
  const clock = fakeClock();
  const WS = fakeWebSocket();
  const ES = fakeEventSource();
  const fetch = fakeFetch(respond);
  const document = opts.document ?? fakeDocument();
  const events = { count: [], status: [], transport: [], error: [], message: [] };
  const client = new FootfallClient({
    url: BASE,
    community: COMMUNITY,
    token: 'tok-1',
    WebSocket: WS,
    EventSource: ES,
    fetch,
    document,
    clock,
    pingInterval: 25000,
    pongTimeout: 10000,
    pollInterval: 5000,
    connectTimeout: 10000,
    backoffBase: 500,
    backoffCap: 30000,
    stableAfter: 10000,
    climbAfter: 60000,
    onCount: (n) => events.count.push(n),
    onStatus: (d) => events.status.push(d.status),
    onTransport: (t) => events.transport.push(t),
    onError: (e) => events.error.push(e),
    onMessage: (m, info) => events.message.push([m.type, info.transport]),
    ...opts,
  });
  return { client, clock, WS, ES, fetch, document, events };
}

test('websocket: bearer subprotocol, count, status, transport', async () => {
  const { client, clock, WS, events } = setup();
  client.connect();
  const ws = WS.last();
  assert.equal(ws.url, `ws://gw.test:8080/ws/communities/${COMMUNITY}/visitors/`);
  assert.deepEqual(ws.protocols, ['bearer', 'tok-1']);
  assert.equal(client.status, 'connecting');
  ws.accept();
  ws.deliver(countMsg(3));
  ws.deliver(countMsg(4, 'visitor_joined'));
  ws.deliver(countMsg(4, 'visitor_count'));
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(client.transport, 'websocket');
  assert.equal(client.count, 4);
  assert.deepEqual(events.count, [3, 4], 'count events only on change');
  assert.deepEqual(events.message.map((m) => m[0]), ['visitor_count', 'visitor_joined', 'visitor_count']);
  client.close();
  assert.equal(client.status, 'closed');
  assert.equal(ws.closedByClient, true);
});

test('websocket: pings, reconnects when pongs stop, and close() clears every timer', async () => {
  const { client, clock, WS } = setup();
  WS.autoPong = false;
  client.connect();
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  await clock.advance(25000);
  assert.deepEqual(WS.last().sent, [{ type: 'ping' }]);
  WS.last().deliver({ type: 'pong', timestamp: 'x' });
  await clock.advance(25000);
  assert.deepEqual(WS.last().sent, [{ type: 'ping' }, { type: 'ping' }]);
  // No answer this time: the connection is dead, the client reconnects.
  await clock.advance(10000);
  assert.equal(WS.instances[0].closedByClient, true);
  assert.equal(client.status, 'reconnecting');
  await clock.until(() => WS.instances.length === 2);
  WS.last().accept();
  client.close();
  assert.equal(clock.pending(), 0, 'no timer left: the ping interval is cleared');
  await clock.advance(120000);
  assert.deepEqual(WS.last().sent, [], 'no ping after close');
});

test('close codes 4001-4003 stop for good', async () => {
  for (const code of [4001, 4002, 4003]) {
    const { client, clock, WS, events } = setup();
    client.connect();
    WS.last().accept();
    WS.last().serverClose(code, 'nope');
    await clock.advance(600000);
    assert.equal(WS.instances.length, 1, `no retry after ${code}`);
    assert.equal(client.status, 'stopped');
    assert.equal(events.error.at(-1).code, code);
    assert.equal(clock.pending(), 0);
  }
});

test('4004 asks getToken and reconnects with the fresh token', async () => {
  const asked = [];
  const { client, clock, WS } = setup({
    getToken: async (why) => {
      asked.push(why);
      return 'tok-2';
    },
  });
  client.connect();
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  WS.last().serverClose(4004, 'expired');
  await clock.advance(0);
  assert.deepEqual(asked, ['expired']);
  assert.equal(WS.instances.length, 2);
  assert.deepEqual(WS.last().protocols, ['bearer', 'tok-2']);
});

test('4004 without getToken stops', async () => {
  const { client, clock, WS } = setup();
  client.connect();
  WS.last().accept();
  WS.last().serverClose(4004, 'expired');
  await clock.advance(60000);
  assert.equal(client.status, 'stopped');
  assert.equal(WS.instances.length, 1);
});

test('no token: asks getToken first; a token near expiry is refreshed over the open WebSocket', async () => {
  const clock0 = fakeClock();
  const exp1 = Math.floor(clock0.now() / 1000) + 600; // 10 minutes
  const tokens = [fakeJWT(exp1), fakeJWT(exp1 + 3600)];
  const asked = [];
  const clock = clock0;
  const { client, WS } = setup({
    token: undefined,
    clock: clock0,
    refreshBefore: 60000,
    getToken: (why) => {
      asked.push(why);
      return tokens.shift();
    },
  });
  client.connect();
  await clock.advance(0);
  assert.deepEqual(asked, ['initial']);
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  await clock.advance(540000); // 9 minutes: a minute before exp
  assert.deepEqual(asked, ['initial', 'refresh']);
  assert.deepEqual(WS.last().sent.filter((m) => m.type === 'auth'), [{ type: 'auth', token: fakeJWT(exp1 + 3600) }]);
  assert.equal(WS.instances.length, 1, 'refreshed in place');
  client.close();
});

test('backoff grows per attempt and resets after a stable connection', async () => {
  const { client, clock, WS, events } = setup();
  const delays = [];
  client.on('status', (d) => d.retryIn !== undefined && delays.push(d.retryIn));
  client.connect();
  for (let i = 0; i < 4; i++) {
    WS.last().accept();
    WS.last().deliver(countMsg(1));
    WS.last().serverClose(1006);
    const n = WS.instances.length;
    await clock.until(() => WS.instances.length > n);
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000], 'random 0.5 of 500, 1000, 2000, 4000');
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  await clock.advance(10000); // stable
  WS.last().serverClose(1001, 'going away');
  await clock.advance(0);
  assert.equal(delays.at(-1), 250, 'back to the first delay');
  assert.ok(events.status.includes('reconnecting'));
  client.close();
});

test('auto: WebSocket refused twice falls back to SSE with ?token=', async () => {
  const { client, clock, WS, ES } = setup();
  client.connect();
  WS.last().refuse();
  await clock.until(() => WS.instances.length === 2);
  assert.equal(ES.instances.length, 0, 'one retry of the WebSocket first');
  WS.last().refuse();
  await clock.advance(0);
  assert.equal(ES.instances.length, 1, 'then SSE, at once');
  const u = new URL(ES.last().url);
  assert.equal(u.pathname, `/sse/communities/${COMMUNITY}/visitors/`);
  assert.equal(u.searchParams.get('token'), 'tok-1');
  assert.equal(u.searchParams.get('last_event_id'), null);
  ES.last().open();
  ES.last().deliver(countMsg(5), 'e-1');
  assert.equal(client.transport, 'sse');
  assert.equal(client.status, 'connected');
  assert.equal(client.count, 5);
  assert.equal(client.lastEventId, 'e-1');
  client.close();
  assert.equal(ES.last().closed, true);
});

test('a WebSocket that opens but never delivers counts as failed (a proxy that eats frames)', async () => {
  const { client, clock, WS, ES } = setup();
  client.connect();
  WS.last().accept();
  WS.last().serverClose(1006);
  await clock.until(() => WS.instances.length === 2);
  WS.last().accept();
  WS.last().serverClose(1006);
  await clock.advance(0);
  assert.equal(ES.instances.length, 1);
  client.close();
});

test('sse: EventSource reconnects by itself; the client only reports it', async () => {
  const { client, clock, ES } = setup({ transport: 'sse' });
  client.connect();
  ES.last().open();
  ES.last().deliver(countMsg(2), 'e-1');
  ES.last().fail(); // CONNECTING: EventSource retries with Last-Event-ID itself
  assert.equal(client.status, 'reconnecting');
  ES.last().open();
  ES.last().deliver(countMsg(3, 'visitor_joined'), 'e-2');
  await clock.advance(60000);
  assert.equal(ES.instances.length, 1, 'no second EventSource');
  assert.equal(client.status, 'connected');
  assert.equal(client.count, 3);
  client.close();
});

test('sse: when EventSource gives up, the client asks REST why and resumes with last_event_id', async () => {
  let answer = { status: 200, body: countMsg(3) };
  const { client, clock, ES, fetch } = setup({ transport: 'sse' }, () => answer);
  client.connect();
  ES.last().open();
  ES.last().deliver(countMsg(2), 'e-7');
  ES.last().fail({ fatal: true });
  await clock.until(() => ES.instances.length === 2);
  assert.equal(fetch.calls[0].headers.Authorization, 'Bearer tok-1');
  assert.equal(ES.instances.length, 2);
  assert.equal(new URL(ES.last().url).searchParams.get('last_event_id'), 'e-7');
  // Now the token is refused: 403 with code 4003 stops.
  answer = { status: 403, body: { error: 'forbidden', code: 4003 } };
  ES.last().open();
  ES.last().fail({ fatal: true });
  await clock.advance(30000);
  assert.equal(client.status, 'stopped');
  assert.equal(ES.instances.length, 2);
});

test('sse: the server\'s expired error event asks for a fresh token', async () => {
  const { client, clock, ES } = setup({ transport: 'sse', getToken: () => 'tok-2' });
  client.connect();
  ES.last().open();
  ES.last().deliver(countMsg(2), 'e-1');
  for (const fn of ES.last().listeners.error) fn({ type: 'error', data: JSON.stringify({ type: 'error', code: 'expired' }) });
  await clock.advance(0);
  assert.equal(ES.instances.length, 2);
  const u = new URL(ES.last().url);
  assert.equal(u.searchParams.get('token'), 'tok-2');
  assert.equal(u.searchParams.get('last_event_id'), 'e-1');
  client.close();
});

test('polling: Authorization, If-None-Match, 304 keeps the count', async () => {
  let n = 0;
  const { client, clock, fetch, events } = setup({ transport: 'polling' }, () =>
    n++ === 0 ? { status: 200, body: countMsg(7), headers: { ETag: '"e1"' } } : { status: 304, headers: { ETag: '"e1"' } },
  );
  client.connect();
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(client.transport, 'polling');
  assert.equal(client.count, 7);
  await clock.advance(10000);
  assert.equal(fetch.calls.length, 3);
  assert.equal(fetch.calls[0].url, `${BASE}/api/v1/communities/${COMMUNITY}/visitors/count`);
  assert.equal(fetch.calls[0].headers.Authorization, 'Bearer tok-1');
  assert.equal(fetch.calls[0].headers['If-None-Match'], undefined);
  assert.equal(fetch.calls[1].headers['If-None-Match'], '"e1"');
  assert.deepEqual(events.count, [7]);
  client.close();
  await clock.advance(60000);
  assert.equal(fetch.calls.length, 3, 'no poll after close');
});

test('polling pauses in a hidden tab and resumes at once when visible', async () => {
  const document = fakeDocument();
  const { client, clock, fetch } = setup({ transport: 'polling', document });
  client.connect();
  await clock.advance(0);
  assert.equal(fetch.calls.length, 1);
  document.set('hidden');
  await clock.advance(60000);
  assert.equal(client.status, 'paused');
  assert.equal(fetch.calls.length, 1, 'no poll while hidden');
  document.set('visible');
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(fetch.calls.length, 2, 'polled at once');
  client.close();
  assert.equal(document.listenerCount(), 0);
});

test('polling: 401 with code 4004 refreshes, 404 stops', async () => {
  let answer = { status: 401, body: { error: 'expired', code: 4004 } };
  const tokens = [];
  const { client, clock, fetch } = setup({ transport: 'polling', getToken: () => 'tok-2' }, (url, init) => {
    tokens.push(init.headers.Authorization);
    const a = answer;
    answer = { status: 404, body: { error: 'not_found' } };
    return a;
  });
  client.connect();
  await clock.advance(0);
  assert.deepEqual(tokens, ['Bearer tok-1', 'Bearer tok-2']);
  assert.equal(client.status, 'stopped');
  await clock.advance(60000);
  assert.equal(fetch.calls.length, 2);
});

test('auto falls all the way to polling, then climbs back to WebSocket without a gap', async () => {
  const { client, clock, WS, ES, fetch, events } = setup();
  client.connect();
  WS.last().refuse();
  await clock.until(() => WS.instances.length === 2);
  WS.last().refuse();
  const blockedAt = clock.now();
  await clock.advance(0);
  ES.last().fail();
  await clock.until(() => ES.instances.length === 2);
  ES.last().fail();
  await clock.advance(0);
  assert.equal(client.transport, 'polling');
  assert.equal(client.status, 'connected');
  // 60 s after WebSocket was blocked, it is probed beside the polling.
  await clock.advance(blockedAt + 60000 - clock.now() - 1);
  assert.equal(WS.instances.length, 2);
  await clock.advance(1);
  const probe = WS.last();
  assert.equal(WS.instances.length, 3);
  assert.equal(client.transport, 'polling', 'still polling while the probe opens');
  probe.accept();
  probe.deliver(countMsg(9));
  await clock.advance(0);
  assert.equal(client.transport, 'websocket');
  assert.equal(client.count, 9);
  const polls = fetch.calls.length;
  await clock.advance(20000);
  assert.equal(fetch.calls.length, polls, 'polling stopped after the switch');
  assert.deepEqual(events.transport.filter((t, i, a) => t !== a[i - 1]), ['websocket', 'sse', 'polling', 'websocket']);
  assert.ok(!events.status.slice(events.status.lastIndexOf('connected')).includes('reconnecting'));
  client.close();
});

test('a failed climb stays put and waits twice as long', async () => {
  const { client, clock, WS, ES } = setup();
  client.connect();
  WS.last().refuse();
  await clock.until(() => WS.instances.length === 2);
  WS.last().refuse();
  await clock.advance(0);
  ES.last().open();
  ES.last().deliver(countMsg(1), 'e-1');
  await clock.advance(60000);
  assert.equal(WS.instances.length, 3, 'probe after 60 s');
  WS.last().refuse();
  await clock.advance(0);
  assert.equal(client.transport, 'sse');
  assert.equal(ES.last().closed, false, 'the working connection was never touched');
  await clock.advance(119000);
  assert.equal(WS.instances.length, 3);
  await clock.advance(1000);
  assert.equal(WS.instances.length, 4, 'next probe 120 s later');
  client.close();
});

test('a forced transport never tries another', async () => {
  const { client, clock, WS, ES } = setup({ transport: 'sse' });
  client.connect();
  for (let i = 0; i < 6; i++) {
    ES.last().fail();
    await clock.until(() => ES.instances.length === i + 2);
  }
  assert.equal(WS.instances.length, 0);
  assert.equal(ES.instances.length, 7);
  client.close();
});

test('dashboard stream: figures, analytics, count from realtime_count', async () => {
  const { client, clock, WS } = setup({ stream: 'dashboard' });
  const dash = [];
  const analytics = [];
  client.on('dashboard', (d) => dash.push(d));
  client.on('analytics', (a) => analytics.push(a));
  client.connect();
  assert.equal(WS.last().url, `ws://gw.test:8080/ws/communities/${COMMUNITY}/visitor-dashboard/`);
  WS.last().accept();
  WS.last().deliver({
    type: 'dashboard_update',
    data: { today_visitors: { authenticated_visitors: 2, anonymous_visitors: 3, total_unique_visitors: 5 }, realtime_count: 4, community_id: COMMUNITY },
    timestamp: 't1',
  });
  WS.last().deliver({ type: 'analytics_update', metric: 'conversion_rate', value: 14.5, timestamp: 't2' });
  await clock.advance(0);
  assert.equal(client.count, 4);
  assert.equal(dash[0].today_visitors.total_unique_visitors, 5);
  assert.equal(client.dashboard.realtime_count, 4);
  assert.deepEqual(analytics, [{ metric: 'conversion_rate', value: 14.5, timestamp: 't2' }]);
  assert.deepEqual(client.metrics, { conversion_rate: { value: 14.5, timestamp: 't2' } });
  client.close();
});

test('requestCount: a message on WebSocket, a snapshot fetch otherwise', async () => {
  const ws = setup();
  ws.client.connect();
  ws.WS.last().accept();
  ws.WS.last().deliver(countMsg(1));
  ws.client.requestCount();
  assert.deepEqual(ws.WS.last().sent, [{ type: 'request_count' }]);
  ws.client.close();

  const sse = setup({ transport: 'sse' });
  sse.client.connect();
  sse.ES.last().open();
  sse.ES.last().deliver(countMsg(1), 'e-1');
  sse.client.requestCount();
  await sse.clock.advance(0);
  assert.equal(sse.client.count, 7);
  sse.client.close();
});

test('an SSE stream that opens but errors before its first event counts as failed', async () => {
  const { client, clock, WS, ES } = setup({ failuresBeforeFallback: 1 });
  client.connect();
  WS.last().refuse(); // with failuresBeforeFallback 1: straight to SSE
  await clock.advance(0);
  assert.equal(ES.instances.length, 1);
  ES.last().open();
  ES.last().fail(); // a buffering proxy: headers, then nothing
  await clock.advance(0);
  assert.equal(client.transport, 'polling');
  assert.equal(client.count, 7);
  client.close();
});

// ---------------------------------------------------------------------------
// No token: no credential on any transport; the server decides (a guest of a
// public community, by its footfall_vid cookie), and cookies go along with
// cross-origin SSE and REST.

/** A WebSocket fake that records how many arguments its constructor got. */
function argcWebSocket() {
  const WS = fakeWebSocket();
  class Counting extends WS {
    constructor(...args) {
      super(...args);
      this.argc = args.length;
    }
  }
  Counting.instances = WS.instances;
  Counting.last = WS.last;
  return Counting;
}

/** An EventSource fake that records its constructor's second argument. */
function initEventSource() {
  const ES = fakeEventSource();
  class WithInit extends ES {
    constructor(url, ...rest) {
      super(url);
      this.argc = 1 + rest.length;
      this.init = rest[0];
    }
  }
  WithInit.instances = ES.instances;
  WithInit.last = ES.last;
  return WithInit;
}

test('no token: the WebSocket opens without a subprotocol and the count follows', async () => {
  const WS = argcWebSocket();
  const { client, clock, events } = setup({ token: undefined, WebSocket: WS });
  client.connect();
  assert.equal(WS.instances.length, 1, 'connects at once, asking nobody for a token');
  const ws = WS.last();
  assert.equal(ws.url, `ws://gw.test:8080/ws/communities/${COMMUNITY}/visitors/`);
  assert.equal(ws.argc, 1, 'new WebSocket(url): no protocols argument at all');
  assert.equal(ws.protocols, undefined);
  ws.accept();
  ws.deliver(countMsg(1));
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(client.count, 1);
  // A drop reconnects the same way.
  ws.serverClose(1006);
  await clock.until(() => WS.instances.length === 2);
  assert.equal(WS.last().argc, 1);
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  await clock.advance(0);
  assert.deepEqual(events.count, [1], 'the same count after the reconnect: no event');
  client.close();
  assert.equal(clock.pending(), 0);
});

test('no token on a community that admits no guests: 4001 stops for good', async () => {
  const WS = argcWebSocket();
  const { client, clock, events } = setup({ token: undefined, WebSocket: WS });
  client.connect();
  WS.last().accept();
  WS.last().serverClose(4001, 'no credential');
  await clock.advance(120000);
  assert.equal(client.status, 'stopped');
  assert.equal(WS.instances.length, 1, 'no retry');
  assert.deepEqual(events.error, [{ code: 4001, reason: 'no credential' }]);
});

test('no token: SSE without ?token=, withCredentials; its REST probe and resume carry no credential either', async () => {
  const ES = initEventSource();
  const inits = [];
  const { client, clock, fetch } = setup({ token: undefined, transport: 'sse', EventSource: ES }, (url, init) => {
    inits.push(init);
    return { status: 200, body: countMsg(1) };
  });
  client.connect();
  const first = new URL(ES.last().url);
  assert.equal(first.pathname, `/sse/communities/${COMMUNITY}/visitors/`);
  assert.equal(first.searchParams.has('token'), false);
  assert.equal(first.search, '');
  assert.deepEqual(ES.last().init, { withCredentials: true });
  ES.last().open();
  ES.last().deliver(countMsg(1), 'e-3');
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(client.count, 1);
  // requestCount on SSE fetches a snapshot: no Authorization, cookies sent.
  client.requestCount();
  await clock.advance(0);
  assert.equal(fetch.calls.length, 1);
  assert.deepEqual(fetch.calls[0].headers, {});
  assert.equal(inits[0].credentials, 'include');
  // EventSource gives up: the REST probe (no credential) says SSE itself
  // fails; the next EventSource resumes, still without a token.
  ES.last().fail({ fatal: true });
  await clock.until(() => ES.instances.length === 2);
  assert.deepEqual(fetch.calls[1].headers, {});
  assert.equal(inits[1].credentials, 'include');
  const again = new URL(ES.last().url);
  assert.equal(again.searchParams.has('token'), false);
  assert.equal(again.searchParams.get('last_event_id'), 'e-3');
  assert.deepEqual(ES.last().init, { withCredentials: true });
  client.close();
});

test('no token: SSE refused as 401 with code 4001 stops', async () => {
  const ES = initEventSource();
  const { client, clock, fetch } = setup({ token: undefined, transport: 'sse', EventSource: ES }, () => ({
    status: 401, body: { error: 'unauthorized', code: 4001 },
  }));
  client.connect();
  ES.last().fail({ fatal: true });
  await clock.advance(60000);
  assert.equal(client.status, 'stopped');
  assert.equal(ES.instances.length, 1);
  assert.deepEqual(fetch.calls[0].headers, {});
});

test('no token: polling without Authorization, with cookies, If-None-Match as usual', async () => {
  const inits = [];
  let n = 0;
  const { client, clock, fetch } = setup({ token: undefined, transport: 'polling' }, (url, init) => {
    inits.push(init);
    return n++ === 0 ? { status: 200, body: countMsg(1), headers: { ETag: '"g1"' } } : { status: 304, headers: { ETag: '"g1"' } };
  });
  client.connect();
  await clock.advance(0);
  assert.equal(client.status, 'connected');
  assert.equal(client.count, 1);
  await clock.advance(5000);
  assert.equal(fetch.calls.length, 2);
  assert.equal(fetch.calls[0].url, `${BASE}/api/v1/communities/${COMMUNITY}/visitors/count`);
  assert.deepEqual(fetch.calls[0].headers, {});
  assert.deepEqual(fetch.calls[1].headers, { 'If-None-Match': '"g1"' });
  for (const init of inits) {
    assert.equal(init.credentials, 'include');
    assert.equal(init.cache, 'no-store');
  }
  client.close();
});

test('no token, auto: falls back from WebSocket to SSE and polling with no credential anywhere', async () => {
  const WS = argcWebSocket();
  const ES = initEventSource();
  const { client, clock, fetch } = setup({ token: undefined, WebSocket: WS, EventSource: ES });
  client.connect();
  WS.last().refuse();
  await clock.until(() => WS.instances.length === 2);
  WS.last().refuse();
  await clock.advance(0);
  assert.equal(client.transport, 'sse');
  assert.equal(new URL(ES.last().url).searchParams.has('token'), false);
  ES.last().fail();
  await clock.until(() => ES.instances.length === 2);
  ES.last().fail();
  await clock.advance(0);
  assert.equal(client.transport, 'polling');
  assert.equal(client.status, 'connected');
  assert.ok(fetch.calls.length > 0);
  for (const c of fetch.calls) assert.equal(c.headers.Authorization, undefined);
  for (const ws of WS.instances) assert.equal(ws.argc, 1);
  client.close();
});

test('with a token, cookies stay same-origin unless withCredentials says otherwise', async () => {
  for (const [opts, want] of [[{}, false], [{ withCredentials: true }, true], [{ getToken: () => 'tok-2', token: undefined }, false]]) {
    const ES = initEventSource();
    const inits = [];
    const { client, clock } = setup({ transport: 'sse', EventSource: ES, ...opts }, (url, init) => {
      inits.push(init);
      return { status: 200, body: countMsg(2) };
    });
    client.connect();
    await clock.advance(0);
    const es = ES.last();
    assert.equal(es.argc, want ? 2 : 1, `${JSON.stringify(opts)}: EventSource arguments`);
    if (want) assert.deepEqual(es.init, { withCredentials: true });
    assert.match(new URL(es.url).searchParams.get('token'), /^tok-/);
    es.open();
    es.deliver(countMsg(2));
    client.requestCount();
    await clock.advance(0);
    assert.equal(inits.length, 1);
    assert.equal(inits[0].credentials, want ? 'include' : undefined, `${JSON.stringify(opts)}: fetch credentials`);
    assert.match(inits[0].headers.Authorization, /^Bearer tok-/);
    client.close();
  }
  // And a client without a token can be told not to send cookies cross-origin.
  const ES = initEventSource();
  const { client } = setup({ token: undefined, transport: 'sse', EventSource: ES, withCredentials: false });
  client.connect();
  assert.equal(ES.last().argc, 1);
  client.close();
});

test('no token, then setToken (a guest signs in): the connection is replaced by one with the token', async () => {
  for (const transport of ['websocket', 'sse']) {
    const WS = argcWebSocket();
    const ES = initEventSource();
    const { client, clock, events } = setup({ token: undefined, transport, WebSocket: WS, EventSource: ES });
    client.connect();
    if (transport === 'websocket') {
      WS.last().accept();
      WS.last().deliver(countMsg(1));
    } else {
      ES.last().open();
      ES.last().deliver(countMsg(1), 'e-1');
    }
    await clock.advance(0);
    assert.equal(client.status, 'connected');
    client.setToken('tok-9');
    if (transport === 'websocket') {
      assert.equal(WS.instances.length, 2, 'a new WebSocket at once');
      assert.equal(WS.instances[0].closedByClient, true);
      assert.deepEqual(WS.instances[0].sent.filter((m) => m.type === 'auth'), [], 'no auth message on the guest connection');
      assert.deepEqual(WS.last().protocols, ['bearer', 'tok-9']);
      WS.last().accept();
      WS.last().deliver(countMsg(2));
    } else {
      assert.equal(ES.instances.length, 2, 'a new EventSource at once');
      assert.equal(ES.instances[0].closed, true);
      assert.equal(new URL(ES.last().url).searchParams.get('token'), 'tok-9');
      ES.last().open();
      ES.last().deliver(countMsg(2), 'e-2');
    }
    await clock.advance(0);
    assert.equal(client.status, 'connected');
    assert.equal(client.count, 2);
    assert.deepEqual(events.error, []);
    // From now on a new token renews the credential in place, as before.
    client.setToken('tok-10');
    if (transport === 'websocket') {
      assert.equal(WS.instances.length, 2);
      assert.deepEqual(WS.last().sent.at(-1), { type: 'auth', token: 'tok-10' });
    } else {
      assert.equal(ES.instances.length, 2);
    }
    client.close();
    assert.equal(clock.pending(), 0, `${transport}: no timer left`);
  }
});

test('setToken before a guest connection opened, or while waiting to retry, needs no extra reconnect', async () => {
  const WS = argcWebSocket();
  const { client, clock } = setup({ token: undefined, WebSocket: WS });
  client.connect();
  WS.last().serverClose(1006);
  await clock.advance(0);
  assert.equal(client.status, 'reconnecting');
  client.setToken('tok-9');
  assert.equal(WS.instances.length, 1, 'the retry timer makes the next attempt');
  await clock.until(() => WS.instances.length === 2);
  assert.deepEqual(WS.last().protocols, ['bearer', 'tok-9']);
  client.close();
});
