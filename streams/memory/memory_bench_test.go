package memory_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/streamstest"
)

// BenchmarkPresence measures the presence path of the embedded bus: one
// visitor joining (Touch of a new source) and leaving again, in a community
// where N others are present, with one subscriber receiving the events.
func BenchmarkPresence(b *testing.B) {
	for _, n := range []int{0, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ctx := context.Background()
			bus := memory.New(memory.Options{})
			defer bus.Close()
			const community = "123e4567-e89b-12d3-a456-426614174000"
			cancel, err := bus.Subscribe(ctx, community, func(*streams.Event) {})
			if err != nil {
				b.Fatal(err)
			}
			defer cancel()
			for i := range n {
				v := streams.Visitor{ID: "present-" + strconv.Itoa(i), Authenticated: true}
				if _, err := bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "ws"}); err != nil {
					b.Fatal(err)
				}
			}
			v := streams.Visitor{ID: "bench", Authenticated: true}
			b.ResetTimer()
			for range b.N {
				if _, err := bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "ws"}); err != nil {
					b.Fatal(err)
				}
				if _, err := bus.Leave(ctx, community, v, "ws"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReloadsInGrace measures reloads under the leave grace: N
// visitors present, each op one visitor's connection ending into a 5 s
// grace (a Touch with a TTL) and its reload (a new held source), with the
// clock moving on so that earlier graces keep running out: what a busy
// community of reloading visitors costs the bus.
func BenchmarkReloadsInGrace(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ctx := context.Background()
			clock := streamstest.NewFakeClock(time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC))
			bus := memory.New(memory.Options{Clock: clock, ReapInterval: time.Hour})
			defer bus.Close()
			const community = "123e4567-e89b-12d3-a456-426614174000"
			conn := make([]int, n)
			for i := range n {
				v := streams.Visitor{ID: "v-" + strconv.Itoa(i), Authenticated: true}
				if _, err := bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "c0"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				k := i % n
				v := streams.Visitor{ID: "v-" + strconv.Itoa(k), Authenticated: true}
				old := "c" + strconv.Itoa(conn[k])
				conn[k]++
				if _, err := bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: old, TTL: 5 * time.Second}); err != nil {
					b.Fatal(err)
				}
				if _, err := bus.Touch(ctx, streams.Source{Community: community, Visitor: v, ID: "c" + strconv.Itoa(conn[k])}); err != nil {
					b.Fatal(err)
				}
				clock.Advance(time.Millisecond) // about 5,000 graces running at once
			}
		})
	}
}
