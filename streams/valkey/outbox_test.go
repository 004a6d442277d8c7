package valkey

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/footfall/footfall/internal/webhook"
	"github.com/footfall/footfall/internal/webhook/webhooktest"
	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/streamstest"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

const whSecret = "webhook-test-secret-0123456789abcdef"

// runEngine runs a webhook engine on bus until stop is called or the test
// ends; stop waits for it.
func runEngine(t testing.TB, bus *Bus, url string, o webhook.Options) (stop func()) {
	t.Helper()
	o.URL, o.Secret, o.Outbox = url, []byte(whSecret), bus
	if o.Poll == 0 {
		o.Poll = 50 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	if o.Lease == 0 {
		o.Lease = 2 * time.Second
	}
	if o.FirstRetry == 0 {
		o.FirstRetry = 50 * time.Millisecond
	}
	if o.SummaryDelay == 0 {
		o.SummaryDelay = -1
	}
	e, err := webhook.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func whNode(t testing.TB, url, name string) *Bus {
	return newBus(t, Options{URL: url, NodeID: name, Webhooks: true, ReapInterval: 100 * time.Millisecond})
}

// checkOnce fails unless every id in want was answered 2xx exactly once.
func checkOnce(t testing.TB, rcv *webhooktest.Receiver, want map[string]string) {
	t.Helper()
	seen := map[string]int{}
	for _, d := range rcv.Delivered() {
		seen[d.ID]++
		if typ, ok := want[d.ID]; !ok {
			t.Errorf("unexpected delivery %+v", d)
		} else if typ != d.Type {
			t.Errorf("delivery %s has type %s; want %s", d.ID, d.Type, typ)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("event %s delivered %d times; want exactly once", id, seen[id])
		}
	}
}

func TestWebhooksMultiNode(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	testWebhooksMultiNode(t, srv.URL())
}

func TestWebhooksCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := valkeytest.StartCluster(t, 3)
	t.Run("MultiNode", func(t *testing.T) { testWebhooksMultiNode(t, cl.Seeds()) })
	t.Run("NodeDies", func(t *testing.T) { testWebhooksNodeDies(t, cl.Seeds()) })
}

// Two nodes, two engines: each event is delivered exactly once, through
// the receiver's errors; and nothing is queued by a node without webhooks.
func testWebhooksMultiNode(t *testing.T, url string) {
	a, b := whNode(t, url, "wh-a"), whNode(t, url, "wh-b")
	// The first attempt of every event fails, the second times out.
	rcv := webhooktest.Start(t, whSecret, func(d webhooktest.Delivery) (int, time.Duration) {
		switch d.Try {
		case 1:
			return http.StatusServiceUnavailable, 0
		case 2:
			return http.StatusOK, 3 * time.Second
		}
		return http.StatusOK, 0
	})
	runEngine(t, a, rcv.URL, webhook.Options{})
	runEngine(t, b, rcv.URL, webhook.Options{})

	const n = 12
	var comms []string
	for i := range n {
		c := newCommunity()
		comms = append(comms, c)
		node := a
		if i%2 == 1 {
			node = b
		}
		v := user(fmt.Sprint("v", i))
		mustTouch(t, node, streams.Source{Community: c, Visitor: v, ID: "tab"})
		mustTouch(t, node, streams.Source{Community: c, Visitor: user("other"), ID: "tab"})
		mustLeave(t, node, c, user("other"), "tab")
		// The leave grace: the last source becomes a TTL source, and the
		// reaper of either node ends it.
		mustTouch(t, node, streams.Source{Community: c, Visitor: v, ID: "tab", TTL: 200 * time.Millisecond})
	}
	delivered := rcv.WaitDelivered(t, 2*n, 20*time.Second)
	time.Sleep(300 * time.Millisecond) // any duplicate would arrive by now
	want := map[string]string{}
	for _, d := range delivered {
		if !strings.HasPrefix(d.ID, d.CommunityID+":") {
			t.Errorf("id %q does not start with its community %s", d.ID, d.CommunityID)
		}
		if d.Try < 3 {
			t.Errorf("event %s answered 2xx at try %d; the receiver refuses the first two", d.ID, d.Try)
		}
		want[d.ID] = d.Type
	}
	checkOnce(t, rcv, want)
	types := map[string]map[string]string{}
	for _, d := range delivered {
		if types[d.CommunityID] == nil {
			types[d.CommunityID] = map[string]string{}
		}
		types[d.CommunityID][d.Type] = string(d.Data)
	}
	for _, c := range comms {
		if got := types[c]; got[streams.WebhookOccupied] != `{"count":1}` || got[streams.WebhookVacated] != `{"count":0}` {
			t.Errorf("community %s got %v; want occupied {\"count\":1} and vacated {\"count\":0}", c, got)
		}
	}
	eventually(t, "an empty outbox", func() bool {
		s, err := a.OutboxStats(t.Context())
		return err == nil && s.Pending == 0
	})
}

// A node dies holding claimed deliveries and unindexed events: the
// survivor delivers them all.
func TestWebhooksNodeDies(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	testWebhooksNodeDies(t, srv.URL())
}

// An event queued by a node that died before indexing it (the index is
// gone here) is indexed at the community's next operation, on any node.
func TestWebhooksUnindexed(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	a, b := whNode(t, srv.URL(), "wh-c"), whNode(t, srv.URL(), "wh-d")
	c := newCommunity()
	mustTouch(t, a, streams.Source{Community: c, Visitor: user("x"), ID: "tab"})
	if _, err := srv.Do("DEL", keyWebhookDue, keyWebhookBorn); err != nil {
		t.Fatal(err)
	}
	a.Abandon()
	// Yesterday's summary walk would read the community (an operation).
	yesterday := streams.Day(time.Now().AddDate(0, 0, -1), time.UTC)
	if _, err := srv.Do("SET", walkKey(yesterday), "done"); err != nil {
		t.Fatal(err)
	}
	rcv := webhooktest.Start(t, whSecret, nil)
	runEngine(t, b, rcv.URL, webhook.Options{})
	time.Sleep(300 * time.Millisecond)
	if n := rcv.Requests(); n != 0 {
		t.Fatalf("%d deliveries of an unindexed event; want 0 before the community's next operation", n)
	}
	mustSnapshot(t, b, c)
	d := rcv.WaitDelivered(t, 1, 10*time.Second)
	if d[0].Type != streams.WebhookOccupied || d[0].CommunityID != c {
		t.Errorf("delivered %+v; want %s's community_occupied", d[0], c)
	}
}

func testWebhooksNodeDies(t *testing.T, url string) {
	a, b := whNode(t, url, "wh-dying"), whNode(t, url, "wh-survivor")
	var open atomic.Bool
	rcv := webhooktest.Start(t, whSecret, func(webhooktest.Delivery) (int, time.Duration) {
		if !open.Load() {
			return http.StatusOK, time.Minute // hangs: node a holds the claims
		}
		return http.StatusOK, 0
	})
	stopA := runEngine(t, a, rcv.URL, webhook.Options{Timeout: 1500 * time.Millisecond, Lease: 2 * time.Second})
	var comms []string
	for range 4 {
		c := newCommunity()
		comms = append(comms, c)
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("x"), ID: "tab"})
	}
	eventually(t, "node a delivering", func() bool { return rcv.Requests() == len(comms) })
	// Node a dies: its bus goes without a goodbye, then its engine stops
	// (it cannot give the events back).
	a.Abandon()
	stopA()
	open.Store(true)
	// a's claims lapse after their lease (2s) and b delivers.
	begin := time.Now()
	runEngine(t, b, rcv.URL, webhook.Options{})
	got := rcv.WaitDelivered(t, len(comms), 10*time.Second)
	want := map[string]string{}
	for _, d := range got {
		want[d.ID] = streams.WebhookOccupied
	}
	if len(want) != len(comms) {
		t.Errorf("delivered %v; want one event per community", got)
	}
	checkOnce(t, rcv, want)
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("the survivor delivered after %v; want soon after the 2s lease", d)
	}
}

// After local midnight one daily_summary per visited community, however
// many nodes walk.
func TestWebhooksDailySummary(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	clock := streamstest.NewFakeClock(time.Date(2026, 6, 1, 23, 0, 0, 0, loc))
	opts := func(name string) Options {
		return Options{URL: srv.URL(), NodeID: name, Webhooks: true, Clock: clock, Location: loc, ReapInterval: 100 * time.Millisecond}
	}
	a, b := newBus(t, opts("sum-a")), newBus(t, opts("sum-b"))
	c1, c2 := newCommunity(), newCommunity()
	mustTouch(t, a, streams.Source{Community: c1, Visitor: user("u1"), ID: "s"})
	mustTouch(t, b, streams.Source{Community: c1, Visitor: anon("a1"), ID: "s", TTL: time.Minute})
	mustTouch(t, b, streams.Source{Community: c2, Visitor: user("u2"), ID: "s"})
	mustLeave(t, b, c2, user("u2"), "s")
	if _, err := a.VisitorHistory(t.Context(), c1, streams.StepDay, clock.Now(), clock.Now()); err != nil {
		t.Skip("visitor history not available yet:", err)
	}
	rcv := webhooktest.Start(t, whSecret, nil)
	rcv.SetClock(clock)
	runEngine(t, a, rcv.URL, webhook.Options{Clock: clock, Location: loc})
	runEngine(t, b, rcv.URL, webhook.Options{Clock: clock, Location: loc})
	rcv.WaitDelivered(t, 3, 10*time.Second) // c1 occupied, c2 occupied and vacated

	clock.Set(time.Date(2026, 6, 2, 0, 0, 30, 0, loc))
	got := rcv.WaitDelivered(t, 5, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	sums := map[string]string{}
	for _, d := range rcv.Delivered() {
		if d.Type == streams.WebhookDailySummary {
			if _, dup := sums[d.CommunityID]; dup {
				t.Errorf("two daily summaries for %s", d.CommunityID)
			}
			sums[d.CommunityID] = string(d.Data)
		}
	}
	if len(sums) != 2 {
		t.Fatalf("daily summaries %v; want one for each of %s, %s (all %+v)", sums, c1, c2, got)
	}
	if want := `{"authenticated_visitors":1,"anonymous_visitors":1,"total_unique_visitors":2,"peak":2,`; !strings.HasPrefix(sums[c1], want) {
		t.Errorf("summary of c1 = %s; want it to start %s", sums[c1], want)
	}
}
