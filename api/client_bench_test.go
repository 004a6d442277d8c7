package api

import (
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/api/internal/transport"
	"github.com/footfall/footfall/streams"
)

// BenchmarkEncodeCount measures encoding one visitor_count message.
func BenchmarkEncodeCount(b *testing.B) {
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		_ = encodeCount(visitorCount{Type: "visitor_count", CommunityID: "123e4567-e89b-12d3-a456-426614174000", Count: i, Change: intPtr(1), Timestamp: rfc3339(now)})
	}
}

// BenchmarkEncodeDashboard measures encoding one dashboard_update message.
func BenchmarkEncodeDashboard(b *testing.B) {
	now := time.Now()
	b.ReportAllocs()
	for i := range b.N {
		_ = encodeDashboard("123e4567-e89b-12d3-a456-426614174000", i, streams.Today{Authenticated: i, Anonymous: 3}, streams.Peak{Count: i, At: now.Unix()}, now)
	}
}

// BenchmarkCountMessageShared measures a coalesced count message when the
// community's other clients have already encoded it (the memo hit every
// client but the first pays).
func BenchmarkCountMessageShared(b *testing.B) {
	env := &clientEnv{log: slog.New(slog.DiscardHandler), now: time.Now}
	c := &client{env: env, stream: streams.StreamVisitors, community: "c1", share: new(shared)}
	now := time.Now()
	c.count, c.sentCount, c.pendingChanges = 7, 5, 2
	b.ReportAllocs()
	for range b.N {
		_ = c.countMessageLocked(now)
	}
}

// countingTransport is a blocking transport (like a WebSocket) whose writes
// cost nothing: what remains is footfall's own per-delivery work.
type countingTransport struct{ wg *sync.WaitGroup }

func (t countingTransport) Send(transport.Message) error { t.wg.Done(); return nil }
func (countingTransport) Keepalive() error               { return nil }
func (countingTransport) Close(int, string)              {}
func (countingTransport) Abort()                         {}
func (countingTransport) Inline() bool                   { return false }

// BenchmarkClientFanout measures footfall's per-client side of a broadcast
// to N WebSocket clients, without the socket write: Deliver (record, start
// the writer goroutine on demand), the writer's collect, and the writer
// going idle again. ns/op is per broadcast; ns/delivery per client.
func BenchmarkClientFanout(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s := &Server{log: slog.New(slog.DiscardHandler), now: time.Now, hub: streams.NewHub(nil, nil)}
			s.metrics = newMetrics(s)
			s.clientEnv = newClientEnv(s)
			var wg sync.WaitGroup
			wg.Add(n) // the first messages (dashboard_update) of every client
			clients := make([]*client, n)
			sh := new(shared) // as attach gives the clients of a community
			for i := range clients {
				c := s.newClient("websocket", "c1", streams.StreamDashboard, &auth.Identity{Subject: "u" + strconv.Itoa(i)})
				c.share = sh
				c.tr = countingTransport{wg: &wg}
				c.begin(streams.Snapshot{})
				clients[i] = c
			}
			wg.Wait()
			msg := []byte(`{"type":"analytics_update","metric":"bench","value":1,"timestamp":"2025-10-10T14:30:00Z"}`)
			b.ResetTimer()
			for i := range b.N {
				e := &streams.Event{Type: streams.TypeBroadcast, Seq: uint64(i + 1), Stream: streams.StreamDashboard, Message: msg, MessageType: "analytics_update"}
				wg.Add(n)
				for _, c := range clients {
					c.Deliver(e)
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			for _, c := range clients {
				c.finish()
				c.writers.Wait()
			}
		})
	}
}
