package valkey

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/valkey/valkeytest"
)

// TestBusStatsErrors: a call that fails because Valkey is down counts as
// an error; answers that are no failure (an unknown session's nil reply,
// a script the restarted server no longer has) do not.
func TestBusStatsErrors(t *testing.T) {
	srv := valkeytest.Start(t)
	b := newBus(t, Options{URL: srv.URL(), PresenceTTL: time.Hour})
	ctx := context.Background()
	c := newCommunity()
	mustSnapshot(t, b, c)
	if _, err := b.Session(ctx, "no-such-session"); !errors.Is(err, streams.ErrSessionNotFound) {
		t.Fatalf("Session(unknown) = %v; want ErrSessionNotFound", err)
	}
	if got := b.BusStats().Errors; got != 0 {
		t.Fatalf("BusStats().Errors = %d after successful calls and a nil reply; want 0", got)
	}

	srv.Stop()
	if _, err := b.Snapshot(ctx, c); err == nil {
		t.Fatal("Snapshot with Valkey stopped: nil error; want one")
	}
	if got := b.BusStats().Errors; got == 0 {
		t.Fatal("BusStats().Errors = 0 after a failed Snapshot; want at least 1")
	}

	srv.Restart() // empty: the scripts are gone from its cache
	eventually(t, "the bus to recover", func() bool { return b.BusStats().Reconnects >= 1 })
	before := b.BusStats().Errors
	mustSnapshot(t, b, c) // EVALSHA meets NOSCRIPT, then EVAL: no error
	if got := b.BusStats().Errors; got != before {
		t.Fatalf("BusStats().Errors went %d -> %d over a Snapshot that succeeded after NOSCRIPT; want unchanged", before, got)
	}
	st := b.BusStats()
	if st.ServerRestarts < 1 || st.LeaseLapses < 1 || st.Resubscribes < 1 {
		t.Fatalf("BusStats() = %+v after a restart; want a server restart, a lease lapse and a resubscription", st)
	}
}
