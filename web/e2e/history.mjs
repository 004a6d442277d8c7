// Browser test of the dashboard's peak and visitor history, in Debian's
// headless Chromium driven by playwright-core. Started by
// web/history_e2e_test.go against an in-process dev-mode gateway on the
// memory bus:
//
//   node e2e/history.mjs --chromium /usr/bin/chromium --base http://127.0.0.1:A --out e2e/out
//
// A moderator's page and a member's page open one community; the moderator
// adds simulated visitors, one leaves again. The moderator's dashboard must
// show today's peak as footfall has it ("N at HH:MM" in the browser's time
// zone) and a chart of exactly the points the history endpoint answers for
// the window the page asked (docs/protocol.md, history); the member sees no
// chart and never asks for history. FootfallClient.visitorHistory is then
// checked against the real endpoint: Dates, a 403 and a 400 naming its
// field. Every wait has a deadline; no sleeps.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    chromium: { type: 'string' },
    base: { type: 'string' },
    out: { type: 'string' },
  },
});
for (const k of ['chromium', 'base', 'out']) {
  if (!args[k]) {
    console.error(`history.mjs: --${k} is required`);
    process.exit(2);
  }
}

const started = Date.now();
const step = (name) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);
// Not UTC, so that a time shown in UTC would be caught; E2E_TZ=Asia/Kolkata
// tries a zone whose round hours are not footfall's (UTC) hour buckets.
const TZ = process.env.E2E_TZ || 'Europe/Berlin';

// The flags of e2e.mjs.
const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: TZ, locale: 'en-US' });
const pageErrors = [];
/** The history requests each page made. @type {Map<import('playwright-core').Page, string[]>} */
const historyRequests = new Map();

async function open(url) {
  const page = await context.newPage();
  const seen = [];
  historyRequests.set(page, seen);
  page.on('pageerror', (err) => pageErrors.push(`${url}: ${err.message}`));
  page.on('request', (r) => {
    if (r.url().includes('/visitors/history')) seen.push(r.url());
  });
  await page.goto(url);
  return page;
}

async function expectText(page, testid, want, timeout = 10000) {
  want = String(want);
  try {
    await page.waitForFunction(
      ([id, w]) => document.querySelector(`[data-testid="${id}"]`)?.textContent.trim() === w,
      [testid, want],
      { timeout, polling: 50 },
    );
  } catch {
    const got = await page.locator(`[data-testid="${testid}"]`).textContent({ timeout: 100 }).catch(() => '(missing)');
    throw new Error(`${page.url()}: [data-testid=${testid}] shows ${JSON.stringify(got?.trim())}, want ${JSON.stringify(want)} within ${timeout} ms`);
  }
}

/** Waits until the history chart's data-* match want (strings). */
async function expectChart(page, want, timeout = 15000) {
  try {
    await page.waitForFunction(
      (w) => {
        const d = document.querySelector('[data-testid="history-chart"]')?.dataset ?? {};
        return Object.entries(w).every(([k, v]) => d[k] === v);
      },
      want,
      { timeout, polling: 50 },
    );
  } catch {
    const got = await page.evaluate(() => ({ ...document.querySelector('[data-testid="history-chart"]')?.dataset }));
    throw new Error(`the history chart has ${JSON.stringify(got)}, want ${JSON.stringify(want)} within ${timeout} ms`);
  }
}

/** HH:MM of an RFC 3339 time in TZ, computed here, not by the page's code. */
function hhmm(rfc3339) {
  const parts = new Intl.DateTimeFormat('en-GB', { timeZone: TZ, hour: 'numeric', minute: 'numeric', hourCycle: 'h23' }).formatToParts(new Date(rfc3339));
  const get = (type) => parts.find((p) => p.type === type).value.padStart(2, '0');
  return `${get('hour')}:${get('minute')}`;
}

async function token(community, role, sub) {
  const r = await fetch(`${args.base}/dev/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ community, role, sub }),
  });
  if (!r.ok) throw new Error(`dev token: HTTP ${r.status} ${await r.text()}`);
  return (await r.json()).token;
}

async function getJSON(path, tok) {
  const r = await fetch(`${args.base}${path}`, { headers: { Authorization: `Bearer ${tok}` } });
  const body = await r.json();
  if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status} ${JSON.stringify(body)}`);
  return body;
}

/** The chart's bars as the page drew them. */
const bars = (page) => page.$$eval('[data-testid="history-chart"] rect.bar', (rs) => rs.map((r) => ({
  time: r.dataset.time,
  peak: Number(r.dataset.peak),
  average: Number(r.dataset.average),
  title: r.querySelector('title')?.textContent ?? '',
})));

/**
 * Checks the chart against the history endpoint asked for the same window
 * (data-from, data-to, data-step): the same number of bars, each bucket's
 * time and peak, the averages of the closed buckets (the current one's runs
 * on), and says so in its aria-label.
 */
async function chartMatchesEndpoint(page, c, modToken, wantLastPeak) {
  const d = await page.evaluate(() => ({ ...document.querySelector('[data-testid="history-chart"]').dataset }));
  const q = new URLSearchParams({ from: d.from, to: d.to, step: d.step });
  const h = await getJSON(`/api/v1/communities/${c}/visitors/history?${q}`, modToken);
  const drawn = await bars(page);
  const pts = h.points;
  if (drawn.length !== pts.length || Number(d.points) !== pts.length) {
    throw new Error(`${d.step} chart: ${drawn.length} bars (data-points ${d.points}); the endpoint answers ${pts.length} points for ${q}`);
  }
  for (const [i, p] of pts.entries()) {
    const b = drawn[i];
    if (new Date(b.time).getTime() !== new Date(p.time).getTime() || b.peak !== p.peak) {
      throw new Error(`${d.step} chart bar ${i}: ${JSON.stringify(b)}; the endpoint's point is ${JSON.stringify(p)}`);
    }
    if (i < pts.length - 1 && Math.abs(b.average - p.average) > 1e-9) {
      throw new Error(`${d.step} chart bar ${i}: average ${b.average}; the endpoint's ${p.average}`);
    }
    if (!b.title.includes(`peak ${p.peak}`)) throw new Error(`${d.step} chart bar ${i} has the title ${JSON.stringify(b.title)}, which does not say peak ${p.peak}`);
  }
  const last = pts[pts.length - 1];
  if (last.peak !== wantLastPeak || d.lastPeak !== String(wantLastPeak)) {
    throw new Error(`${d.step} chart: last point's peak ${last.peak} (endpoint), data-last-peak ${d.lastPeak}; want ${wantLastPeak}`);
  }
  const label = await page.getAttribute('[data-testid="history-chart"]', 'aria-label');
  if (!label.includes(`${pts.length} bars`) || !label.includes(`peak ${wantLastPeak}`)) {
    throw new Error(`${d.step} chart's aria-label ${JSON.stringify(label)} does not give its figures`);
  }
  return { points: pts.length, lastPeak: last.peak };
}

let failed = false;
try {
  const c = crypto.randomUUID();
  const modToken = await token(c, 'moderator', 'history-e2e-mod');
  const memberToken = await token(c, 'member', 'history-e2e-member');

  step('a moderator opens the dashboard: peak 1, a chart of 24 hourly points');
  const mod = await open(`${args.base}/?community=${c}&role=moderator`);
  await expectText(mod, 'visitor-count', 1);
  await expectText(mod, 'dashboard-realtime', 1);
  await expectText(mod, 'dashboard-peak', 1);
  await mod.waitForSelector('[data-testid="history"]:not([hidden])', { timeout: 5000 });
  await expectChart(mod, { state: 'ready', step: 'hour', points: '24', lastPeak: '1' });

  step('a member opens the page: no chart, no history request');
  const member = await open(`${args.base}/?community=${c}&role=member`);
  await expectText(member, 'visitor-count', 2);
  await expectText(member, 'connection-status', 'connected');

  step('visitors join (a moderator, a member, 3 simulated), one leaves: the dashboard shows peak 5 at its time');
  for (const n of [3, 4, 5]) {
    await mod.click('#anon-join');
    await expectText(mod, 'visitor-count', n);
  }
  await mod.click('#anon-leave');
  await expectText(mod, 'visitor-count', 4);
  await expectText(mod, 'dashboard-realtime', 4);
  const dash = await getJSON(`/api/v1/communities/${c}/visitor-dashboard`, modToken);
  const peak = dash.data.peak_today;
  if (peak?.count !== 5 || dash.data.realtime_count !== 4) throw new Error(`footfall's dashboard says ${JSON.stringify(dash.data)}; want peak 5, count 4`);
  await expectText(mod, 'dashboard-peak', 5);
  await expectText(mod, 'dashboard-peak-at', `at ${hhmm(peak.at)}`);
  const tileLabel = await mod.getAttribute('#d-peak-tile', 'aria-label');
  if (tileLabel !== `Peak today: 5 at ${hhmm(peak.at)}`) throw new Error(`the peak tile's aria-label is ${JSON.stringify(tileLabel)}`);

  step('the chart follows the peak and has the points the history endpoint answers');
  await expectChart(mod, { state: 'ready', step: 'hour', points: '24', lastPeak: '5' });
  const hours = await chartMatchesEndpoint(mod, c, modToken, 5);
  console.log(`  hour chart: ${hours.points} bars, last peak ${hours.lastPeak}`);

  step('screenshots: the dashboard card and the page');
  await mod.evaluate(() => document.activeElement?.blur());
  await mod.locator('#dashboard-card').screenshot({ path: join(args.out, 'history.png') });

  step('60 minutes: 60 minute points, as the endpoint answers');
  await mod.click('#history-minutes');
  await expectChart(mod, { state: 'ready', step: 'minute', points: '60' });
  const lastMinute = Number(await mod.getAttribute('[data-testid="history-chart"]', 'data-last-peak'));
  if (lastMinute !== 4 && lastMinute !== 5) throw new Error(`the current minute's peak is ${lastMinute}; want 4 or 5`);
  await chartMatchesEndpoint(mod, c, modToken, lastMinute);
  await mod.locator('#dashboard-card').screenshot({ path: join(args.out, 'history-minutes.png') });
  await mod.click('#history-hours');
  await expectChart(mod, { state: 'ready', step: 'hour', points: '24', lastPeak: '5' });
  await mod.evaluate(() => scrollTo(0, 0)); // the sticky header back on top after the card's shots
  await mod.screenshot({ path: join(args.out, 'history-page.png'), fullPage: true });

  step('phone width: the chart fits');
  await mod.setViewportSize({ width: 390, height: 844 });
  await mod.waitForFunction(() => document.querySelector('[data-testid="history-chart"]').getBoundingClientRect().width <= 390);
  const fit = await mod.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    chart: document.querySelector('[data-testid="history-chart"]').getBoundingClientRect().toJSON(),
  }));
  if (fit.scroll > 390 || fit.chart.right > 390) throw new Error(`at 390 px the page is ${fit.scroll} px wide, the chart ends at ${fit.chart.right}`);
  await mod.locator('#dashboard-card').screenshot({ path: join(args.out, 'history-phone.png') });

  step('the member still sees no chart and made no history request');
  if (await member.isVisible('[data-testid="history"]')) throw new Error('the member sees the history chart');
  if (await member.locator('[data-testid="history-chart"] rect').count()) throw new Error('the member page drew history bars');
  if (historyRequests.get(member).length) throw new Error(`the member page asked for history: ${historyRequests.get(member).join(', ')}`);
  if (!historyRequests.get(mod).length) throw new Error('the moderator page made no history request?');

  step('FootfallClient.visitorHistory against footfall: Dates; 403 for a member; 400 naming the field');
  const got = await member.evaluate(async ([community, mt, mo]) => {
    const { FootfallClient } = await import('/footfall-client.js');
    const asMod = new FootfallClient({ community, token: mo });
    const h = await asMod.visitorHistory({ step: 'minute' });
    const shape = {
      points: h.points.length,
      step: h.step,
      community: h.community_id,
      dates: h.points.every((p) => p.time instanceof Date && !Number.isNaN(p.time.getTime())),
      ordered: h.points.every((p, i) => i === 0 || p.time > h.points[i - 1].time),
      lastPeak: h.points[h.points.length - 1]?.peak,
    };
    const why = async (p) => p.then(() => null, (e) => ({ name: e.name, status: e.status, error: e.error, code: e.code, field: e.field, message: e.message }));
    const asMember = new FootfallClient({ community, token: mt });
    return {
      shape,
      member: await why(asMember.visitorHistory()),
      bad: await why(asMod.visitorHistory({ from: 'yesterday' })),
    };
  }, [c, memberToken, modToken]);
  const s = got.shape;
  if (!(s.points >= 60 && s.points <= 61) || s.step !== 'minute' || s.community !== c || !s.dates || !s.ordered || !(s.lastPeak >= 4)) {
    throw new Error(`visitorHistory({step: 'minute'}) = ${JSON.stringify(s)}; want an hour of minute points (footfall's default from), Dates in order`);
  }
  if (got.member?.name !== 'FootfallHTTPError' || got.member.status !== 403 || got.member.code !== 4003) {
    throw new Error(`a member's visitorHistory rejected with ${JSON.stringify(got.member)}; want FootfallHTTPError 403 code 4003`);
  }
  if (got.bad?.status !== 400 || got.bad.error !== 'invalid_query' || got.bad.field !== 'from' || !got.bad.message) {
    throw new Error(`visitorHistory({from: 'yesterday'}) rejected with ${JSON.stringify(got.bad)}; want 400 invalid_query naming from`);
  }

  if (pageErrors.length) throw new Error(`uncaught errors in pages:\n${pageErrors.join('\n')}`);
  step('all history checks passed');
} catch (err) {
  failed = true;
  console.error(`FAIL: ${err.message}`);
  try {
    for (const [i, p] of context.pages().entries()) await p.screenshot({ path: join(args.out, `history-failure-${i}.png`), fullPage: true });
  } catch {
    /* best effort */
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
