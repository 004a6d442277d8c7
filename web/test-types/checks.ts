// What the declarations accept and what they refuse. Each @ts-expect-error
// line must be an error for tsc to pass: the types are not `any`.
import { FootfallClient, FootfallHTTPError, createClient, closeAction, type HistoryPoint, type ServerMessage, type Status } from '@footfall/client';
import { useVisitorCount } from '@footfall/client/react';

// A guest of a public community: no token, no getToken.
const guest = new FootfallClient({ url: 'https://footfall.example.com', community: 'c0ffee' });
const off = guest.on('count', (n, msg) => {
  const count: number = n;
  const type: ServerMessage['type'] = msg.type;
  void count, type;
});
off();
guest.on('status', ({ status, transport, code, retryIn }) => {
  const s: Status = status;
  void s, transport, code, retryIn;
});
guest.on('dashboard', (d) => d.today_visitors.total_unique_visitors.toFixed());
guest.on('error', (e) => String(e.code ?? e.reason));
guest.on('message', (m, { transport, raw }) => {
  if (m.type === 'visitor_joined') m.count.toFixed();
  if (m.type === 'error') m.code.toUpperCase();
  void transport, raw;
});
const current: number | null = guest.count;
void current;
guest.connect();
guest.requestCount();
guest.setToken('jwt');
guest.close();

const member = createClient({
  community: 'c0ffee',
  getToken: async (reason) => (reason === 'expired' ? 'fresh' : 'first'),
  transport: 'sse',
  withCredentials: true,
});
void member.transportChoice;
void closeAction(4004);

// @ts-expect-error community is required
new FootfallClient({ url: 'https://footfall.example.com' });
// @ts-expect-error no such transport
new FootfallClient({ community: 'c', transport: 'carrier-pigeon' });
// @ts-expect-error no such stream
new FootfallClient({ community: 'c', stream: 'admins' });
// @ts-expect-error a count is a number
guest.on('count', (n: string) => n);
// @ts-expect-error no such event
guest.on('counted', () => {});
// @ts-expect-error the count cannot be set
guest.count = 3;
// @ts-expect-error getToken returns a string
createClient({ community: 'c', getToken: () => 42 });

// The visitor history: Dates, numbers, the error's fields.
async function history(client: FootfallClient) {
  const day = await client.visitorHistory({ step: 'day', from: new Date(Date.now() - 7 * 86400000) });
  const first: HistoryPoint | undefined = day.points[0];
  if (first) {
    const start: Date = first.time;
    const peak: number = first.peak + first.average;
    const at: Date | null | undefined = first.peak_at;
    void start, peak, at, first.total_unique_visitors?.toFixed();
  }
  await client.visitorHistory('c0ffee', { from: '2025-05-06T00:00:00Z', to: Date.now(), step: 'minute', signal: new AbortController().signal });
  await client.visitorHistory().catch((e: unknown) => {
    if (e instanceof FootfallHTTPError) void (e.status + (e.code ?? 0)), e.error.toUpperCase(), e.field?.toUpperCase(), e.message;
  });
  // @ts-expect-error no such step
  await client.visitorHistory({ step: 'week' });
  // @ts-expect-error a time is a Date, a string or a number
  await client.visitorHistory({ from: true });
  // @ts-expect-error time is a Date, not a string
  const s: string = day.points[0].time;
  void s;
}
void history;

export function Badge({ id }: { id: string }) {
  const { count, status, transport, error, dashboard } = useVisitorCount(id, { transport: 'polling', pollInterval: 2000 });
  // @ts-expect-error count may be null before the first message
  const n: number = count;
  void n, status, transport, error, dashboard;
  // A guest of a public community.
  useVisitorCount(id, { guest: true });
  // @ts-expect-error the hook has no option 'transports'
  useVisitorCount(id, { transports: 'auto' });
  return null;
}
