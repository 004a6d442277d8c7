package hangup_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/footfall/footfall/internal/hangup"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a real TCP connection on loopback.
func pair(t *testing.T, ln net.Listener) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.TCPConn), c
}

func within(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newWatcher(t *testing.T) *hangup.Watcher {
	t.Helper()
	w, err := hangup.New()
	if !hangup.Supported {
		if err == nil {
			t.Fatal("New succeeded on a platform without a Watcher")
		}
		t.Skipf("no Watcher on this platform: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestHangups: a peer that closes is noticed once; one that sends and stays
// is not taken for gone; an unwatched connection is not reported; many
// connections closing at once are all noticed.
func TestHangups(t *testing.T) {
	w := newWatcher(t)
	ln := listen(t)

	// Closed by the peer.
	s1, c1 := pair(t, ln)
	var gone1 atomic.Int32
	if _, err := w.Watch(s1, func() { gone1.Add(1) }); err != nil {
		t.Fatal(err)
	}
	// Talks, then stays.
	s2, c2 := pair(t, ln)
	var gone2 atomic.Int32
	unwatch2, err := w.Watch(s2, func() { gone2.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if n := w.Watching(); n != 2 {
		t.Fatalf("Watching = %d; want 2", n)
	}
	if _, err := c2.Write(make([]byte, 5000)); err != nil { // more than one read's worth
		t.Fatal(err)
	}
	c1.Close()
	within(t, 2*time.Second, "the closed peer reported", func() bool { return gone1.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if gone2.Load() != 0 {
		t.Fatal("a peer that sent data was reported gone")
	}
	if gone1.Load() != 1 {
		t.Fatalf("the closed peer was reported %d times; want once", gone1.Load())
	}
	if n := w.Watching(); n != 1 {
		t.Fatalf("Watching = %d after a hangup; want 1", n)
	}
	// The server side can still write to the talking peer.
	if _, err := s2.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Unwatched, then closed: not reported.
	unwatch2()
	c2.Close()
	time.Sleep(100 * time.Millisecond)
	if gone2.Load() != 0 || w.Watching() != 0 {
		t.Fatalf("an unwatched connection: reported %d times, %d watched; want 0, 0", gone2.Load(), w.Watching())
	}

	// Many at once.
	const n = 300
	var gone atomic.Int32
	clients := make([]net.Conn, n)
	for i := range n {
		s, c := pair(t, ln)
		clients[i] = c
		if _, err := w.Watch(s, func() { gone.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	within(t, 3*time.Second, "every closed peer reported", func() bool { return gone.Load() == n })
}

// TestResetAndClose: a reset connection is reported; after Close, Watch
// fails with ErrClosed and the goroutine is gone (goleak).
func TestResetAndClose(t *testing.T) {
	w := newWatcher(t)
	ln := listen(t)
	s, c := pair(t, ln)
	var gone atomic.Int32
	if _, err := w.Watch(s, func() { gone.Add(1) }); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetLinger(0) // close with RST
	c.Close()
	within(t, 2*time.Second, "the reset peer reported", func() bool { return gone.Load() == 1 })

	w.Close()
	s2, _ := pair(t, ln)
	if _, err := w.Watch(s2, func() {}); err != hangup.ErrClosed {
		t.Fatalf("Watch after Close = %v; want ErrClosed", err)
	}
}

// TestChattyPeerIsGone: a peer that keeps sending is reported gone once it
// sent more than MaxInput, rather than read and dropped for ever, which
// would keep the Watcher's goroutine busy.
func TestChattyPeerIsGone(t *testing.T) {
	if !hangup.Supported {
		t.Skip("no Watcher on this platform")
	}
	w := newWatcher(t)
	s, c := pair(t, listen(t))
	var gone atomic.Int32
	if _, err := w.Watch(s, func() { gone.Add(1) }); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	sent := 0
	for sent <= hangup.MaxInput+len(chunk) && gone.Load() == 0 {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			break // the server side closed or stopped reading
		}
	}
	within(t, 2*time.Second, "the chatty peer reported gone", func() bool { return gone.Load() == 1 })
	if sent <= hangup.MaxInput/2 {
		t.Fatalf("reported gone after %d bytes; want after about %d", sent, hangup.MaxInput)
	}
}
