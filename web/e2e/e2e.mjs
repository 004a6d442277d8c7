// Browser end-to-end tests of the demo page and footfall-client.js, in
// Debian's headless Chromium driven by playwright-core. Started by
// web/e2e_test.go against in-process gateways:
//
//   node e2e/e2e.mjs --chromium /usr/bin/chromium --base http://127.0.0.1:A \
//     --blocked http://127.0.0.1:B --out e2e/out [--docs ../docs/screenshot.png]
//
// --blocked serves the same gateway but answers 403 to WebSocket upgrades
// until POST /__e2e/allow-websocket. Every wait has a deadline; no sleeps.
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    chromium: { type: 'string' },
    base: { type: 'string' },
    blocked: { type: 'string' },
    out: { type: 'string' },
    docs: { type: 'string' },
  },
});
for (const k of ['chromium', 'base', 'blocked', 'out']) {
  if (!args[k]) {
    console.error(`e2e.mjs: --${k} is required`);
    process.exit(2);
  }
}
mkdirSync(args.out, { recursive: true });

const started = Date.now();
const step = (name) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);
const community = () => crypto.randomUUID();

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
// Every page records each value its count shows, to check there was no flicker.
await context.addInitScript(() => {
  window.__counts = [];
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.querySelector('[data-testid="visitor-count"]');
    new MutationObserver(() => window.__counts.push(el.textContent.trim())).observe(el, { childList: true, characterData: true, subtree: true });
  });
});
const pageErrors = [];

async function open(url) {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${url}: ${err.message}`));
  await page.goto(url);
  return page;
}

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

async function expectSelectorText(page, selector, want, timeout = 10000) {
  try {
    await page.waitForFunction(([s, w]) => document.querySelector(s)?.textContent.trim() === w, [selector, String(want)], { timeout, polling: 50 });
  } catch {
    const got = await page.locator(selector).textContent({ timeout: 100 }).catch(() => '(missing)');
    throw new Error(`${page.url()}: ${selector} shows ${JSON.stringify(got)}, want ${JSON.stringify(String(want))} within ${timeout} ms`);
  }
}

const devInfo = await (await fetch(`${args.base}/dev/info`)).json();
async function service(c, path, body) {
  const r = await fetch(`${args.base}/api/v1/communities/${c}${path}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${devInfo.api_key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${await r.text()}`);
}

let failed = false;
try {
  {
    step('two pages on one community both show 2');
    const c = community();
    const a = await open(`${args.base}/?community=${c}&role=member`);
    const b = await open(`${args.base}/?community=${c}&role=member`);
    for (const p of [a, b]) {
      await expectText(p, 'visitor-count', 2);
      await expectText(p, 'connection-status', 'connected');
      await expectText(p, 'transport', 'websocket');
    }
    step('one page closes: the other shows 1');
    await b.close();
    await expectText(a, 'visitor-count', 1);
    await a.close();
  }

  {
    step('SSE and polling pages show the same count as a WebSocket page');
    const c = community();
    const ws = await open(`${args.base}/?community=${c}&role=member&transport=websocket`);
    const sse = await open(`${args.base}/?community=${c}&role=member&transport=sse`);
    const poll = await open(`${args.base}/?community=${c}&role=member&transport=polling&poll=300`);
    for (const [p, t] of [[ws, 'websocket'], [sse, 'sse'], [poll, 'polling']]) {
      await expectText(p, 'transport', t);
      await expectText(p, 'connection-status', 'connected');
    }
    for (const p of [ws, sse, poll]) await expectText(p, 'visitor-count', 3);
    step('the SSE page closes: 2 everywhere');
    await sse.close();
    for (const p of [ws, poll]) await expectText(p, 'visitor-count', 2);
    await ws.close();
    await poll.close();
  }

  {
    step('WebSocket upgrades refused: the client falls back to SSE by itself');
    const c = community();
    const fb = await open(`${args.blocked}/?community=${c}&role=member&climb=1500`);
    const ws = await open(`${args.base}/?community=${c}&role=member`);
    await expectText(fb, 'transport', 'sse');
    await expectText(fb, 'connection-status', 'connected');
    await expectText(ws, 'transport', 'websocket');
    for (const p of [fb, ws]) await expectText(p, 'visitor-count', 2);
    step('WebSockets allowed again: it climbs back to WebSocket without leaving');
    const r = await fetch(`${args.blocked}/__e2e/allow-websocket`, { method: 'POST' });
    if (!r.ok) throw new Error(`allow-websocket: HTTP ${r.status}`);
    await expectText(fb, 'transport', 'websocket', 15000);
    await expectText(fb, 'connection-status', 'connected');
    for (const p of [fb, ws]) await expectText(p, 'visitor-count', 2);
    const seen = await ws.evaluate(() => window.__counts);
    const after = seen.slice(seen.indexOf('2'));
    if (after.some((v) => v !== '2')) throw new Error(`the WebSocket page saw the count flicker during the switch: ${JSON.stringify(seen)}`);
    await fb.close();
    await ws.close();
  }

  {
    step('a refused token stops the client: WebSocket (4002), SSE (EventSource, then a REST probe), polling');
    const c = community();
    for (const t of ['websocket', 'sse', 'polling']) {
      const p = await open(`${args.base}/?community=${c}&transport=${t}`);
      await p.waitForSelector('#dev-badge:not([hidden])');
      await p.fill('#token', 'not-a-jwt');
      await p.click('#connect');
      await expectText(p, 'connection-status', 'stopped');
      const detail = await p.locator('#status-detail').textContent();
      if (!detail.includes('4002')) throw new Error(`${t}: the stop reason ${JSON.stringify(detail)} does not name 4002`);
      await p.close();
    }
  }

  {
    step('dashboard: figures, an analytics metric posted through the service API');
    const c = community();
    const mod = await open(`${args.base}/?community=${c}&role=moderator`);
    await expectText(mod, 'visitor-count', 1);
    await expectText(mod, 'dashboard-realtime', 1);
    await expectText(mod, 'dashboard-total', 1);
    await service(c, '/metrics', { metric: 'signup_rate', value: 3.25 });
    await expectSelectorText(mod, '[data-metric="signup_rate"] .value', '3.25');

    step('dev buttons: anonymous visitors join and leave, a metric from the page');
    for (const n of [2, 3, 4, 5]) {
      await mod.click('#anon-join');
      await expectText(mod, 'visitor-count', n);
    }
    await expectText(mod, 'dashboard-total', 5);
    await expectText(mod, 'dashboard-anonymous', 4);
    await mod.click('#anon-leave');
    await expectText(mod, 'visitor-count', 4);
    await expectText(mod, 'dashboard-realtime', 4);
    await expectText(mod, 'dashboard-total', 5);
    await mod.fill('#metric-name', 'conversion_rate');
    await mod.fill('#metric-value', '14.5');
    await mod.click('#metric-post');
    await expectSelectorText(mod, '[data-metric="conversion_rate"] .value', '14.5');
    await service(c, '/conversions', { session_id: 'sess-42' });
    await mod.waitForSelector('[data-metric="conversion"]');

    step('screenshot');
    await mod.evaluate(() => document.activeElement?.blur());
    const shot = join(args.out, 'page.png');
    await mod.screenshot({ path: shot, fullPage: true });
    if (args.docs) copyFileSync(shot, args.docs);

    step('phone width: no sideways scrolling, the count in view');
    await mod.setViewportSize({ width: 390, height: 844 });
    const fit = await mod.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      count: document.querySelector('[data-testid="visitor-count"]').getBoundingClientRect().toJSON(),
      live: document.querySelector('[data-testid="visitor-count"]').getAttribute('aria-live'),
    }));
    if (fit.scroll > 390) throw new Error(`at 390 px the page is ${fit.scroll} px wide`);
    if (fit.count.top < 0 || fit.count.bottom > 844) throw new Error(`at phone size the count is out of view: ${JSON.stringify(fit.count)}`);
    if (fit.live !== 'polite') throw new Error('the count is not aria-live');
    await mod.screenshot({ path: join(args.out, 'phone.png'), fullPage: true });
    await mod.close();
  }

  if (pageErrors.length) throw new Error(`uncaught errors in pages:\n${pageErrors.join('\n')}`);
  step('all browser checks passed');
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.message}`);
  try {
    for (const [i, p] of context.pages().entries()) await p.screenshot({ path: join(args.out, `failure-${i}.png`), fullPage: true });
  } catch {
    /* best effort */
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
