package memory_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
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
