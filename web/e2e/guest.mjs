// Browser test of guests and the leave grace, in Debian's headless Chromium
// driven by playwright-core. Started by web/guest_e2e_test.go against an
// in-process gateway whose --community is public and --private is not:
//
//   node e2e/guest.mjs --chromium /usr/bin/chromium --base http://127.0.0.1:A \
//     --other-origin http://127.0.0.1:B --out e2e/out --community ID --private ID2 --grace-ms 3000
//
// --other-origin is the same gateway on another port: another origin of the
// same site, which footfall allows, for the client's cross-origin SSE and REST.
//
// One browser context is one cookie jar, so its tabs are one guest (the
// footfall_vid cookie); a second context is a second guest. While one tab
// reloads, the other tab's displayed count is read every 50 ms, and every
// value it shows is recorded by a MutationObserver: neither may ever move.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    chromium: { type: 'string' },
    base: { type: 'string' },
    'other-origin': { type: 'string' },
    out: { type: 'string' },
    community: { type: 'string' },
    private: { type: 'string' },
    'grace-ms': { type: 'string' },
  },
});
for (const k of ['chromium', 'base', 'other-origin', 'out', 'community', 'private', 'grace-ms']) {
  if (!args[k]) {
    console.error(`guest.mjs: --${k} is required`);
    process.exit(2);
  }
}
const grace = Number(args['grace-ms']);
const c = args.community;

const started = Date.now();
const step = (name) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);

// The flags of e2e.mjs.
const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const pageErrors = [];

/** A browser context (a cookie jar) whose pages record every value their count shows. */
async function newContext() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await ctx.addInitScript(() => {
    window.__counts = [];
    document.addEventListener('DOMContentLoaded', () => {
      const el = document.querySelector('[data-testid="visitor-count"]');
      if (!el) return;
      new MutationObserver(() => window.__counts.push(el.textContent.trim())).observe(el, { childList: true, characterData: true, subtree: true });
    });
  });
  return ctx;
}

async function open(ctx, url) {
  const page = await ctx.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${url}: ${err.message}`));
  const t0 = Date.now();
  await page.goto(url);
  if (process.env.E2E_TRACE) console.log(`  goto ${Date.now() - t0} ms`);
  return page;
}

const guestURL = (community, extra = '') => `${args.base}/?community=${community}&guest=1${extra}`;

async function expectText(page, testid, want, timeout = 10000) {
  want = String(want);
  const t0 = Date.now();
  try {
    await page.waitForFunction(
      ([id, w]) => document.querySelector(`[data-testid="${id}"]`)?.textContent.trim() === w,
      [testid, want],
      { timeout, polling: 50 },
    );
    if (process.env.E2E_TRACE) console.log(`  ${testid}=${want} after ${Date.now() - t0} ms`);
  } catch {
    const got = await page.locator(`[data-testid="${testid}"]`).textContent().catch(() => '(missing)');
    throw new Error(`${page.url()}: [data-testid=${testid}] shows ${JSON.stringify(got?.trim())}, want ${JSON.stringify(want)} within ${timeout} ms`);
  }
}

const countOf = (page) => page.evaluate(() => document.querySelector('[data-testid="visitor-count"]').textContent.trim());

/**
 * Reads page's displayed count every 50 ms until stop(); each sample has
 * the time its answer came back (the page showed v before that).
 */
function sampler(page) {
  /** @type {{at: number, v: string}[]} */
  const samples = [];
  let on = true;
  const loop = (async () => {
    while (on) {
      let v;
      try {
        v = await countOf(page);
      } catch (err) {
        v = `(unreadable: ${err.message})`;
      }
      samples.push({ at: Date.now(), v });
      await sleep(50);
    }
  })();
  return {
    samples,
    async stop() {
      on = false;
      await loop;
      return samples;
    },
  };
}

/** The footfall_vid cookie of a context, checked for its attributes. */
async function guestCookie(ctx) {
  const all = await ctx.cookies(args.base);
  const vid = all.filter((k) => k.name === 'footfall_vid');
  if (vid.length !== 1) throw new Error(`want one footfall_vid cookie, got ${JSON.stringify(all)}`);
  const k = vid[0];
  if (!k.httpOnly || k.sameSite !== 'Lax' || k.path !== '/' || !k.value) throw new Error(`footfall_vid is not HttpOnly, SameSite=Lax, Path=/: ${JSON.stringify(k)}`);
  return k.value;
}

/**
 * Checks that `watcher` shows `want` all along while `act` runs (a reload,
 * a navigation) and its tab `other` is connected again with `want`, and
 * for the grace and a second more.
 */
async function steadyWhile(watcher, other, want, act, check) {
  const before = (await watcher.evaluate(() => window.__counts.length));
  const s = sampler(watcher);
  await act();
  await check();
  await expectText(other, 'visitor-count', want);
  await expectText(other, 'connection-status', 'connected');
  const back = Date.now();
  await sleep(grace + 1000);
  const samples = await s.stop();
  const moved = samples.filter((x) => x.v !== String(want));
  if (moved.length) throw new Error(`the other tab's count moved: ${JSON.stringify(moved.slice(0, 10))} (${samples.length} samples)`);
  if (samples.length < (grace + 1000) / 200) throw new Error(`only ${samples.length} samples of the other tab's count`);
  const seen = (await watcher.evaluate(() => window.__counts)).slice(before);
  if (seen.some((v) => v !== String(want))) throw new Error(`the other tab showed ${JSON.stringify(seen)}`);
  console.log(`  ${samples.length} samples over ${((samples.at(-1).at - samples[0].at) / 1000).toFixed(1)} s, ${((samples.at(-1).at - back) / 1000).toFixed(1)} s of them after the tab was back: always ${want}`);
}

// The seed's useVisitorWebSocket, as the seed has it, with its TypeScript
// types removed: it opens the socket with no token at all.
const seedHook = `
import { useEffect, useState, useRef } from 'react';

export const useVisitorWebSocket = (communityId) => {
  const [visitorCount, setVisitorCount] = useState(0);
  const [isConnected, setIsConnected] = useState(false);
  const wsRef = useRef(null);

  useEffect(() => {
    const token = localStorage.getItem('jwt_token');
    const wsUrl = \`wss://api.example.com/ws/communities/\${communityId}/visitors/\`;

    const ws = new WebSocket(wsUrl);
    wsRef.current = ws;

    ws.onopen = () => {
      console.log('WebSocket connected');
      setIsConnected(true);

      // Start ping interval
      const pingInterval = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) {
          ws.send(JSON.stringify({ type: 'ping' }));
        }
      }, 30000);

      return () => clearInterval(pingInterval);
    };

    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);

      switch (data.type) {
        case 'visitor_count':
        case 'visitor_joined':
        case 'visitor_left':
          setVisitorCount(data.count);
          break;
        case 'pong':
          console.log('Pong received');
          break;
      }
    };

    ws.onerror = (error) => {
      console.error('WebSocket error:', error);
      setIsConnected(false);
    };

    ws.onclose = () => {
      console.log('WebSocket disconnected');
      setIsConnected(false);
    };

    return () => {
      ws.close();
    };
  }, [communityId]);

  const requestCount = () => {
    if (wsRef.current?.readyState === WebSocket.OPEN) {
      wsRef.current.send(JSON.stringify({ type: 'request_count' }));
    }
  };

  return { visitorCount, isConnected, requestCount };
};
`;

/**
 * Opens a page in ctx that renders the seed's hook (on the tests' tiny fake
 * React) for community; its wss://api.example.com is this gateway. The
 * document is one footfall serves (a page of another address space may not
 * open sockets to this loopback gateway); the hook and React come in as
 * routed scripts.
 */
async function openSeedHook(ctx, community) {
  const page = await ctx.newPage();
  page.on('pageerror', (err) => pageErrors.push(`seed hook: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.log(`  seed hook console: ${msg.text()}`);
  });
  await page.route(`${args.base}/__seed/**`, (route) => {
    const path = new URL(route.request().url()).pathname;
    const js = (body) => route.fulfill({ status: 200, contentType: 'text/javascript', body });
    if (path === '/__seed/react.mjs') return js(readFileSync(new URL('../testing/fake-react.mjs', import.meta.url), 'utf8'));
    if (path === '/__seed/useVisitorWebSocket.mjs') return js(seedHook.replace("from 'react'", "from './react.mjs'"));
    return route.fulfill({ status: 404, body: '' });
  });
  await page.goto(`${args.base}/footfall-client.js`);
  await page.addScriptTag({
    type: 'module',
    content: `
      const Native = WebSocket;
      window.WebSocket = class extends Native {
        constructor(url, ...rest) {
          super(String(url).replace('wss://api.example.com', ${JSON.stringify(args.base.replace(/^http/, 'ws'))}), ...rest);
          window.__seedArgs = rest.length;
        }
      };
      const { renderHook } = await import('/__seed/react.mjs');
      const { useVisitorWebSocket } = await import('/__seed/useVisitorWebSocket.mjs');
      window.__seed = renderHook(() => useVisitorWebSocket(${JSON.stringify(community)}));
    `,
  });
  return page;
}

let failed = false;
const ctxA = await newContext();
let ctxB = null;
try {
  step('two tabs of one browser, guests of a public community: both show 1');
  // The second tab opens once the first has its cookie: two tabs that
  // both connect before either has one are two guests.
  const a = await open(ctxA, guestURL(c));
  await expectText(a, 'connection-status', 'connected');
  const b = await open(ctxA, guestURL(c));
  for (const p of [a, b]) {
    await expectText(p, 'visitor-count', 1);
    await expectText(p, 'connection-status', 'connected');
    await expectText(p, 'transport', 'websocket');
    await p.waitForFunction(() => document.querySelector('[data-testid="grace-note"]')?.hidden === false, null, { timeout: 10000, polling: 50 });
  }
  const vid = await guestCookie(ctxA);
  if ((await a.evaluate(() => document.cookie)).includes('footfall_vid')) throw new Error('the page can read footfall_vid: it is not HttpOnly');
  const note = await a.locator('[data-testid="grace-note"]').textContent();
  if (!/reload/i.test(note)) throw new Error(`the grace note says ${JSON.stringify(note)}`);
  await a.screenshot({ path: join(args.out, 'guest.png'), fullPage: true });

  step('one tab reloads (WebSocket to WebSocket): the other tab shows 1 throughout');
  await steadyWhile(a, b, 1, () => b.reload(), () => expectText(b, 'transport', 'websocket'));
  if ((await guestCookie(ctxA)) !== vid) throw new Error('footfall_vid changed over the reload');

  step('it comes back over SSE (WebSocket to SSE): still 1 throughout');
  await steadyWhile(a, b, 1, () => b.goto(guestURL(c, '&transport=sse')), () => expectText(b, 'transport', 'sse'));

  step('and back again (SSE to WebSocket): still 1 throughout');
  await steadyWhile(a, b, 1, () => b.goto(guestURL(c)), () => expectText(b, 'transport', 'websocket'));

  step("the seed's useVisitorWebSocket, unchanged, in a third tab: the same guest, 1");
  const seed = await openSeedHook(ctxA, c);
  await seed.waitForFunction(() => window.__seed?.result.isConnected === true && window.__seed.result.visitorCount === 1, null, { timeout: 10000, polling: 50 })
    .catch(async () => {
      throw new Error(`seed hook: ${JSON.stringify(await seed.evaluate(() => window.__seed?.result ?? null))}`);
    });
  if ((await seed.evaluate(() => window.__seedArgs)) !== 0) throw new Error('the seed hook passed WebSocket protocols');
  for (const p of [a, b]) await expectText(p, 'visitor-count', 1);

  step('from another origin of the site, the client over SSE and polling sends the cookie: the same guest, 1');
  const other = args['other-origin'];
  const x = await ctxA.newPage();
  x.on('pageerror', (err) => pageErrors.push(`other origin: ${err.message}`));
  await x.goto(`${other}/footfall-client.js`);
  const beforeX = await a.evaluate(() => window.__counts.length);
  await x.evaluate(async ([base, community, other]) => {
    const { FootfallClient } = await import(`${other}/footfall-client.js`);
    window.__clients = {};
    window.__x = {};
    for (const t of ['sse', 'polling']) {
      const client = new FootfallClient({ url: base, community, transport: t, pollInterval: 300 });
      client.on('count', (n) => (window.__x[t] = n));
      client.on('status', (d) => (window.__x[`${t}-status`] = d.status));
      client.connect();
      window.__clients[t] = client;
    }
  }, [args.base, c, other]);
  await x.waitForFunction(() => window.__x.sse === 1 && window.__x.polling === 1 && window.__x['sse-status'] === 'connected' && window.__x['polling-status'] === 'connected', null, { timeout: 10000, polling: 50 })
    .catch(async () => {
      throw new Error(`cross-origin clients: ${JSON.stringify(await x.evaluate(() => window.__x))}`);
    });
  // A few polls later (every 300 ms), still one visitor everywhere.
  await sleep(1000);
  for (const p of [a, b]) await expectText(p, 'visitor-count', 1);
  if ((await x.evaluate(() => [window.__x.sse, window.__x.polling])).join() !== '1,1') throw new Error('a cross-origin client saw the count move');

  step('a cross-origin client told withCredentials: false is another visitor (the control): 2, then 1 after the grace');
  await x.evaluate(async ([base, community]) => {
    const { FootfallClient } = await import(`${location.origin}/footfall-client.js`);
    const client = new FootfallClient({ url: base, community, transport: 'sse', withCredentials: false });
    client.on('count', (n) => (window.__x.control = n));
    client.connect();
    window.__clients.control = client;
  }, [args.base, c]);
  for (const p of [a, b]) await expectText(p, 'visitor-count', 2);
  await x.evaluate(() => window.__clients.control.close());
  for (const p of [a, b]) await expectText(p, 'visitor-count', 1, grace + 10000);
  const seenX = (await a.evaluate(() => window.__counts)).slice(beforeX);
  if (JSON.stringify(seenX) !== JSON.stringify(['2', '1'])) throw new Error(`while the cross-origin clients came and went the tab showed ${JSON.stringify(seenX)}; want ["2","1"]`);
  if ((await guestCookie(ctxA)) !== vid) throw new Error('footfall_vid changed over the cross-origin requests');
  await x.evaluate(() => Object.values(window.__clients).forEach((cl) => cl.close()));
  await x.close();
  for (const p of [a, b]) await expectText(p, 'visitor-count', 1);

  step('a second browser context (another cookie jar) is a second guest: 2');
  ctxB = await newContext();
  const d = await open(ctxB, guestURL(c, '&transport=sse'));
  for (const p of [a, b, d]) await expectText(p, 'visitor-count', 2);
  await seed.waitForFunction(() => window.__seed.result.visitorCount === 2, null, { timeout: 10000, polling: 50 });
  const vidB = await guestCookie(ctxB);
  if (vidB === vid) throw new Error('two cookie jars got the same footfall_vid');

  step('that browser goes away: 2 for the grace, then 1, once');
  const before = await a.evaluate(() => window.__counts.length);
  const s = sampler(a);
  const closedAt = Date.now();
  await ctxB.close();
  ctxB = null;
  await expectText(a, 'visitor-count', 1, grace + 10000);
  const leftBy = Date.now();
  const samples = await s.stop();
  // A sample answered before the grace ran out was read before the leave
  // could happen (the server's close comes after closedAt).
  const early = samples.filter((x) => x.at < closedAt + grace);
  if (early.length === 0) throw new Error('no sample of the count within the grace');
  const wrong = early.filter((x) => x.v !== '2');
  if (wrong.length) throw new Error(`the count moved within the grace: ${JSON.stringify(wrong.slice(0, 5))}`);
  const seen = (await a.evaluate(() => window.__counts)).slice(before);
  if (JSON.stringify(seen) !== JSON.stringify(['1'])) throw new Error(`after the leave the tab showed ${JSON.stringify(seen)}; want ["1"]`);
  console.log(`  2 in ${early.length} samples within the grace; 1 by ${((leftBy - closedAt) / 1000).toFixed(1)} s after the close`);
  await expectText(b, 'visitor-count', 1);

  step('a community that is not public refuses a guest: 4001, explained');
  const p = await open(ctxA, guestURL(args.private));
  await expectText(p, 'connection-status', 'stopped');
  const detail = await p.locator('#status-detail').textContent();
  if (!detail.includes('4001') || !/admits no guests/.test(detail)) throw new Error(`the stop reason ${JSON.stringify(detail)} does not explain 4001 for a guest`);
  await p.close();

  step('a dev token still connects from the same page (member role), and its reload is the same visitor: 2 throughout');
  const m = await open(ctxA, `${args.base}/?community=${c}&role=member`);
  for (const q of [a, b, m]) await expectText(q, 'visitor-count', 2);
  const devSub = async () => (await m.locator('#identity').textContent()).match(/dev-[a-z0-9]+/)?.[0];
  const sub = await devSub();
  await steadyWhile(a, m, 2, () => m.reload(), () => expectText(m, 'transport', 'websocket'));
  if (!sub || (await devSub()) !== sub) throw new Error(`the reload changed the dev visitor: ${sub} -> ${await devSub()}`);
  await m.close();
  await expectText(a, 'visitor-count', 1, grace + 10000);

  step('phone width, as a guest: no sideways scrolling, the count and the grace note in view');
  await a.setViewportSize({ width: 390, height: 844 });
  const fit = await a.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    count: document.querySelector('[data-testid="visitor-count"]').getBoundingClientRect().toJSON(),
    note: document.querySelector('[data-testid="grace-note"]').getBoundingClientRect().toJSON(),
  }));
  if (fit.scroll > 390) throw new Error(`at 390 px the guest page is ${fit.scroll} px wide`);
  for (const [what, r] of [['count', fit.count], ['grace note', fit.note]]) {
    if (r.top < 0 || r.bottom > 844 || r.right > 390) throw new Error(`at phone size the ${what} is out of view: ${JSON.stringify(r)}`);
  }
  await a.screenshot({ path: join(args.out, 'guest-phone.png'), fullPage: true });

  if (pageErrors.length) throw new Error(`uncaught errors in pages:\n${pageErrors.join('\n')}`);
  step('all guest checks passed');
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.message}`);
  try {
    for (const ctx of [ctxA, ctxB]) {
      if (!ctx) continue;
      for (const [i, p] of ctx.pages().entries()) await p.screenshot({ path: join(args.out, `guest-failure-${ctx === ctxA ? 'a' : 'b'}${i}.png`), fullPage: true });
    }
  } catch {
    /* best effort */
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
