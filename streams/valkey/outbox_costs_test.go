package valkey

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/footfall/footfall/internal/webhook"
	"github.com/footfall/footfall/internal/webhook/webhooktest"
	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestWebhookCosts measures what the webhook outbox costs Valkey, with
// webhooks off and on: commands per join or leave that does not empty or
// fill the community, per occupy+vacate cycle (with delivery by an
// engine), script time, and an idle node's commands per second:
//
//	FOOTFALL_VALKEY_MEASURE=1 go test -run TestWebhookCosts -v ./streams/valkey/
func TestWebhookCosts(t *testing.T) {
	if os.Getenv("FOOTFALL_VALKEY_MEASURE") != "1" {
		t.Skip("set FOOTFALL_VALKEY_MEASURE=1 to measure")
	}
	const n = 500
	for _, on := range []bool{false, true} {
		srv := valkeytest.Start(t)
		bus := newBus(t, Options{URL: srv.URL(), Webhooks: on})
		held := func(c string, i int) streams.Source {
			return streams.Source{Community: c, Visitor: user(fmt.Sprint("v", i)), ID: "tab"}
		}
		// Joins and leaves in a community that stays occupied.
		c := newCommunity()
		mustTouch(t, bus, held(c, -1))
		if on { // its occupied event delivered: an empty outbox
			rcv := webhooktest.Start(t, whSecret, nil)
			stop := runEngine(t, bus, rcv.URL, webhook.Options{})
			rcv.WaitDelivered(t, 1, 10*time.Second)
			eventually(t, "an empty outbox", func() bool {
				s, err := bus.OutboxStats(t.Context())
				return err == nil && s.Pending == 0
			})
			stop()
		}
		m := startMonitor(t, srv.Addr)
		us := scriptMicros(t, srv)
		for i := range n {
			mustTouch(t, bus, held(c, i))
			mustLeave(t, bus, c, held(c, i).Visitor, "tab")
		}
		us = scriptMicros(t, srv) - us
		client, lua := m.stop(t)
		t.Logf("webhooks %v: join or leave (no 0<->n): client %s; lua %s; script %.1f µs", on,
			perOp(client, 2*n), perOp(lua, 2*n), float64(us)/float64(2*n))

		// Occupy and vacate n communities, events delivered.
		var stop func()
		var rcv *webhooktest.Receiver
		if on {
			rcv = webhooktest.Start(t, whSecret, nil)
			stop = runEngine(t, bus, rcv.URL, webhook.Options{Poll: time.Second})
		}
		m = startMonitor(t, srv.Addr)
		us = scriptMicros(t, srv)
		for i := range n {
			c := newCommunity()
			mustTouch(t, bus, held(c, i))
			mustLeave(t, bus, c, held(c, i).Visitor, "tab")
		}
		if on {
			rcv.WaitDelivered(t, 2*n, time.Minute)
		}
		us = scriptMicros(t, srv) - us
		client, lua = m.stop(t)
		t.Logf("webhooks %v: occupy+vacate cycle (2 events): client %s; lua %s; script %.1f µs", on,
			perOp(client, n), perOp(lua, n), float64(us)/float64(n))
		if on {
			m = startMonitor(t, srv.Addr)
			time.Sleep(10 * time.Second)
			client, lua = m.stop(t)
			t.Logf("webhooks on: idle engine, per second: client %s; lua %s", perOp(client, 10), perOp(lua, 10))
			stop()
		}
	}
}
