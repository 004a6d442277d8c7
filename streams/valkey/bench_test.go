package valkey

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// Benchmarks of the Valkey bus against a real redis-server (they skip
// without one, like the tests):
//
//	go test -run '^$' -bench . -benchtime 2000x ./streams/valkey/
//
// BenchmarkDelivery publishes one event at a time and waits for it at a
// subscriber, on the same node or on another node, and reports the
// latency's p50 and p99 beside the memory bus's: cross-node delivery should stay
// within 1.3x of single-node (BENCHMARKS.md).
func BenchmarkDelivery(b *testing.B) {
	srv := valkeytest.Start(b)
	newNode := func() *Bus {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		bus, err := New(ctx, Options{URL: srv.URL(), ReapInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { bus.Close() })
		return bus
	}
	a, other := newNode(), newNode()
	mem := memory.New(memory.Options{})
	b.Cleanup(func() { mem.Close() })
	for _, tc := range []struct {
		name     string
		pub, sub streams.Bus
	}{
		{"memory", mem, mem},
		{"valkey-same-node", a, a},
		{"valkey-cross-node", a, other},
	} {
		b.Run(tc.name, func(b *testing.B) { benchDelivery(b, tc.pub, tc.sub) })
	}
}

func benchDelivery(b *testing.B, pub, sub streams.Bus) {
	c := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	got := make(chan time.Time, 1)
	cancel, err := sub.Subscribe(context.Background(), c, func(*streams.Event) {
		select {
		case got <- time.Now():
		default:
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cancel()
	e := streams.Event{Community: c, Type: streams.TypeAnalyticsUpdate, Metric: "bench", Value: json.RawMessage(`1`),
		Message: json.RawMessage(`{"type":"analytics_update","metric":"bench","value":1,"timestamp":"2026-11-26T00:00:00Z"}`)}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := pub.Publish(context.Background(), e); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case <-time.After(5 * time.Second):
			b.Fatal("event not delivered within 5s")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkPresence measures the round trip of a join and a leave (one
// script each) and of a poll heartbeat renewal, from one node.
func BenchmarkPresence(b *testing.B) {
	srv := valkeytest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	bus, err := New(ctx, Options{URL: srv.URL(), ReapInterval: time.Hour})
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bus.Close() })
	c := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	b.Run("join+leave", func(b *testing.B) {
		for i := range b.N {
			v := streams.Visitor{ID: fmt.Sprintf("u%d", i), Authenticated: true}
			if _, err := bus.Touch(context.Background(), streams.Source{Community: c, Visitor: v, ID: "ws"}); err != nil {
				b.Fatal(err)
			}
			if _, err := bus.Leave(context.Background(), c, v, "ws"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("poll-renewal", func(b *testing.B) {
		s := streams.Source{Community: c, Visitor: streams.Visitor{ID: "poller"}, ID: "poll", TTL: time.Minute}
		for range b.N {
			if _, err := bus.Touch(context.Background(), s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
