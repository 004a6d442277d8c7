// Unit tests of the client's pure logic: backoff, close codes, the fallback
// ladder, token expiry, endpoints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, closeAction, endpoints, httpAction, tokenExpiry, TransportLadder } from '../footfall-client.js';
import { fakeJWT } from '../testing/fakes.mjs';

test('backoff: the ceiling doubles from base up to cap', () => {
  const top = () => 0.999999; // just under the ceiling
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, { base: 500, cap: 30000 }, top));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(backoffDelay(1000, { base: 500, cap: 30000 }, top), 29999, 'huge attempts stay capped');
});

test('backoff: full jitter spreads over [0, ceiling)', () => {
  assert.equal(backoffDelay(3, { base: 100, cap: 10000 }, () => 0), 0);
  assert.equal(backoffDelay(3, { base: 100, cap: 10000 }, () => 0.5), 400);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < 2000; i++) {
    const d = backoffDelay(4, { base: 100, cap: 10000 });
    min = Math.min(min, d);
    max = Math.max(max, d);
    assert.ok(Number.isInteger(d) && d >= 0 && d < 1600, `delay ${d} out of [0, 1600)`);
  }
  assert.ok(min < 400 && max > 1200, `jitter should spread: min ${min}, max ${max}`);
});

test('backoff: defaults and negative attempts', () => {
  assert.equal(backoffDelay(0, undefined, () => 0.5), 250);
  assert.equal(backoffDelay(-3, {}, () => 0.5), 250);
});

test('close codes: 4001-4003 stop, 4004 refreshes, the rest retries', () => {
  for (const c of [4001, 4002, 4003]) assert.equal(closeAction(c), 'stop', String(c));
  assert.equal(closeAction(4004), 'refresh');
  for (const c of [1000, 1001, 1006, 1008, 1009, 1011, 1012, 1013, 4000, undefined]) assert.equal(closeAction(c), 'retry', String(c));
});

test('HTTP answers: auth outcomes, unknown community, transient errors', () => {
  assert.equal(httpAction(200), 'ok');
  assert.equal(httpAction(304), 'ok');
  assert.equal(httpAction(401, 4001), 'stop');
  assert.equal(httpAction(401, 4002), 'stop');
  assert.equal(httpAction(403, 4003), 'stop');
  assert.equal(httpAction(401, 4004), 'refresh');
  assert.equal(httpAction(401), 'stop', 'a 401 without a code');
  assert.equal(httpAction(404), 'stop');
  for (const s of [408, 425, 429, 500, 502, 503]) assert.equal(httpAction(s), 'retry', String(s));
});

test('ladder: auto falls back after the threshold, one step at a time', () => {
  const l = new TransportLadder({ failuresBeforeFallback: 2, climbAfter: 1000 });
  assert.equal(l.pick(0), 'websocket');
  assert.equal(l.failure('websocket', 0), false, 'one failure is retried');
  assert.equal(l.pick(0), 'websocket');
  assert.equal(l.failure('websocket', 10), true, 'the second falls back');
  assert.equal(l.pick(10), 'sse');
  assert.equal(l.failure('sse', 20), false);
  assert.equal(l.failure('sse', 30), true);
  assert.equal(l.pick(30), 'polling');
  for (let i = 0; i < 10; i++) assert.equal(l.failure('polling', 40), false, 'the last transport is never left');
  assert.equal(l.pick(40), 'polling');
});

test('ladder: climbs back once a block runs out; a tripped transport falls on one failure', () => {
  const l = new TransportLadder({ failuresBeforeFallback: 2, climbAfter: 1000, maxClimbAfter: 5000 });
  l.failure('websocket', 0);
  l.failure('websocket', 0); // blocked until 1000, next penalty 2000
  assert.equal(l.climbTarget('sse', 500), null);
  assert.equal(l.nextClimbAt('sse'), 1000);
  assert.equal(l.climbTarget('sse', 1000), 'websocket');
  assert.equal(l.pick(1000), 'websocket');
  // The probe fails: blocked again at once, for twice as long.
  assert.equal(l.failure('websocket', 1000), true);
  assert.equal(l.nextClimbAt('sse'), 3000);
  l.failure('websocket', 3000); // 4000 -> capped
  l.failure('websocket', 7000);
  assert.equal(l.nextClimbAt('sse'), 12000, 'penalty capped at maxClimbAfter');
  // Stable again: a clean slate, two failures needed, first penalty again.
  l.stable('websocket');
  assert.equal(l.failure('websocket', 20000), false);
  assert.equal(l.failure('websocket', 20000), true);
  assert.equal(l.nextClimbAt('sse'), 21000);
});

test('ladder: climbs to the best unblocked transport, not just the next', () => {
  const l = new TransportLadder({ failuresBeforeFallback: 1, climbAfter: 1000 });
  l.failure('websocket', 0); // until 1000
  l.failure('sse', 500); // until 1500
  assert.equal(l.pick(600), 'polling');
  assert.equal(l.nextClimbAt('polling'), 1000);
  assert.equal(l.climbTarget('polling', 1000), 'websocket');
  assert.equal(l.climbTarget('polling', 999), null);
  assert.equal(l.nextClimbAt('websocket'), null, 'nothing above the top');
});

test('ladder: a forced transport is the whole ladder', () => {
  for (const t of ['websocket', 'sse', 'polling']) {
    const l = new TransportLadder({ transport: t });
    assert.deepEqual(l.order, [t]);
    for (let i = 0; i < 5; i++) assert.equal(l.failure(t, i), false);
    assert.equal(l.pick(0), t);
    assert.equal(l.nextClimbAt(t), null);
  }
  assert.throws(() => new TransportLadder({ transport: 'carrier-pigeon' }), /unknown transport/);
});

test('tokenExpiry reads exp from a JWT', () => {
  assert.equal(tokenExpiry(fakeJWT(1760000000)), 1760000000000);
  assert.equal(tokenExpiry('not-a-jwt'), null);
  assert.equal(tokenExpiry('a.%%%.c'), null);
  assert.equal(tokenExpiry(undefined), null);
});

test('endpoints of both streams', () => {
  const v = endpoints('https://ff.example.test/', 'ABC-1', 'visitors');
  assert.deepEqual(v, {
    websocket: 'wss://ff.example.test/ws/communities/ABC-1/visitors/',
    sse: 'https://ff.example.test/sse/communities/ABC-1/visitors/',
    rest: 'https://ff.example.test/api/v1/communities/ABC-1/visitors/count',
  });
  const d = endpoints('http://localhost:8080', 'abc', 'dashboard');
  assert.equal(d.websocket, 'ws://localhost:8080/ws/communities/abc/visitor-dashboard/');
  assert.equal(d.sse, 'http://localhost:8080/sse/communities/abc/visitor-dashboard/');
  assert.equal(d.rest, 'http://localhost:8080/api/v1/communities/abc/visitor-dashboard');
});
