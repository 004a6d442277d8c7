// Unit tests of FootfallClient.visitorHistory, the client of footfall's
// history endpoint (docs/protocol.md, history), on a fake fetch; the browser
// test (e2e/history.mjs) runs it against a real footfall.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FootfallClient, FootfallHTTPError } from '../footfall-client.js';
import { COMMUNITY, fakeClock, fakeFetch } from '../testing/fakes.mjs';

const BASE = 'http://gw.test:8080/footfall/';
const NOW = Date.UTC(2025, 4, 6, 14, 37, 12, 345); // 2025-05-06T14:37:12.345Z

function setup(opts = {}, respond) {
  const fetch = fakeFetch(respond ?? ((url) => ({ status: 200, body: hourly(url) })));
  const client = new FootfallClient({ url: BASE, community: COMMUNITY, token: 'tok-1', fetch, document: null, clock: fakeClock(NOW), ...opts });
  return { client, fetch };
}

/** The endpoint's answer for a request: two hour points. */
function hourly(url) {
  const q = new URL(url).searchParams;
  return {
    community_id: COMMUNITY,
    step: q.get('step'),
    points: [
      { time: '2025-05-06T13:00:00Z', peak: 4, average: 1.5 },
      { time: '2025-05-06T14:00:00Z', peak: 2, average: 0.25 },
    ],
  };
}

const query = (call) => Object.fromEntries(new URL(call.url).searchParams);

test('visitorHistory: by the hour (footfall\'s default bounds), with the token, times as Dates', async () => {
  const { client, fetch } = setup();
  const h = await client.visitorHistory();
  assert.equal(fetch.calls.length, 1);
  const call = fetch.calls[0];
  assert.equal(call.url.split('?')[0], `http://gw.test:8080/footfall/api/v1/communities/${COMMUNITY}/visitors/history`);
  assert.deepEqual(query(call), { step: 'hour' }, 'bounds left out are footfall\'s to choose');
  assert.equal(call.headers.Authorization, 'Bearer tok-1');
  assert.equal(call.headers.Accept, 'application/json');
  assert.equal(call.credentials, undefined, 'a token: cookies stay same-origin');
  assert.equal(h.community_id, COMMUNITY);
  assert.equal(h.step, 'hour');
  assert.equal(h.points.length, 2);
  assert.ok(h.points[0].time instanceof Date);
  assert.equal(h.points[0].time.toISOString(), '2025-05-06T13:00:00.000Z');
  assert.deepEqual({ peak: h.points[1].peak, average: h.points[1].average }, { peak: 2, average: 0.25 });
  assert.equal('peak_at' in h.points[0], false, 'hour points have no peak_at');
});

test('visitorHistory: another community, Dates, numbers and strings as bounds, minute and day steps', async () => {
  const { client, fetch } = setup();
  await client.visitorHistory('ABCDEF01-0000-4000-8000-000000000001', { from: new Date(Date.UTC(2025, 4, 6, 12, 0, 0, 999)), to: NOW, step: 'minute' });
  assert.match(fetch.calls[0].url, /\/communities\/ABCDEF01-0000-4000-8000-000000000001\/visitors\/history\?/);
  assert.deepEqual(query(fetch.calls[0]), { from: '2025-05-06T12:00:00Z', to: '2025-05-06T14:37:12Z', step: 'minute' });
  await client.visitorHistory({ from: '2025-05-01T00:00:00+02:00', to: '2025-05-06T00:00:00+02:00', step: 'day' });
  assert.deepEqual(query(fetch.calls[1]), { from: '2025-05-01T00:00:00+02:00', to: '2025-05-06T00:00:00+02:00', step: 'day' }, 'strings go as they are');
  assert.match(fetch.calls[1].url, /from=2025-05-01T00%3A00%3A00%2B02%3A00/, 'the offset survives the query string');
  await client.visitorHistory({ to: Date.UTC(2025, 4, 6, 10) });
  assert.deepEqual(query(fetch.calls[2]), { to: '2025-05-06T10:00:00Z', step: 'hour' });
});

test('visitorHistory: day points keep their totals, peak_at becomes a Date', async () => {
  const { client } = setup({}, () => ({
    status: 200,
    body: {
      community_id: COMMUNITY,
      step: 'day',
      points: [
        { time: '2025-05-05T00:00:00Z', peak: 9, average: 2.5, authenticated_visitors: 7, anonymous_visitors: 5, total_unique_visitors: 12, peak_at: '2025-05-05T18:04:05Z' },
        { time: '2025-05-06T00:00:00Z', peak: 0, average: 0, authenticated_visitors: 0, anonymous_visitors: 0, total_unique_visitors: 0 },
      ],
    },
  }));
  const h = await client.visitorHistory({ step: 'day' });
  const [d1, d2] = h.points;
  assert.equal(d1.total_unique_visitors, 12);
  assert.equal(d1.authenticated_visitors, 7);
  assert.ok(d1.peak_at instanceof Date);
  assert.equal(d1.peak_at.toISOString(), '2025-05-05T18:04:05.000Z');
  assert.equal(d2.peak_at, undefined, 'a day with nobody has no peak_at');
});

test('visitorHistory: a 400 rejects with the status, slug, message and field', async () => {
  const { client } = setup({}, () => ({
    status: 400,
    body: { error: 'invalid_query', message: 'from: not an RFC 3339 time', field: 'from' },
  }));
  const err = await client.visitorHistory({ from: 'yesterday' }).then(() => null, (e) => e);
  assert.ok(err instanceof FootfallHTTPError, `${err}`);
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'FootfallHTTPError');
  assert.equal(err.status, 400);
  assert.equal(err.error, 'invalid_query');
  assert.equal(err.field, 'from');
  assert.equal(err.message, 'from: not an RFC 3339 time');
  assert.equal(err.code, undefined);
});

test('visitorHistory: 403 (a member) rejects with code 4003; a body that is not JSON still rejects', async () => {
  const { client } = setup({}, () => ({ status: 403, body: { error: 'forbidden', message: 'not a moderator', code: 4003 } }));
  await assert.rejects(client.visitorHistory(), { name: 'FootfallHTTPError', status: 403, error: 'forbidden', code: 4003 });
  const other = setup({}, () => ({ status: 502, body: '<html>bad gateway</html>' }));
  await assert.rejects(other.client.visitorHistory(), { status: 502, error: 'http_error', message: 'HTTP 502' });
  const odd = setup({}, () => ({ status: 200, body: '<html>a page</html>' }));
  await assert.rejects(odd.client.visitorHistory(), { status: 200, error: 'invalid_response' });
});

test('visitorHistory: 4004 asks getToken for a fresh token and tries once more', async () => {
  const asked = [];
  const { client, fetch } = setup(
    { getToken: async (reason) => (asked.push(reason), 'tok-2') },
    (url, init) => (init.headers.Authorization === 'Bearer tok-2'
      ? { status: 200, body: hourly(url) }
      : { status: 401, body: { error: 'expired', message: 'token expired', code: 4004 } }),
  );
  const h = await client.visitorHistory();
  assert.equal(h.points.length, 2);
  assert.deepEqual(asked, ['expired']);
  assert.deepEqual(fetch.calls.map((c) => c.headers.Authorization), ['Bearer tok-1', 'Bearer tok-2']);
  // The fresh token is the client's from now on.
  await client.visitorHistory();
  assert.equal(fetch.calls[2].headers.Authorization, 'Bearer tok-2');

  // Still expired after the refresh: the second 4004 rejects, no loop.
  const stale = setup({ getToken: async () => 'tok-3' }, () => ({ status: 401, body: { error: 'expired', message: 'expired', code: 4004 } }));
  await assert.rejects(stale.client.visitorHistory(), { status: 401, code: 4004 });
  assert.equal(stale.fetch.calls.length, 2);
  // Without getToken, 4004 rejects at once.
  const bare = setup({}, () => ({ status: 401, body: { error: 'expired', message: 'expired', code: 4004 } }));
  await assert.rejects(bare.client.visitorHistory(), { code: 4004 });
  assert.equal(bare.fetch.calls.length, 1);
});

test('visitorHistory: no token but getToken asks it first; neither sends cookies instead', async () => {
  const asked = [];
  const { client, fetch } = setup({ token: undefined, getToken: (reason) => (asked.push(reason), 'tok-9') });
  await client.visitorHistory();
  await client.visitorHistory();
  assert.deepEqual(asked, ['initial'], 'the token is kept for the next call and for connect()');
  assert.deepEqual(fetch.calls.map((c) => c.headers.Authorization), ['Bearer tok-9', 'Bearer tok-9']);

  const guest = setup({ token: undefined });
  await guest.client.visitorHistory();
  assert.equal(guest.fetch.calls[0].headers.Authorization, undefined);
  assert.equal(guest.fetch.calls[0].credentials, 'include', 'no token: the cookies are the credential, also cross-origin');
});

test('visitorHistory: a bad step or time rejects before any request; the signal reaches fetch', async () => {
  const { client, fetch } = setup();
  await assert.rejects(client.visitorHistory({ step: 'week' }), TypeError);
  await assert.rejects(client.visitorHistory({ from: new Date('nonsense') }), /from is not a valid time/);
  await assert.rejects(client.visitorHistory({ to: NaN }), /to is not a valid time/);
  await assert.rejects(client.visitorHistory({ from: {} }), /from must be a Date/);
  assert.equal(fetch.calls.length, 0);
  const ctrl = new AbortController();
  await client.visitorHistory({ signal: ctrl.signal });
  assert.equal(fetch.calls[0].signal, ctrl.signal);
});
