package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/footfall/footfall/streams/memory"
)

// The per-address table stays bounded whatever the number of addresses
// seen, and never forgets an address with an open connection (it
// grew for every address seen until the next minute's prune).
func TestIPLimitsTableBounded(t *testing.T) {
	p := newIPLimits(DefaultLimits)
	p.cap = 100
	now := time.Now()
	if ok, _ := p.acquire("192.0.2.1", now); !ok {
		t.Fatal("first connection refused")
	}
	for i := range 10000 {
		key := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
		if i%2 == 0 {
			if ok, _ := p.acquire(key, now); ok {
				p.release(key)
			}
		} else {
			p.allowRequest(key, now)
		}
		if n := p.tracked(); n > p.cap {
			t.Fatalf("after %d addresses the table holds %d; want at most %d", i+1, n, p.cap)
		}
	}
	if st := p.ips["192.0.2.1"]; st == nil || st.open != 1 {
		t.Fatalf("the address with an open connection was forgotten")
	}
	// Once their buckets have refilled, idle addresses are forgotten.
	p.prune(now.Add(p.refill))
	if n := p.tracked(); n != 1 {
		t.Fatalf("after a prune the table holds %d; want 1 (the open connection's)", n)
	}
}

func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"::ffff:203.0.113.7":   "203.0.113.7",
		"2001:db8:1:2::1":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::9": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":      "2001:db8:1:3::/64",
		"not an address":       "not an address",
	} {
		if got := addrKey(in); got != want {
			t.Errorf("addrKey(%q) = %q; want %q", in, got, want)
		}
	}
}

// A handler that panics after limitConnections admitted it gives its
// connection slot back (the release ran only on return, so each
// panic leaked a slot for good). recoverPanics is further out, as in
// routes.
func TestPanicReleasesConnSlot(t *testing.T) {
	bus := memory.New(memory.Options{})
	t.Cleanup(func() { bus.Close() })
	s := New(Options{Bus: bus, Limits: Limits{ConnRatePerIP: 1e6, MaxConnsPerIP: 2}})
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	e := echo.New()
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.recoverPanics)
	e.GET("/boom", func(echo.Context) error { panic("boom") }, s.limitConnections)
	for i := range 5 {
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("request %d after panicking handlers = %d; want 500 (429: the panics leaked their slots)", i+1, w.Code)
		}
	}
}
