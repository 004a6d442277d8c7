package streams

import (
	"strconv"
	"sync/atomic"
	"testing"
)

// countSub counts what it is handed, as cheaply as a Subscriber can.
type countSub struct{ n atomic.Int64 }

func (s *countSub) Deliver(*Event) { s.n.Add(1) }

// BenchmarkHubFanout measures the Hub's side of one broadcast to N local
// subscribers of a community: the state update and the hand-over to each
// subscriber (what api.client.Deliver then does is in api's benchmarks).
// ns/op is per broadcast; the "ns/delivery" metric divides it by N.
func BenchmarkHubFanout(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			// The topic as Join leaves it once loaded (no bus needed: the
			// bus's own costs are in its packages' benchmarks).
			h := NewHub(nil, nil)
			const community = "123e4567-e89b-12d3-a456-426614174000"
			t := &topic{hub: h, community: community, ready: make(chan struct{}), subs: make(map[Subscriber]struct{})}
			close(t.ready)
			for range n {
				t.subs[&countSub{}] = struct{}{}
			}
			msg := []byte(`{"type":"analytics_update","metric":"bench","value":1,"timestamp":"2025-10-10T14:30:00Z"}`)
			b.ResetTimer()
			for i := range b.N {
				t.onEvent(&Event{Type: TypeBroadcast, Community: community, Seq: uint64(i + 1), Stream: StreamDashboard, Message: msg, MessageType: "analytics_update"})
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}
