// The React hook on a fake React renderer: it connects with the bearer
// subprotocol, follows the count, reconnects when its inputs change, and on
// unmount closes the socket and leaves no timer (the seed's hook leaked its
// ping interval).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { COMMUNITY, countMsg, fakeClock, fakeWebSocket } from '../testing/fakes.mjs';

register('../testing/react-loader.mjs', import.meta.url);
const { useVisitorCount } = await import('../react/useVisitorCount.js');
const { renderHook } = await import('../testing/fake-react.mjs');

test('useVisitorCount follows the count and cleans up on unmount', async () => {
  const clock = fakeClock();
  const WS = fakeWebSocket();
  const h = renderHook((p) =>
    useVisitorCount(p.community, { url: 'http://gw.test', token: p.token, WebSocket: WS, clock, document: null }),
    { community: COMMUNITY, token: 'tok-1' },
  );
  assert.equal(WS.instances.length, 1);
  assert.deepEqual(WS.last().protocols, ['bearer', 'tok-1']);
  assert.equal(h.result.status, 'connecting');
  WS.last().accept();
  WS.last().deliver(countMsg(3));
  assert.equal(h.result.count, 3);
  assert.equal(h.result.isConnected, true);
  assert.equal(h.result.transport, 'websocket');

  await clock.advance(25000);
  assert.deepEqual(WS.last().sent.filter((m) => m.type === 'ping').length, 1, 'pings');

  h.rerender({ community: COMMUNITY, token: 'tok-2' });
  assert.equal(WS.instances[0].closedByClient, true, 'a new token reconnects');
  assert.deepEqual(WS.last().protocols, ['bearer', 'tok-2']);
  WS.last().accept();
  WS.last().deliver(countMsg(4));
  assert.equal(h.result.count, 4);

  h.unmount();
  assert.equal(WS.last().closedByClient, true, 'unmount closes the socket');
  assert.equal(clock.pending(), 0, 'unmount leaves no timer: the ping interval is gone');
  await clock.advance(120000);
  assert.equal(WS.last().sent.filter((m) => m.type === 'ping').length, 0);
});

test('useVisitorCount reports a refused token and stays disconnected without one', () => {
  const clock = fakeClock();
  const WS = fakeWebSocket();
  const h = renderHook(() => useVisitorCount(COMMUNITY, { url: 'http://gw.test', token: 'bad', WebSocket: WS, clock, document: null }));
  WS.last().accept();
  WS.last().serverClose(4002, 'bad signature');
  assert.equal(h.result.status, 'stopped');
  assert.deepEqual(h.result.error, { code: 4002, reason: 'bad signature' });
  h.unmount();

  const none = renderHook(() => useVisitorCount(COMMUNITY, { url: 'http://gw.test', WebSocket: WS, clock, document: null }));
  assert.equal(none.result.status, 'idle');
  assert.equal(WS.instances.length, 1);
  none.unmount();
});

test('useVisitorCount with guest: true connects without a credential, and with the token once there is one', () => {
  const clock = fakeClock();
  const WS = fakeWebSocket();
  const h = renderHook(
    (p) => useVisitorCount(COMMUNITY, { url: 'http://gw.test', guest: true, token: p.token, WebSocket: WS, clock, document: null }),
    { token: undefined },
  );
  assert.equal(WS.instances.length, 1);
  assert.equal(WS.last().protocols, undefined, 'no subprotocol');
  WS.last().accept();
  WS.last().deliver(countMsg(1));
  assert.equal(h.result.count, 1);
  assert.equal(h.result.isConnected, true);
  h.rerender({ token: 'tok-1' });
  assert.equal(WS.instances[0].closedByClient, true);
  assert.deepEqual(WS.last().protocols, ['bearer', 'tok-1']);
  h.unmount();
  assert.equal(clock.pending(), 0);
});
