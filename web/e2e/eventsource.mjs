// A spec-following EventSource client (the npm `eventsource` package) on a
// footfall SSE stream, for web/e2e_test.go: it prints one JSON line per
// happening on stdout ({"kind":"open"}, {"kind":"event",...},
// {"kind":"error",...}) and exits when stdin closes. Reconnecting, with
// Last-Event-ID, is the package's own doing, not this script's.
//
//   node e2e/eventsource.mjs 'http://127.0.0.1:PORT/sse/communities/ID/visitors/?token=JWT'
import { EventSource } from 'eventsource';

const url = process.argv[2];
if (!url) {
  console.error('usage: eventsource.mjs URL');
  process.exit(2);
}
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const es = new EventSource(url);
es.onopen = () => out({ kind: 'open' });
es.onerror = (e) => out({ kind: 'error', message: e.message ?? '', code: e.code ?? 0, readyState: es.readyState });
for (const type of ['visitor_count', 'visitor_joined', 'visitor_left', 'error']) {
  es.addEventListener(type, (e) => {
    if (typeof e.data !== 'string') return; // the connection's own error event
    out({ kind: 'event', type, id: e.lastEventId, data: JSON.parse(e.data) });
  });
}
process.stdin.on('end', () => {
  es.close();
  process.exit(0);
});
process.stdin.resume();
