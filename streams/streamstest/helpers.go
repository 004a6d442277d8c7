package streamstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Helpers

// newCommunity returns a random community id shaped like a UUID.
func newCommunity() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newID returns a random id for sessions and visitors.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func user(id string) streams.Visitor { return streams.Visitor{ID: id, Authenticated: true} }
func anon(id string) streams.Visitor { return streams.Visitor{ID: id} }

func analytics(community string, value int) streams.Event {
	return streams.Event{
		Community: community,
		Type:      streams.TypeAnalyticsUpdate,
		Metric:    "test_metric",
		Value:     json.RawMessage(fmt.Sprint(value)),
	}
}

func publish(t testing.TB, bus streams.Bus, e streams.Event) streams.Event {
	t.Helper()
	got, err := bus.Publish(t.Context(), e)
	if err != nil {
		t.Fatalf("Publish(%s %s) error = %v; want nil", e.Community, e.Type, err)
	}
	return got
}

func touch(t testing.TB, bus streams.Bus, s streams.Source) streams.PresenceResult {
	t.Helper()
	r, err := bus.Touch(t.Context(), s)
	if err != nil {
		t.Fatalf("Touch(%s/%s) error = %v; want nil", s.Visitor.Key(), s.ID, err)
	}
	return r
}

func leave(t testing.TB, bus streams.Bus, community string, v streams.Visitor, source string) streams.PresenceResult {
	t.Helper()
	r, err := bus.Leave(t.Context(), community, v, source)
	if err != nil {
		t.Fatalf("Leave(%s/%s) error = %v; want nil", v.Key(), source, err)
	}
	return r
}

func snapshot(t testing.TB, bus streams.Bus, community string) streams.Snapshot {
	t.Helper()
	s, err := bus.Snapshot(t.Context(), community)
	if err != nil {
		t.Fatalf("Snapshot(%s) error = %v; want nil", community, err)
	}
	return s
}

// want is the expected part of a PresenceResult or presence event.
type want struct {
	Count   int
	Changed bool
	Today   streams.Today
}

func checkResult(t testing.TB, call string, got streams.PresenceResult, w want) {
	t.Helper()
	if got.Count != w.Count || got.Changed != w.Changed || got.Today != w.Today {
		t.Errorf("%s = {Count:%d Changed:%v Today:%+v}; want {Count:%d Changed:%v Today:%+v}",
			call, got.Count, got.Changed, got.Today, w.Count, w.Changed, w.Today)
	}
}

// wantEvent is the expected part of a presence event.
type wantEvent struct {
	Type  string
	Count int
	Today streams.Today
}

func (w wantEvent) String() string {
	return fmt.Sprintf("%s(count=%d today=%d/%d)", w.Type, w.Count, w.Today.Authenticated, w.Today.Anonymous)
}

func checkEvents(t testing.TB, what string, got []streams.Event, want ...wantEvent) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Type == want[i].Type && got[i].Count == want[i].Count && got[i].Today == want[i].Today
	}
	if !ok {
		t.Errorf("%s = %s; want %v", what, describe(got), want)
	}
}

func describe(evs []streams.Event) string {
	parts := make([]string, len(evs))
	for i, e := range evs {
		switch {
		case e.IsPresence():
			parts[i] = fmt.Sprintf("#%d %s(count=%d today=%d/%d)", e.Seq, e.Type, e.Count, e.Today.Authenticated, e.Today.Anonymous)
		case e.Type == streams.TypeAnalyticsUpdate:
			parts[i] = fmt.Sprintf("#%d %s(%s=%s)", e.Seq, e.Type, e.Metric, e.Value)
		default:
			parts[i] = fmt.Sprintf("#%d %s", e.Seq, e.Type)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// recorder is a subscription that records every event it receives.
type recorder struct {
	bus       streams.Bus
	community string
	cancel    func()
	signal    chan struct{} // capacity 1: "an event arrived"

	mu     sync.Mutex
	events []streams.Event

	cursor int // next event flush returns; used by the test goroutine only
}

func subscribe(t testing.TB, bus streams.Bus, community string) *recorder {
	t.Helper()
	r := &recorder{bus: bus, community: community, signal: make(chan struct{}, 1)}
	cancel, err := bus.Subscribe(t.Context(), community, r.handle)
	if err != nil {
		t.Fatalf("Subscribe(%s) error = %v; want nil", community, err)
	}
	r.cancel = cancel
	t.Cleanup(cancel)
	return r
}

func (r *recorder) handle(e *streams.Event) {
	r.mu.Lock()
	r.events = append(r.events, *e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []streams.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitUntil waits until cond holds for the events received so far and
// returns them; it fails the test after waitTimeout.
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
			t.Fatalf("no %s after %v; events received: %s", what, waitTimeout, describe(evs))
		}
	}
}

// waitN waits for at least n events and returns them all.
func (r *recorder) waitN(t testing.TB, n int) []streams.Event {
	t.Helper()
	return r.waitUntil(t, fmt.Sprintf("%d events", n), func(evs []streams.Event) bool { return len(evs) >= n })
}

// flush publishes a marker event, waits for it and returns the events
// received since the previous flush, without markers. Events are delivered
// in Seq order, so once the marker arrived every event published before it
// has arrived too: flush returns exactly those not yet returned.
func (r *recorder) flush(t testing.TB) []streams.Event {
	t.Helper()
	m := publish(t, r.bus, streams.Event{
		Community: r.community,
		Type:      streams.TypeAnalyticsUpdate,
		Metric:    markerMetric,
		Value:     json.RawMessage(`true`),
	})
	evs := r.waitUntil(t, "marker "+m.ID, func(evs []streams.Event) bool {
		return slices.ContainsFunc(evs, func(e streams.Event) bool { return e.ID == m.ID })
	})
	i := slices.IndexFunc(evs, func(e streams.Event) bool { return e.ID == m.ID })
	if i < r.cursor {
		t.Fatalf("marker %s arrived before events already returned", m.ID)
	}
	out := slices.DeleteFunc(slices.Clone(evs[r.cursor:i]), func(e streams.Event) bool { return e.Metric == markerMetric })
	r.cursor = i + 1
	return out
}

// eventually polls cond every 20ms until it returns "" or waitTimeout
// passes; it then fails with cond's last complaint.
func eventually(t testing.TB, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", waitTimeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func second[T any](_ T, err error) error        { return err }
func third[T, U any](_ T, _ U, err error) error { return err }
