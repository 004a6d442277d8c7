// useVisitorCount: a React hook on footfall's browser client, exported by
// the npm package as @footfall/client/react (plain JS, no build step of its
// own; React 16.8+).
//
//   import { useVisitorCount } from '@footfall/client/react';
//
//   function LiveBadge({ communityId }) {
//     const { count, status, transport } = useVisitorCount(communityId, {
//       url: 'https://footfall.example.com',
//       getToken: () => fetch('/api/footfall-token').then((r) => r.text()),
//     });
//     return <span title={`${status} via ${transport}`}>{count ?? '…'} here now</span>;
//   }
//
// What it fixes in the seed's useVisitorWebSocket: the token travels as the
// subprotocol pair ['bearer', token] (browsers refuse 'Bearer <jwt>': a
// subprotocol may not contain a space); the ping timer lives in the client
// and is cleared on close and on unmount; it reconnects with backoff, stops on
// 4001-4003, asks getToken on 4004, and falls back to SSE or polling where
// WebSockets are blocked. Pages without a signed-in user pass { guest: true }
// to watch a public community with no token.
import { useCallback, useEffect, useRef, useState } from 'react';
import { FootfallClient } from '../footfall-client.js';

/**
 * @typedef {object} VisitorCountOptions
 * @property {string} [url] the gateway's base URL (default: the page's origin)
 * @property {string} [token] a JWT; a new value reconnects
 * @property {(reason: string) => string | Promise<string>} [getToken] asked for a fresh JWT (on 4004, before expiry, and at start without token)
 * @property {'auto' | 'websocket' | 'sse' | 'polling'} [transport] default 'auto'; a new value reconnects
 * @property {'visitors' | 'dashboard'} [stream] default 'visitors'; a new value reconnects
 * @property {boolean} [guest] true: without token and getToken, connect with no credential (a guest of a
 *   public community, counted once per browser by its footfall_vid cookie); false (default): wait for one
 * @property {boolean} [enabled] false: stay disconnected (default true)
 * Every other FootfallClient option is passed on when the client is created.
 */

/**
 * The live visitor count of a community.
 * @param {string | null | undefined} communityId
 * @param {VisitorCountOptions & Record<string, any>} [options]
 * @returns {{count: number | null, status: string, transport: string | null, isConnected: boolean,
 *   dashboard: object | null, metrics: Record<string, {value: unknown, timestamp?: string}>,
 *   error: {code?: number | string, reason?: string} | null, requestCount: () => void}}
 */
export function useVisitorCount(communityId, options = {}) {
  const { url, token, getToken, transport = 'auto', stream = 'visitors', enabled = true, guest = false, ...clientOptions } = options;
  const [state, setState] = useState(() => ({
    count: null, status: 'idle', transport: null, dashboard: null, metrics: {}, error: null,
  }));
  const clientRef = useRef(null);
  // The latest getToken and extra options, without reconnecting when an
  // inline function changes identity on every render.
  const getTokenRef = useRef(getToken);
  getTokenRef.current = getToken;
  const extraRef = useRef(clientOptions);
  extraRef.current = clientOptions;
  const hasGetToken = typeof getToken === 'function';

  useEffect(() => {
    if (!enabled || !communityId || (!token && !hasGetToken && !guest)) return undefined;
    const client = new FootfallClient({
      ...extraRef.current,
      url,
      community: communityId,
      stream,
      transport,
      token,
      getToken: hasGetToken ? (reason) => getTokenRef.current(reason) : undefined,
    });
    clientRef.current = client;
    const patch = (p) => setState((s) => ({ ...s, ...p }));
    const offs = [
      client.on('count', (count) => patch({ count })),
      client.on('status', (d) => patch({ status: d.status, ...(d.status === 'stopped' ? { error: { code: d.code, reason: d.reason } } : {}) })),
      client.on('transport', (t) => patch({ transport: t })),
      client.on('dashboard', (dashboard) => patch({ dashboard })),
      client.on('analytics', (a) => setState((s) => ({ ...s, metrics: { ...s.metrics, [a.metric]: { value: a.value, timestamp: a.timestamp } } }))),
    ];
    patch({ status: 'connecting', error: null });
    client.connect();
    return () => {
      for (const off of offs) off();
      client.close(); // closes the socket and clears its ping timer
      if (clientRef.current === client) clientRef.current = null;
    };
  }, [enabled, communityId, url, token, hasGetToken, guest, transport, stream]);

  const requestCount = useCallback(() => clientRef.current?.requestCount(), []);
  return { ...state, isConnected: state.status === 'connected', requestCount };
}

export default useVisitorCount;
