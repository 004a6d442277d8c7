package api_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSSEWithoutHijack: a stream that cannot be hijacked for chunked
// HTTP/1.1 (here an HTTP/1.0 request; HTTP/2 is the other case) is served
// inside its handler and carries the same events.
func TestSSEWithoutHijack(t *testing.T) {
	g := newGateway(t, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s?token=%s HTTP/1.0\r\nHost: x\r\n\r\n", ssePath(community1), member(t, "old-client"))
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("status line = %q, %v; want 200", status, err)
	}
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" && data != "" {
			break // the end of the first event
		}
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
	if event != "visitor_count" || !strings.Contains(data, `"type":"visitor_count"`) {
		t.Fatalf("first event = %q %q; want visitor_count", event, data)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for g.srv.OpenClients() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := g.srv.OpenClients(); n != 0 {
		t.Fatalf("OpenClients = %d after the client left; want 0", n)
	}
}
