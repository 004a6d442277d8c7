package streams_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/streamstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const community = "123e4567-e89b-12d3-a456-426614174000"

// countingBus is a Bus that counts the subscriptions taken on it.
type countingBus struct {
	streams.Bus
	subscribes atomic.Int64 // Subscribe calls that succeeded
	active     atomic.Int64 // subscriptions not yet cancelled
}

func (b *countingBus) Subscribe(ctx context.Context, c string, h streams.Handler) (func(), error) {
	cancel, err := b.Bus.Subscribe(ctx, c, h)
	if err != nil {
		return nil, err
	}
	b.subscribes.Add(1)
	b.active.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			b.active.Add(-1)
		})
	}, nil
}

// sub is a Subscriber that queues what it is given.
type sub struct{ events chan *streams.Event }

func newSub() *sub { return &sub{events: make(chan *streams.Event, 100)} }

func (s *sub) Deliver(e *streams.Event) {
	select {
	case s.events <- e:
	default: // never block the fanout
	}
}

// next returns the next event of type typ, skipping others.
func (s *sub) next(t testing.TB, typ string) *streams.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-s.events:
			if e.Type == typ {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within 5s", typ)
			return nil
		}
	}
}

func newBus(t testing.TB, opts memory.Options) *countingBus {
	t.Helper()
	b := memory.New(opts)
	t.Cleanup(func() { b.Close() })
	return &countingBus{Bus: b}
}

func join(t testing.TB, h *streams.Hub, s streams.Subscriber) (func(), streams.Snapshot) {
	t.Helper()
	leave, state, err := h.Join(t.Context(), community, s)
	if err != nil {
		t.Fatalf("Join(%s) error = %v; want nil", community, err)
	}
	return leave, state
}

func touch(t testing.TB, b streams.Bus, v streams.Visitor, source string) streams.PresenceResult {
	t.Helper()
	r, err := b.Touch(t.Context(), streams.Source{Community: community, Visitor: v, ID: source})
	if err != nil {
		t.Fatalf("Touch(%s/%s) error = %v; want nil", v.Key(), source, err)
	}
	return r
}

func TestHubJoinReturnsState(t *testing.T) {
	bus := newBus(t, memory.Options{})
	h := streams.NewHub(bus, nil)
	r := touch(t, bus, streams.Visitor{ID: "alice", Authenticated: true}, "tab")
	if _, ok := h.State(community); ok {
		t.Errorf("State(%s) before Join ok = true; want false", community)
	}
	leave, state := join(t, h, newSub())
	defer leave()
	want := streams.Snapshot{Community: community, Count: 1, Today: streams.Today{Authenticated: 1}, Seq: r.Seq}
	if state.Community != want.Community || state.Count != want.Count || state.Today != want.Today || state.Seq != want.Seq || state.Changed.IsZero() {
		t.Errorf("Join() state = %+v; want %+v with a Changed time", state, want)
	}
	if got, ok := h.State(community); !ok || got != state {
		t.Errorf("State(%s) = %+v, %v; want %+v, true", community, got, ok, state)
	}
}

func TestHubDeliversEvents(t *testing.T) {
	bus := newBus(t, memory.Options{})
	h := streams.NewHub(bus, nil)
	s1, s2 := newSub(), newSub()
	leave1, _ := join(t, h, s1)
	defer leave1()
	leave2, _ := join(t, h, s2)
	defer leave2()

	r := touch(t, bus, streams.Visitor{ID: "bob"}, "tab")
	for i, s := range []*sub{s1, s2} {
		e := s.next(t, streams.TypeVisitorJoined)
		if e.Seq != r.Seq || e.Count != 1 || e.Today != (streams.Today{Anonymous: 1}) {
			t.Errorf("subscriber %d got %+v; want visitor_joined #%d with Count 1, Today {0 1}", i+1, e, r.Seq)
		}
	}
	if got, _ := h.State(community); got.Count != 1 || got.Seq != r.Seq {
		t.Errorf("State(%s) after the event = {Count:%d Seq:%d}; want {Count:1 Seq:%d}", community, got.Count, got.Seq, r.Seq)
	}

	// A subscriber that left gets nothing more.
	leave2()
	r = touch(t, bus, streams.Visitor{ID: "carol"}, "tab")
	if e := s1.next(t, streams.TypeVisitorJoined); e.Seq != r.Seq {
		t.Errorf("remaining subscriber got #%d; want #%d", e.Seq, r.Seq)
	}
	select {
	case e := <-s2.events:
		t.Errorf("subscriber that left got %s #%d; want nothing", e.Type, e.Seq)
	default:
	}
}

func TestHubDropsSubscriptionAfterLastLeave(t *testing.T) {
	bus := newBus(t, memory.Options{})
	h := streams.NewHub(bus, nil)
	check := func(when string, subscribes, active int64) {
		t.Helper()
		if got := bus.subscribes.Load(); got != subscribes {
			t.Errorf("bus subscriptions taken %s = %d; want %d", when, got, subscribes)
		}
		if got := bus.active.Load(); got != active {
			t.Errorf("bus subscriptions active %s = %d; want %d", when, got, active)
		}
	}
	leave1, _ := join(t, h, newSub())
	leave2, _ := join(t, h, newSub())
	check("after two joins", 1, 1)
	leave1()
	check("after the first leave", 1, 1)
	leave2()
	check("after the last leave", 1, 0)
	leave2() // leave is idempotent
	check("after leaving twice", 1, 0)
	if _, ok := h.State(community); ok {
		t.Errorf("State(%s) after the last leave ok = true; want false", community)
	}
	leave3, _ := join(t, h, newSub())
	check("after joining again", 2, 1)
	leave3()
	check("at the end", 2, 0)
}

func TestHubJoinFails(t *testing.T) {
	bus := newBus(t, memory.Options{})
	h := streams.NewHub(bus, nil)
	bus.Close()
	if _, _, err := h.Join(t.Context(), community, newSub()); !errors.Is(err, streams.ErrClosed) {
		t.Errorf("Join() on a closed bus error = %v; want %v", err, streams.ErrClosed)
	}
	if _, ok := h.State(community); ok {
		t.Errorf("State(%s) after a failed Join ok = true; want false", community)
	}
}

func TestHubRefresh(t *testing.T) {
	// Today's figures change at midnight without any event: Refresh is
	// what tells subscribers.
	start := time.Date(2026, 3, 10, 23, 59, 0, 0, time.UTC)
	clock := streamstest.NewFakeClock(start)
	bus := newBus(t, memory.Options{Clock: clock, ReapInterval: time.Hour})
	h := streams.NewHub(bus, nil)
	s := newSub()
	leave, _ := join(t, h, s)
	defer leave()

	alice := streams.Visitor{ID: "alice", Authenticated: true}
	touch(t, bus, alice, "tab")
	if _, err := bus.Leave(t.Context(), community, alice, "tab"); err != nil {
		t.Fatal(err)
	}
	left := s.next(t, streams.TypeVisitorLeft)

	h.Refresh(t.Context())
	e := s.next(t, streams.TypeRefresh)
	if e.Community != community || e.Count != 0 || e.Today != (streams.Today{Authenticated: 1}) || e.Seq != left.Seq {
		t.Errorf("refresh before midnight = %+v; want Count 0, Today {1 0}, Seq %d", e, left.Seq)
	}

	clock.Set(start.Add(2 * time.Minute))
	h.Refresh(t.Context())
	e = s.next(t, streams.TypeRefresh)
	if e.Count != 0 || e.Today != (streams.Today{}) {
		t.Errorf("refresh after midnight = {Count:%d Today:%+v}; want {Count:0 Today:{0 0}}", e.Count, e.Today)
	}
	if got, _ := h.State(community); got.Today != (streams.Today{}) {
		t.Errorf("State(%s).Today after refresh = %+v; want {0 0}", community, got.Today)
	}
}

// slowSnapshotBus is a Bus whose snapshots take a while, as a round trip
// to a server does, and that records how many were in flight at once.
type slowSnapshotBus struct {
	streams.Bus
	delay    time.Duration
	inFlight atomic.Int64
	most     atomic.Int64
}

func (b *slowSnapshotBus) Snapshot(ctx context.Context, c string) (streams.Snapshot, error) {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		m := b.most.Load()
		if n <= m || b.most.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return streams.Snapshot{}, ctx.Err()
	}
	return b.Bus.Snapshot(ctx, c)
}

// TestHubRefreshManyCommunities: Refresh reaches every community, with
// several snapshots in flight but never more than its bound, and returns
// soon after its context ends.
func TestHubRefreshManyCommunities(t *testing.T) {
	bus := &slowSnapshotBus{Bus: newBus(t, memory.Options{}), delay: 5 * time.Millisecond}
	h := streams.NewHub(bus, nil)
	const n = 200
	subs := make([]*sub, n)
	for i := range subs {
		subs[i] = newSub()
		leave, _, err := h.Join(t.Context(), fmt.Sprintf("community-%03d", i), subs[i])
		if err != nil {
			t.Fatal(err)
		}
		defer leave()
	}
	bus.most.Store(0)
	h.Refresh(t.Context())
	for i, s := range subs {
		if e := s.next(t, streams.TypeRefresh); e.Community != fmt.Sprintf("community-%03d", i) {
			t.Fatalf("community %d got a refresh for %s", i, e.Community)
		}
	}
	if m := bus.most.Load(); m < 2 || m > 32 {
		t.Errorf("snapshots in flight at most %d; want between 2 and 32", m)
	}

	// A context that ends stops the refresh: it returns without waiting
	// for the communities not started.
	bus.delay = time.Hour
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { h.Refresh(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Refresh did not return after its context ended")
	}
}

func TestHubObserve(t *testing.T) {
	bus := newBus(t, memory.Options{})
	h := streams.NewHub(bus, nil)
	leave, state := join(t, h, newSub())
	defer leave()
	at := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	r := streams.PresenceResult{Count: 3, Changed: true, Seq: state.Seq + 5, Today: streams.Today{Authenticated: 2, Anonymous: 1}}
	h.Observe(community, r, at)
	got, _ := h.State(community)
	if got.Count != 3 || got.Seq != r.Seq || got.Today != r.Today || !got.Changed.Equal(at) {
		t.Errorf("State(%s) after Observe = %+v; want Count 3, Seq %d, Today %+v, Changed %v", community, got, r.Seq, r.Today, at)
	}
	// An older result changes nothing.
	h.Observe(community, streams.PresenceResult{Count: 7, Seq: r.Seq - 1}, at.Add(time.Hour))
	if got2, _ := h.State(community); got2 != got {
		t.Errorf("State(%s) after an older Observe = %+v; want %+v", community, got2, got)
	}
}

// gatedBus holds every Subscribe until gate is closed, honouring the
// caller's context meanwhile, as a bus that waits on its server does.
type gatedBus struct {
	streams.Bus
	gate chan struct{}
}

func (b *gatedBus) Subscribe(ctx context.Context, c string, h streams.Handler) (func(), error) {
	select {
	case <-b.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return b.Bus.Subscribe(ctx, c, h)
}

// TestHubColdJoinOutlivesFirstCaller: the first joiner of a community that
// gives up (its request ended) does not fail the joiners waiting with it;
// the community's subscription is taken on the hub's behalf, not the first
// caller's (it used to take the first caller's context).
func TestHubColdJoinOutlivesFirstCaller(t *testing.T) {
	bus := &gatedBus{Bus: newBus(t, memory.Options{}), gate: make(chan struct{})}
	h := streams.NewHub(bus, nil)
	firstCtx, cancelFirst := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, _, err := h.Join(firstCtx, community, newSub())
		firstErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // the first joiner is loading the community
	secondErr := make(chan error, 1)
	var leave func()
	go func() {
		var err error
		leave, _, err = h.Join(context.Background(), community, newSub())
		secondErr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancelFirst()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("first Join after its context ended = %v; want context.Canceled", err)
	}
	close(bus.gate)
	if err := <-secondErr; err != nil {
		t.Fatalf("second Join = %v; want nil (the first caller's end is not the community's)", err)
	}
	leave()
}
