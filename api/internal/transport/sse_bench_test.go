package transport

import (
	"context"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/footfall/footfall/api/internal/alarm"
)

// nullSSEResponse is a response that writes nowhere; it tells the
// transport about each flush, as the real ones do.
type nullSSEResponse struct {
	tr  *SSE
	hdr http.Header
}

func (w *nullSSEResponse) Header() http.Header         { return w.hdr }
func (w *nullSSEResponse) WriteHeader(int)             {}
func (w *nullSSEResponse) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullSSEResponse) Flush()                      { w.tr.onFlush() }
func (w *nullSSEResponse) start()                      {}
func (w *nullSSEResponse) abort()                      {}
func (w *nullSSEResponse) finish()                     {}

// BenchmarkSSEUnpark measures what a parked SSE connection costs to wake
// for one message and park again (Timings.SSELinger 0: it parks as soon as the
// message is flushed): a session's r3labs stream, ServeHTTP and its
// goroutines, without the socket write. ns/op is one such cycle.
func BenchmarkSSEUnpark(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	n, _ := NewSSENode(new(alarm.Wheel), Timings{WriteWait: DefaultTimings().WriteWait}) // SSELinger 0
	defer n.Close()
	t := n.NewConn(1, nil)
	t.parkable, t.ctx, t.cancel = true, ctx, cancel
	t.w = &nullSSEResponse{tr: t, hdr: http.Header{}}
	ended := make(chan struct{})
	t.serve = func() {
		if t.sessions() {
			close(ended)
		}
	}
	parked := func() bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		return !t.running && t.flushed == t.published
	}
	t.mu.Lock()
	t.running = true
	t.mu.Unlock()
	go t.serve()
	<-t.attached
	msg := Message{Type: "analytics_update", ID: "1-0", Data: []byte(`{"type":"analytics_update","metric":"m","value":1}`)}
	for !parked() {
		_ = t.Send(msg) // the first session parks after its first message
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := t.Send(msg); err != nil {
			b.Fatal(err)
		}
		for !parked() {
			runtime.Gosched()
		}
	}
	b.StopTimer()
	t.Stop()
	<-ended
}
