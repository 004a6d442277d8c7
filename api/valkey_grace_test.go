package api_test

// The leave grace across nodes sharing a real redis-server (single server
// and 3-master cluster): a reload that lands on another node, over another
// transport, is silent; a visitor that does not come back leaves once, on
// every node, even when the node that held its connection dies during the
// grace.

import (
	"testing"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/streams/valkey"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// graceNode is valkeyNode with a leave grace of testGrace.
func graceNode(t *testing.T, url string) (*gateway, *valkey.Bus) {
	t.Helper()
	return valkeyNodeWith(t, url, 2*time.Second, func(o *api.Options) { o.LeaveGrace = testGrace })
}

func TestValkeyLeaveGrace(t *testing.T) {
	single := valkeytest.Start(t)
	cluster := valkeytest.StartCluster(t, 3)
	for _, target := range []struct{ name, url string }{
		{"single", single.URL()},
		{"cluster", cluster.Seeds()},
	} {
		t.Run(target.name, func(t *testing.T) {
			t.Run("reload onto another node is silent", func(t *testing.T) { testGraceAcrossNodes(t, target.url) })
			t.Run("node dies during the grace", func(t *testing.T) { testGraceNodeDies(t, target.url) })
		})
	}
}

func testGraceAcrossNodes(t *testing.T, url string) {
	a, _ := graceNode(t, url)
	b, _ := graceNode(t, url)
	c := randomCommunity()
	wa := a.dial(visitorsPath(c), memberOf(t, "watcher-a", c))
	wa.readType("visitor_count")
	wb := b.dial(visitorsPath(c), memberOf(t, "watcher-b", c))
	wb.readType("visitor_count")
	readFor(wa, 5*time.Second, "visitor_joined", countIs(2))

	v := a.dial(visitorsPath(c), memberOf(t, "reloader", c))
	v.readType("visitor_count")
	for _, w := range []*wsClient{wa, wb} {
		readFor(w, 5*time.Second, "visitor_joined", countIs(3))
	}
	// WebSocket on A -> WebSocket on B.
	v.conn.Close()
	time.Sleep(50 * time.Millisecond)
	v = b.dial(visitorsPath(c), memberOf(t, "reloader", c))
	if m := v.readType("visitor_count"); m.num("count") != 3 {
		t.Fatalf("after moving to node B the count = %v; want 3", m)
	}
	// WebSocket on B -> SSE on A.
	v.conn.Close()
	time.Sleep(50 * time.Millisecond)
	s := a.openSSE(ssePath(c)+"?token="+memberOf(t, "reloader", c), nil, 200)
	if _, m := s.nextType("visitor_count"); m.num("count") != 3 {
		t.Fatalf("SSE on node A after the move: count = %v; want 3", m)
	}
	time.Sleep(testGrace + 500*time.Millisecond)
	wa.quiet()
	wb.quiet()

	// Gone for good: one visitor_left on each node, the grace after.
	s.close()
	closed := time.Now()
	for _, w := range []*wsClient{wa, wb} {
		m := w.readTypeWithin("visitor_left", testGrace+5*time.Second)
		if m.num("count") != 2 {
			t.Fatalf("visitor_left = %v; want count 2", m)
		}
	}
	if took := time.Since(closed); took < testGrace*9/10 {
		t.Fatalf("visitor_left %v after the close; want after the grace %v", took, testGrace)
	}
	time.Sleep(testGrace)
	wa.quiet()
	wb.quiet()
}

func testGraceNodeDies(t *testing.T, url string) {
	a, _ := graceNode(t, url)
	c := randomCommunity()
	w := a.dial(visitorsPath(c), memberOf(t, "watcher", c))
	w.readType("visitor_count")

	for _, comesBack := range []bool{true, false} {
		doomed, doomedBus := graceNode(t, url)
		sub := "leaver"
		if comesBack {
			sub = "returner"
		}
		v := doomed.dial(visitorsPath(c), memberOf(t, sub, c))
		v.readType("visitor_count")
		readFor(w, 5*time.Second, "visitor_joined", countIs(2))
		// The connection closes (its source lingers for the grace), then
		// the node dies without a goodbye.
		v.conn.Close()
		deadline := time.Now().Add(2 * time.Second)
		for doomed.srv.OpenClients() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		doomedBus.Abandon()
		if comesBack {
			// Back within the grace, on the surviving node: silence.
			back := a.dial(visitorsPath(c), memberOf(t, sub, c))
			if m := back.readType("visitor_count"); m.num("count") != 2 {
				t.Fatalf("back on node A: count = %v; want 2", m)
			}
			time.Sleep(testGrace + time.Second)
			w.quiet()
			back.conn.Close()
			readFor(w, testGrace+5*time.Second, "visitor_left", countIs(1))
			continue
		}
		m, seen := readFor(w, testGrace+5*time.Second, "visitor_left", nil)
		if m.num("count") != 1 || len(seen) != 0 {
			t.Fatalf("watcher saw %v then %v; want just visitor_left count 1", seen, m)
		}
		time.Sleep(testGrace + time.Second)
		w.quiet() // once
	}
}
