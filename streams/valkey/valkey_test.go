package valkey

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/streamstest"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// valkey-go closes connections a cluster topology refresh replaced
		// 5s later, on a goroutine of its own that outlives Client.Close.
		goleak.IgnoreAnyFunction("github.com/valkey-io/valkey-go.(*clusterClient)._refresh.func2"),
	)
}

// waitTimeout bounds every wait for something a bus must do.
const waitTimeout = 10 * time.Second

// newBus returns a bus, closed when the test ends.
func newBus(t testing.TB, opts Options) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New(%s) error = %v; want nil", opts.URL, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newCommunity() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func user(id string) streams.Visitor { return streams.Visitor{ID: id, Authenticated: true} }
func anon(id string) streams.Visitor { return streams.Visitor{ID: id} }

func today(u, a int) streams.Today { return streams.Today{Authenticated: u, Anonymous: a} }

func mustTouch(t testing.TB, b streams.Bus, s streams.Source) streams.PresenceResult {
	t.Helper()
	r, err := b.Touch(t.Context(), s)
	if err != nil {
		t.Fatalf("Touch(%s/%s) error = %v; want nil", s.Visitor.Key(), s.ID, err)
	}
	return r
}

func mustLeave(t testing.TB, b streams.Bus, c string, v streams.Visitor, src string) streams.PresenceResult {
	t.Helper()
	r, err := b.Leave(t.Context(), c, v, src)
	if err != nil {
		t.Fatalf("Leave(%s/%s) error = %v; want nil", v.Key(), src, err)
	}
	return r
}

func mustSnapshot(t testing.TB, b streams.Bus, c string) streams.Snapshot {
	t.Helper()
	s, err := b.Snapshot(t.Context(), c)
	if err != nil {
		t.Fatalf("Snapshot(%s) error = %v; want nil", c, err)
	}
	return s
}

// recorder records the events of one subscription.
type recorder struct {
	bus       streams.Bus
	community string
	signal    chan struct{}

	mu     sync.Mutex
	events []streams.Event
}

func record(t testing.TB, bus streams.Bus, community string) *recorder {
	t.Helper()
	r := &recorder{bus: bus, community: community, signal: make(chan struct{}, 1)}
	cancel, err := bus.Subscribe(t.Context(), community, func(e *streams.Event) {
		r.mu.Lock()
		r.events = append(r.events, *e)
		r.mu.Unlock()
		select {
		case r.signal <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("Subscribe(%s) error = %v; want nil", community, err)
	}
	t.Cleanup(cancel)
	return r
}

func (r *recorder) all() []streams.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) waitUntil(t testing.TB, what string, cond func([]streams.Event) bool) []streams.Event {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		evs := r.all()
		if cond(evs) {
			return evs
		}
		select {
		case <-r.signal:
		case <-deadline.C:
			t.Fatalf("no %s after %v; events: %s", what, waitTimeout, describe(evs))
		}
	}
}

// flush publishes a marker through bus and waits until r received it: every
// event published before the marker has then been delivered to r. It
// returns the presence events received so far.
func (r *recorder) flush(t testing.TB, via streams.Bus) []streams.Event {
	t.Helper()
	m, err := via.Publish(t.Context(), streams.Event{Community: r.community, Type: streams.TypeAnalyticsUpdate, Metric: "marker", Value: json.RawMessage(`1`)})
	if err != nil {
		t.Fatalf("Publish(marker) error = %v", err)
	}
	evs := r.waitUntil(t, "marker "+m.ID, func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.ID == m.ID })
	})
	return presence(evs)
}

func presence(evs []streams.Event) []streams.Event {
	return slices.DeleteFunc(slices.Clone(evs), func(e streams.Event) bool { return !e.IsPresence() })
}

func describe(evs []streams.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		if e.IsPresence() {
			parts[i] = fmt.Sprintf("#%d %s(%d %d/%d)", e.Seq, e.Type, e.Count, e.Today.Authenticated, e.Today.Anonymous)
		} else {
			parts[i] = fmt.Sprintf("#%d %s(%s)", e.Seq, e.Type, e.Metric)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func short(evs []streams.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = fmt.Sprintf("%s(%d %d/%d)", e.Type, e.Count, e.Today.Authenticated, e.Today.Anonymous)
	}
	return strings.Join(parts, " ")
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Conformance

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	streamstest.Run(t, func(t testing.TB, o streamstest.Options) streams.Bus {
		return newBus(t, Options{URL: srv.URL(), Location: o.Location, ReapInterval: o.ReapInterval})
	})
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := valkeytest.StartCluster(t, 3)
	probe := newBus(t, Options{URL: cl.Seeds()})
	if !probe.cluster {
		t.Fatalf("Bus on %s: cluster = false; want true", cl.Seeds())
	}
	streamstest.Run(t, func(t testing.TB, o streamstest.Options) streams.Bus {
		return newBus(t, Options{URL: cl.Seeds(), Location: o.Location, ReapInterval: o.ReapInterval})
	})
	t.Run("MultiNode", func(t *testing.T) {
		t.Parallel()
		testMultiNode(t, cl.Seeds())
	})
}

// One master of a cluster is killed and comes back empty.
func TestOutageCluster(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	cl := valkeytest.StartCluster(t, 3)
	testOutage(t, cl.Seeds(), cl.Servers[0], false)
}

// ---------------------------------------------------------------------------
// Several nodes on one Valkey

func TestMultiNode(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	testMultiNode(t, srv.URL())
}

func testMultiNode(t *testing.T, url string) {
	const ttl = time.Second
	opts := func(node string) Options {
		return Options{URL: url, NodeID: node, PresenceTTL: ttl, ReapInterval: 50 * time.Millisecond}
	}

	t.Run("VisitorOnTwoNodesCountsOnce", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		ra, rb := record(t, a, c), record(t, b, c)
		alice := user("alice")
		if r := mustTouch(t, a, streams.Source{Community: c, Visitor: alice, ID: "tab-a"}); !r.Changed || r.Count != 1 {
			t.Errorf("Touch(alice on a) = %+v; want Changed, Count 1", r)
		}
		if r := mustTouch(t, b, streams.Source{Community: c, Visitor: alice, ID: "tab-b"}); r.Changed || r.Count != 1 {
			t.Errorf("Touch(alice on b) = %+v; want not Changed, Count 1", r)
		}
		if r := mustLeave(t, a, c, alice, "tab-a"); r.Changed || r.Count != 1 {
			t.Errorf("Leave(alice on a) = %+v; want not Changed, Count 1", r)
		}
		if r := mustLeave(t, b, c, alice, "tab-b"); !r.Changed || r.Count != 0 {
			t.Errorf("Leave(alice on b) = %+v; want Changed, Count 0", r)
		}
		want := "visitor_joined(1 1/0) visitor_left(0 1/0)"
		for name, r := range map[string]*recorder{"a": ra, "b": rb} {
			if got := short(r.flush(t, b)); got != want {
				t.Errorf("presence events on node %s = %s; want %s", name, got, want)
			}
		}
	})

	t.Run("SameIDsEverywhere", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		rb := record(t, b, c)
		e, err := a.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: "m", Value: json.RawMessage(`{"x":[1,2.50,[]]}`)})
		if err != nil {
			t.Fatal(err)
		}
		got := rb.waitUntil(t, "event from a", func(evs []streams.Event) bool { return len(evs) > 0 })[0]
		if got.ID != e.ID || got.Seq != e.Seq || string(got.Value) != `{"x":[1,2.50,[]]}` || !got.Time.Equal(e.Time) {
			t.Errorf("event on b = {ID:%s Seq:%d Value:%s Time:%v}; want {ID:%s Seq:%d Value:%s Time:%v}",
				got.ID, got.Seq, got.Value, got.Time, e.ID, e.Seq, e.Value, e.Time)
		}
		hist, ok, err := b.History(t.Context(), c, e.ID, 0)
		if err != nil || !ok || len(hist) != 0 {
			t.Errorf("History(b, id from a) = %d events, %v, %v; want 0, true, nil", len(hist), ok, err)
		}
		if s := mustSnapshot(t, b, c); s.LastID != e.ID || s.Seq != e.Seq {
			t.Errorf("Snapshot() on b = {Seq:%d LastID:%s}; want {%d %s}", s.Seq, s.LastID, e.Seq, e.ID)
		}
		r := mustTouch(t, b, streams.Source{Community: c, Visitor: user("zoe"), ID: "ws"})
		joined := rb.waitUntil(t, "visitor_joined", func(evs []streams.Event) bool { return len(evs) == 2 })[1]
		if r.ID != joined.ID || r.Seq != joined.Seq {
			t.Errorf("Touch() = {Seq:%d ID:%s}; want the visitor_joined {%d %s}", r.Seq, r.ID, joined.Seq, joined.ID)
		}
	})

	t.Run("KilledNodeVisitorsLeaveOnce", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		rb := record(t, b, c)
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("bob"), ID: "ws-1"})
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("bob"), ID: "ws-2"})
		mustTouch(t, a, streams.Source{Community: c, Visitor: anon("dan"), ID: "ws-3"})
		mustTouch(t, b, streams.Source{Community: c, Visitor: user("carol"), ID: "ws-1"})
		// Outlive several lease periods: held sources need no refresh.
		time.Sleep(2 * ttl)
		if s := mustSnapshot(t, b, c); s.Count != 3 {
			t.Fatalf("Snapshot().Count = %d before the kill; want 3", s.Count)
		}
		killed := time.Now()
		a.Abandon()
		evs := rb.waitUntil(t, "two visitor_left", func(evs []streams.Event) bool {
			return countType(evs, streams.TypeVisitorLeft) >= 2
		})
		if elapsed := time.Since(killed); elapsed > ttl+500*time.Millisecond {
			t.Errorf("visitors of the killed node left %v after the kill; want within the presence TTL %v", elapsed, ttl)
		}
		time.Sleep(ttl) // a second reaping would show now
		evs = rb.flush(t, b)
		want := "visitor_joined(1 1/0) visitor_joined(2 1/1) visitor_joined(3 2/1) visitor_left(2 2/1) visitor_left(1 2/1)"
		if got := short(evs); got != want {
			t.Errorf("presence events on b = %s; want %s", got, want)
		}
		if s := mustSnapshot(t, b, c); s.Count != 1 {
			t.Errorf("Snapshot().Count after the kill = %d; want 1 (carol)", s.Count)
		}
	})

	t.Run("ManyVisitorsOfAKilledNode", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		rb := record(t, b, c)
		const n = 3*maxPerRun + 7 // several reap runs
		touchAll(t, a, c, n, 0)
		a.Abandon()
		eventually(t, "all visitors of the killed node left", func() bool { return mustSnapshot(t, b, c).Count == 0 })
		evs := rb.flush(t, b)
		if j, l := countType(evs, streams.TypeVisitorJoined), countType(evs, streams.TypeVisitorLeft); j != n || l != n {
			t.Errorf("b received %d joined and %d left; want %d of each", j, l, n)
		}
	})

	t.Run("ManyPollsExpireOnce", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		ra, rb := record(t, a, c), record(t, b, c)
		const n = 2*maxPerRun + 7 // several expiry runs
		touchAll(t, a, c, n, 300*time.Millisecond)
		eventually(t, "all polls expired", func() bool { return mustSnapshot(t, b, c).Count == 0 })
		for name, r := range map[string]*recorder{"a": ra, "b": rb} {
			evs := r.flush(t, b)
			if j, l := countType(evs, streams.TypeVisitorJoined), countType(evs, streams.TypeVisitorLeft); j != n || l != n {
				t.Errorf("node %s received %d joined and %d left; want %d of each", name, j, l, n)
			}
		}
	})

	t.Run("ClosedNodeSaysGoodbye", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, Options{URL: url, NodeID: "a", PresenceTTL: time.Minute}), newBus(t, opts("b"))
		c := newCommunity()
		rb := record(t, b, c)
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("erin"), ID: "ws"})
		a.Close()
		rb.waitUntil(t, "visitor_left at close", func(evs []streams.Event) bool {
			return countType(evs, streams.TypeVisitorLeft) == 1
		})
	})

	t.Run("RevocationReachesEveryNode", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		got := make(chan string, 1)
		cancel := b.OnRevoke(func(id string) { got <- id })
		defer cancel()
		id := "sess-" + newCommunity()
		if err := a.CreateSession(t.Context(), streams.Session{ID: id, UserID: "u", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Session(t.Context(), id); err != nil {
			t.Errorf("Session(%s) on b error = %v; want nil", id, err)
		}
		start := time.Now()
		if err := a.RevokeSession(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		select {
		case g := <-got:
			if g != id {
				t.Errorf("OnRevoke on b got %q; want %q", g, id)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("OnRevoke on b called %v after RevokeSession; want within 1s", d)
			}
		case <-time.After(time.Second):
			t.Errorf("OnRevoke on b not called within 1s")
		}
		if _, err := b.Session(t.Context(), id); !errors.Is(err, streams.ErrSessionRevoked) {
			t.Errorf("Session(%s) on b error = %v; want %v", id, err, streams.ErrSessionRevoked)
		}
	})

	t.Run("TTLSourceEndsOnceAcrossReapers", func(t *testing.T) {
		t.Parallel()
		a, b := newBus(t, opts("a")), newBus(t, opts("b"))
		c := newCommunity()
		ra, rb := record(t, a, c), record(t, b, c)
		for i := range 20 {
			bus := []*Bus{a, b}[i%2]
			mustTouch(t, bus, streams.Source{Community: c, Visitor: anon(fmt.Sprint("p", i)), ID: "poll", TTL: 200 * time.Millisecond})
		}
		eventually(t, "all polls expired", func() bool { return mustSnapshot(t, a, c).Count == 0 })
		for name, r := range map[string]*recorder{"a": ra, "b": rb} {
			evs := r.flush(t, a)
			if j, l := countType(evs, streams.TypeVisitorJoined), countType(evs, streams.TypeVisitorLeft); j != 20 || l != 20 {
				t.Errorf("node %s received %d joined and %d left; want 20 of each", name, j, l)
			}
		}
	})
}

// touchAll makes n visitors present in c through bus, concurrently.
func touchAll(t testing.TB, bus streams.Bus, c string, n int, ttl time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				s := streams.Source{Community: c, Visitor: user(fmt.Sprint("many-", i)), ID: "src", TTL: ttl}
				if _, err := bus.Touch(context.Background(), s); err != nil {
					t.Errorf("Touch error = %v", err)
					continue // keep taking work: the sender must not block for ever
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

func countType(evs []streams.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------------------
// Outage

func TestOutage(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	testOutage(t, srv.URL(), srv, true)
}

// testOutage kills srv (a whole single server, or one master of a
// cluster) and starts it again empty, while two nodes hold visitors.
func testOutage(t *testing.T, url string, srv *valkeytest.Server, single bool) {
	opts := func(node string) Options {
		return Options{URL: url, NodeID: node, PresenceTTL: 3 * time.Second, ReapInterval: 50 * time.Millisecond}
	}
	a, b := newBus(t, opts("a")), newBus(t, opts("b"))
	var reconnectsA, reconnectsB atomic.Int64
	defer a.OnReconnect(func() { reconnectsA.Add(1) })()
	defer b.OnReconnect(func() { reconnectsB.Add(1) })()
	// Several communities, so that every shard of a cluster has some.
	comms := make([]string, 6)
	recs := make([]*recorder, len(comms))
	lastSeq := make([]uint64, len(comms))
	for i := range comms {
		c := newCommunity()
		// On a cluster, the first two live on the master that goes down: a
		// master answers MOVED for the keys of other masters' slots.
		for !single && i < 2 {
			if _, err := srv.Do("EXISTS", metaKey(c)); err == nil {
				break
			}
			c = newCommunity()
		}
		comms[i] = c
		recs[i] = record(t, a, c)
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("alice"), ID: "ws"})
		mustTouch(t, a, streams.Source{Community: c, Visitor: user("bob"), ID: "ws"})
		mustTouch(t, b, streams.Source{Community: c, Visitor: anon("carol"), ID: "ws"})
		mustTouch(t, b, streams.Source{Community: c, Visitor: user("alice"), ID: "ws-b"})
		recs[i].flush(t, b)
		evs := recs[i].all()
		lastSeq[i] = evs[len(evs)-1].Seq
	}
	oldID := recs[0].all()[0].ID

	srv.Stop()
	if single {
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := a.Ping(ctx)
		cancel()
		if err == nil {
			t.Fatalf("Ping() with Valkey stopped = nil; want an error")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Ping() with Valkey stopped failed after %v; want within ~2s", d)
		}
	}
	time.Sleep(500 * time.Millisecond)
	srv.Restart() // empty: the nodes must refill it

	eventually(t, "Ping() after restart", func() bool { return a.Ping(t.Context()) == nil })
	// Ping (the node's readiness) succeeds only once the node has
	// re-registered its state, not as soon as Valkey answers.
	if n := a.BusStats().Reconnects; n < 1 {
		t.Errorf("Ping() = nil with %d recoveries completed; want nil only after the re-registration", n)
	}
	eventually(t, "OnReconnect on both nodes", func() bool { return reconnectsA.Load() >= 1 && reconnectsB.Load() >= 1 })
	for i, c := range comms {
		var s streams.Snapshot
		eventually(t, "re-registered figures", func() bool {
			var err error
			s, err = a.Snapshot(t.Context(), c)
			return err == nil && s.Count == 3 && s.Today == today(2, 1)
		})
		// The subscription works again, and sequence numbers did not go back.
		e, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: "after"})
		if err != nil {
			t.Fatalf("Publish after restart error = %v", err)
		}
		recs[i].waitUntil(t, "event after restart", func(evs []streams.Event) bool {
			return slices.ContainsFunc(evs, func(x streams.Event) bool { return x.ID == e.ID })
		})
		if e.Seq <= lastSeq[i] {
			t.Errorf("Seq after restart = %d; want > %d (the last seq before)", e.Seq, lastSeq[i])
		}
		// Presence keeps working and leaves are exact.
		mustLeave(t, a, c, user("alice"), "ws")
		if r := mustLeave(t, b, c, user("alice"), "ws-b"); !r.Changed || r.Count != 2 {
			t.Errorf("Leave(alice's last source) after restart = %+v; want Changed, Count 2", r)
		}
	}
	if single {
		if _, ok, err := a.History(t.Context(), comms[0], oldID, 0); err != nil || ok {
			t.Errorf("History(id from before the data loss) = _, %v, %v; want false, nil", ok, err)
		}
	}
}

// A node whose lease lapsed while it lived (stalled, or cut off) takes a
// new lease and re-registers its visitors: they come back after the reap.
func TestLapsedLeaseReregisters(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	opts := Options{URL: srv.URL(), NodeID: "a", PresenceTTL: time.Second, ReapInterval: 50 * time.Millisecond}
	a := newBus(t, opts)
	opts.NodeID = "b"
	b := newBus(t, opts)
	var reconnects atomic.Int64
	defer a.OnReconnect(func() { reconnects.Add(1) })()
	c := newCommunity()
	rb := record(t, b, c)
	mustTouch(t, a, streams.Source{Community: c, Visitor: user("alice"), ID: "ws"})
	lease := a.currentLease()
	// Simulate the lapse: the lease key disappears as if it had expired.
	if _, err := srv.Do("DEL", leaseKey(lease)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a took a new lease", func() bool { return a.currentLease() != lease })
	eventually(t, "OnReconnect", func() bool { return reconnects.Load() >= 1 })
	eventually(t, "alice present again", func() bool { return mustSnapshot(t, b, c).Count == 1 })
	time.Sleep(time.Second)
	if s := mustSnapshot(t, b, c); s.Count != 1 {
		t.Errorf("Snapshot().Count = %d; want 1", s.Count)
	}
	evs := rb.flush(t, b)
	if countType(evs, streams.TypeVisitorJoined) != countType(evs, streams.TypeVisitorLeft)+1 {
		t.Errorf("presence events = %s; want joins and leaves ending with alice present", short(evs))
	}
	if r := mustLeave(t, a, c, user("alice"), "ws"); !r.Changed || r.Count != 0 {
		t.Errorf("Leave(alice) = %+v; want Changed, Count 0", r)
	}
}

func TestNewFailsFast(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	srv.Stop()
	start := time.Now()
	b, err := New(t.Context(), Options{URL: srv.URL()})
	if err == nil {
		b.Close()
		t.Fatalf("New(stopped server) error = nil; want an error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("New(stopped server) failed after %v; want well under 10s", d)
	}
	for _, url := range []string{"", "http://x", "redis://[::1"} {
		if b, err := New(t.Context(), Options{URL: url}); err == nil {
			b.Close()
			t.Errorf("New(%q) error = nil; want an error", url)
		}
	}
}

// ---------------------------------------------------------------------------
// Today's visitors

func TestTodayExactAndApproximate(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL()})
	c := newCommunity()
	add := func(from, to int, auth bool) {
		t.Helper()
		var wg sync.WaitGroup
		next := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range next {
					v := streams.Visitor{ID: fmt.Sprint("v", i), Authenticated: auth}
					if _, err := b.Touch(context.Background(), streams.Source{Community: c, Visitor: v, ID: "api", TTL: time.Hour}); err != nil {
						t.Errorf("Touch error = %v", err)
						return
					}
				}
			})
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	add(0, 999, true)
	add(0, 10, false)
	if s := mustSnapshot(t, b, c); s.Today != today(999, 10) {
		t.Errorf("Snapshot().Today with 999 users = %+v; want {999 10}", s.Today)
	}
	add(999, 1000, true)
	add(0, 1000, true) // again: counted once
	if s := mustSnapshot(t, b, c); s.Today != today(1000, 10) || s.Count != 1010 {
		t.Errorf("Snapshot() with 1000 users = {Count:%d Today:%+v}; want {1010 {1000 10}}", s.Count, s.Today)
	}
	add(1000, 5000, true)
	s := mustSnapshot(t, b, c)
	if s.Count != 5010 {
		t.Errorf("Snapshot().Count = %d; want 5010 (exact)", s.Count)
	}
	if got := s.Today.Authenticated; got < 4900 || got > 5100 {
		t.Errorf("Snapshot().Today.Authenticated with 5000 users = %d; want 5000 within 2%%", got)
	}
	if s.Today.Anonymous != 10 {
		t.Errorf("Snapshot().Today.Anonymous = %d; want 10", s.Today.Anonymous)
	}
	t.Logf("5000 authenticated visitors counted as %d (%.2f%% off)", s.Today.Authenticated, 100*float64(s.Today.Authenticated-5000)/5000)
	// Today's keys expire after the day.
	for _, k := range []string{"d:%s:u", "x:%s:u:1", "x:%s:u:4"} {
		key := fmt.Sprintf("ff:{%s}:"+k, c, streams.Day(time.Now(), time.UTC))
		pttl, err := srv.Do("PTTL", key)
		if err != nil || !strings.HasPrefix(pttl, ":") || pttl == ":-1" || pttl == ":-2" {
			t.Errorf("PTTL %s = %q, %v; want an expiry", key, pttl, err)
		}
	}
}

// The day rolls over at local midnight: a visitor present then counts for
// the new day, one whose TTL ended before does not.
func TestDayRollover(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skipf("time zone data: %v", err)
	}
	start := time.Date(2026, 1, 15, 23, 0, 0, 0, loc)
	midnight := time.Date(2026, 1, 16, 0, 0, 0, 0, loc)
	clock := streamstest.NewFakeClock(start)
	// The reaper is kept out of the way: operations settle the community.
	b := newBus(t, Options{URL: srv.URL(), Location: loc, Clock: clock, ReapInterval: time.Hour})
	c := newCommunity()
	r := record(t, b, c)
	mustTouch(t, b, streams.Source{Community: c, Visitor: user("alice"), ID: "ws"})
	mustTouch(t, b, streams.Source{Community: c, Visitor: user("carol"), ID: "poll", TTL: 30 * time.Second})
	clock.Set(midnight.Add(-10 * time.Second))
	mustTouch(t, b, streams.Source{Community: c, Visitor: anon("bob"), ID: "poll", TTL: 30 * time.Second})
	if s := mustSnapshot(t, b, c); s.Count != 2 || s.Today != today(2, 1) {
		t.Errorf("Snapshot() before midnight = {Count:%d Today:%+v}; want {2 {2 1}}", s.Count, s.Today)
	}
	if s := mustSnapshot(t, b, c); s.Peak != (streams.Peak{Count: 2, At: start.Unix()}) {
		t.Errorf("Snapshot().Peak before midnight = %+v; want 2 at the start (alice and carol)", s.Peak)
	}
	clock.Set(midnight.Add(5 * time.Minute))
	s := mustSnapshot(t, b, c)
	if s.Count != 1 || s.Today != today(1, 1) {
		t.Errorf("Snapshot() after midnight = {Count:%d Today:%+v}; want {1 {1 1}} (alice held, bob's poll alive at midnight)", s.Count, s.Today)
	}
	if want := (streams.Peak{Count: 2, At: midnight.Unix()}); s.Peak != want {
		t.Errorf("Snapshot().Peak after midnight = %+v; want %+v (alice and bob present at midnight)", s.Peak, want)
	}
	if want := midnight.Add(5 * time.Minute).UTC(); !s.Changed.Equal(want) {
		t.Errorf("Snapshot().Changed = %v; want %v (bob's poll ended)", s.Changed, want)
	}
	want := "visitor_joined(1 1/0) visitor_joined(2 2/0) visitor_left(1 2/0) visitor_joined(2 2/1) visitor_left(1 1/1)"
	if got := short(r.flush(t, b)); got != want {
		t.Errorf("presence events = %s; want %s", got, want)
	}
	// The next midnight drops bob from today's figures; the one after,
	// with alice alone before and after, changes nothing.
	next := midnight.Add(24 * time.Hour)
	clock.Set(next.Add(time.Hour))
	if s := mustSnapshot(t, b, c); s.Today != today(1, 0) || !s.Changed.Equal(next.UTC()) {
		t.Errorf("Snapshot() the next day = {Today:%+v Changed:%v}; want {{1 0} %v}", s.Today, s.Changed, next.UTC())
	}
	clock.Set(next.Add(25 * time.Hour))
	if s := mustSnapshot(t, b, c); s.Today != today(1, 0) || !s.Changed.Equal(next.UTC()) {
		t.Errorf("Snapshot() two days later = {Today:%+v Changed:%v}; want {{1 0} %v}", s.Today, s.Changed, next.UTC())
	}
}

// ---------------------------------------------------------------------------
// Subscriptions

// Subscribing only to the communities with local subscribers, and
// unsubscribing after the last.
func TestSubscribesOnlyWhileNeeded(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL()})
	c := newCommunity()
	// PUBSUB SHARDCHANNELS answers an array: "*0" when nobody listens.
	numsub := func() int {
		n, err := srv.Do("PUBSUB", "SHARDCHANNELS", eventChannel(c))
		if err != nil {
			t.Fatal(err)
		}
		if n == "*0" {
			return 0
		}
		return 1
	}
	if n := numsub(); n != 0 {
		t.Fatalf("shard channels before Subscribe = %d; want 0", n)
	}
	cancel1, err := b.Subscribe(t.Context(), c, func(*streams.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	cancel2, err := b.Subscribe(t.Context(), c, func(*streams.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	if n := numsub(); n != 1 {
		t.Errorf("shard channels with 2 subscribers = %d; want 1", n)
	}
	cancel1()
	if n := numsub(); n != 1 {
		t.Errorf("shard channels with 1 subscriber left = %d; want 1", n)
	}
	cancel2()
	eventually(t, "unsubscribed after the last cancel", func() bool { return numsub() == 0 })
	// And again.
	r := record(t, b, c)
	e, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate})
	if err != nil {
		t.Fatal(err)
	}
	r.waitUntil(t, "event after resubscribing", func(evs []streams.Event) bool { return len(evs) == 1 && evs[0].ID == e.ID })
}

// A handler may call back into the bus, even into its own community.
func TestHandlerMayCallTheBus(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL()})
	c := newCommunity()
	echoed := make(chan streams.Event, 1)
	var once sync.Once
	cancel, err := b.Subscribe(t.Context(), c, func(e *streams.Event) {
		if e.Metric == "echo" {
			echoed <- *e
			return
		}
		once.Do(func() {
			ctx := context.Background()
			if _, err := b.Touch(ctx, streams.Source{Community: c, Visitor: user("h"), ID: "x"}); err != nil {
				t.Errorf("Touch from handler error = %v", err)
			}
			if _, err := b.Publish(ctx, streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: "echo"}); err != nil {
				t.Errorf("Publish from handler error = %v", err)
			}
			c2, err := b.Subscribe(ctx, c, func(*streams.Event) {})
			if err != nil {
				t.Errorf("Subscribe from handler error = %v", err)
			} else {
				c2()
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-echoed:
		if e.Seq != 3 {
			t.Errorf("echo Seq = %d; want 3", e.Seq)
		}
	case <-time.After(waitTimeout):
		t.Fatal("event published from a handler not delivered (deadlock?)")
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL()})
	ctx := t.Context()
	c := newCommunity()
	v := user("alice")
	second := func(_ any, err error) error { return err }
	tests := []struct {
		name string
		err  error
	}{
		{"Publish(empty community)", second(b.Publish(ctx, streams.Event{Type: streams.TypeAnalyticsUpdate}))},
		{"Publish(invalid JSON value)", second(b.Publish(ctx, streams.Event{Community: c, Value: json.RawMessage(`{`)}))},
		{"Subscribe(empty community)", second(b.Subscribe(ctx, "", func(*streams.Event) {}))},
		{"Subscribe(nil handler)", second(b.Subscribe(ctx, c, nil))},
		{"Touch(empty community)", second(b.Touch(ctx, streams.Source{Visitor: v, ID: "tab"}))},
		{"Touch(empty visitor)", second(b.Touch(ctx, streams.Source{Community: c, ID: "tab"}))},
		{"Touch(NUL in visitor)", second(b.Touch(ctx, streams.Source{Community: c, Visitor: user("a\x00b"), ID: "tab"}))},
		{"Touch(negative ttl)", second(b.Touch(ctx, streams.Source{Community: c, Visitor: v, ID: "tab", TTL: -time.Second}))},
		{"CreateSession(empty id)", b.CreateSession(ctx, streams.Session{UserID: "u", ExpiresAt: time.Now().Add(time.Hour)})},
		{"CreateSession(zero expiry)", b.CreateSession(ctx, streams.Session{ID: "s", UserID: "u"})},
	}
	for _, tt := range tests {
		if tt.err == nil {
			t.Errorf("%s error = nil; want an error", tt.name)
		}
	}
}

// A hung server (or a partition) fails Ping within about 2s; when it
// answers again, the bus recovers and tells its OnReconnect hooks.
func TestHungServer(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL(), PresenceTTL: 3 * time.Second})
	var reconnects atomic.Int64
	defer b.OnReconnect(func() { reconnects.Add(1) })()
	c := newCommunity()
	r := record(t, b, c)
	mustTouch(t, b, streams.Source{Community: c, Visitor: user("alice"), ID: "ws"})

	srv.Pause()
	start := time.Now()
	err := b.Ping(context.Background())
	if err == nil {
		srv.Resume()
		t.Fatalf("Ping() with the server paused = nil; want an error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Ping() with the server paused failed after %v; want within ~2s", d)
	}
	time.Sleep(4 * time.Second) // long enough for the connections to be given up
	srv.Resume()
	eventually(t, "Ping() after resume", func() bool { return b.Ping(t.Context()) == nil })
	eventually(t, "OnReconnect", func() bool { return reconnects.Load() >= 1 })
	if s := mustSnapshot(t, b, c); s.Count != 1 {
		t.Errorf("Snapshot().Count after the pause = %d; want 1", s.Count)
	}
	e, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate})
	if err != nil {
		t.Fatal(err)
	}
	r.waitUntil(t, "event after the pause", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(x streams.Event) bool { return x.ID == e.ID })
	})
}

// Events published while a node's subscription was down are read from the
// history: its subscribers see every event once, in order.
func TestMissedEventsAreRepaired(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	a := newBus(t, Options{URL: srv.URL(), NodeID: "gap-a"})
	b := newBus(t, Options{URL: srv.URL(), NodeID: "gap-b"})
	var reconnects atomic.Int64
	defer a.OnReconnect(func() { reconnects.Add(1) })()
	c := newCommunity()
	r := record(t, a, c)
	// killSubscriber closes a's connections that carry subscriptions.
	killSubscriber := func() {
		list, err := srv.Do("CLIENT", "LIST")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, "name=footfall-gap-a ") || strings.Contains(line, " ssub=0 ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					_, _ = srv.Do("CLIENT", "KILL", "ID", id)
				}
			}
		}
	}
	const n = 300
	var published []streams.Event
	for i := range n {
		e, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		published = append(published, e)
		if i%50 == 25 {
			killSubscriber()
		}
	}
	last := published[n-1]
	evs := r.waitUntil(t, "the last event", func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.ID == last.ID })
	})
	if len(evs) != n {
		t.Errorf("received %d events; want %d", len(evs), n)
	}
	for i, e := range evs {
		if i < n && e.ID != published[i].ID {
			t.Fatalf("received #%d = %s; want %s (every event once, in order)", i, e.ID, published[i].ID)
		}
	}
	if reconnects.Load() == 0 {
		eventually(t, "OnReconnect after the drops", func() bool { return reconnects.Load() > 0 })
	}
}

// History keeps the last historySize events and those younger than
// historyAge: old events beyond the last 100 are dropped.
func TestHistoryRetention(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	start := time.Now()
	clock := streamstest.NewFakeClock(start)
	b := newBus(t, Options{URL: srv.URL(), Clock: clock, ReapInterval: time.Hour})
	c := newCommunity()
	var ids []string
	publish := func() {
		e, err := b.Publish(t.Context(), streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: "m"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	for range 150 {
		publish()
	}
	if evs, ok, err := b.History(t.Context(), c, ids[0], 0); err != nil || !ok || len(evs) != 149 {
		t.Fatalf("History(after #1 of 150 young events) = %d, %v, %v; want 149, true, nil", len(evs), ok, err)
	}
	clock.Set(start.Add(historyAge + time.Minute))
	for range 5 {
		publish()
	}
	// 155 events, all but the last 5 old: #56..#155 are kept.
	if evs, ok, err := b.History(t.Context(), c, ids[54], 0); err != nil || !ok || len(evs) != historySize || evs[0].ID != ids[55] {
		t.Errorf("History(after #55) = %d events, %v, %v; want the last %d, true, nil", len(evs), ok, err, historySize)
	}
	if _, ok, err := b.History(t.Context(), c, ids[53], 0); err != nil || ok {
		t.Errorf("History(after #54) ok = %v, %v; want false (trimmed)", ok, err)
	}
}

// A connection that closes while Valkey is down asks for a leave grace
// (its held source becomes a TTL source) and that call fails: the node
// must not re-register the source as held after the outage (the visitor
// would stay present for ever); the keeper's sync ends it.
func TestGraceAskedDuringOutage(t *testing.T) {
	t.Parallel()
	srv := valkeytest.Start(t)
	a := newBus(t, Options{URL: srv.URL(), NodeID: "a", PresenceTTL: 2 * time.Second, ReapInterval: 50 * time.Millisecond})
	c := newCommunity()
	mustTouch(t, a, streams.Source{Community: c, Visitor: user("stayer"), ID: "ws-1"})
	mustTouch(t, a, streams.Source{Community: c, Visitor: user("leaver"), ID: "ws-2"})
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	_, err := a.Touch(ctx, streams.Source{Community: c, Visitor: user("leaver"), ID: "ws-2", TTL: time.Second})
	cancel()
	if err == nil {
		t.Fatalf("Touch with Valkey stopped = nil; want an error")
	}
	srv.Restart()
	eventually(t, "only the stayer present after the outage", func() bool {
		s, err := a.Snapshot(t.Context(), c)
		return err == nil && s.Count == 1
	})
	time.Sleep(3 * time.Second) // a keeper sync or two later: still one
	if s, err := a.Snapshot(t.Context(), c); err != nil || s.Count != 1 {
		t.Fatalf("Snapshot after the outage = %+v, %v; want count 1 (the leaver gone)", s, err)
	}
}
