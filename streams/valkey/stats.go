package valkey

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// counters are the bus's cumulative figures (streams.BusStats). They are
// atomics: valkey-go's reader goroutines, the bus's own goroutines and the
// callers' goroutines all count.
type counters struct {
	errors         atomic.Uint64
	reconnects     atomic.Uint64
	resubscribes   atomic.Uint64
	serverRestarts atomic.Uint64
	leaseLapses    atomic.Uint64
	leasesReaped   atomic.Uint64
}

var _ streams.BusStatsReporter = (*Bus)(nil)

// BusStats returns the bus's counters since New (streams.BusStats).
func (b *Bus) BusStats() streams.BusStats {
	return streams.BusStats{
		Errors:         b.counters.errors.Load(),
		Reconnects:     b.counters.reconnects.Load(),
		Resubscribes:   b.counters.resubscribes.Load(),
		ServerRestarts: b.counters.serverRestarts.Load(),
		LeaseLapses:    b.counters.leaseLapses.Load(),
		LeasesReaped:   b.counters.leasesReaped.Load(),
		Pending:        b.queue.Len(),
	}
}

// countingClient is the bus's valkey-go client with one addition: it
// counts the commands that fail (BusStats.Errors), so that every call the
// bus makes, for a caller or on its own, is counted in one place. It
// changes no result. (The per-server clients of Nodes are not wrapped; the
// keeper's INFO calls on them count themselves.)
type countingClient struct {
	valkey.Client
	errs *atomic.Uint64
}

func (c countingClient) Do(ctx context.Context, cmd valkey.Completed) valkey.ValkeyResult {
	r := c.Client.Do(ctx, cmd)
	countError(c.errs, r.Error())
	return r
}

func (c countingClient) DoMulti(ctx context.Context, multi ...valkey.Completed) []valkey.ValkeyResult {
	rs := c.Client.DoMulti(ctx, multi...)
	for _, r := range rs {
		countError(c.errs, r.Error())
	}
	return rs
}

func (c countingClient) Receive(ctx context.Context, subscribe valkey.Completed, fn func(msg valkey.PubSubMessage)) error {
	err := c.Client.Receive(ctx, subscribe, fn)
	countError(c.errs, err)
	return err
}

// countError counts err unless it is no failure of Valkey's: a nil reply,
// a NOSCRIPT the caller answers with EVAL at once, a call cancelled by its
// caller (or by Close), or the client closing.
func countError(n *atomic.Uint64, err error) {
	if err == nil || valkey.IsValkeyNil(err) || errors.Is(err, context.Canceled) || errors.Is(err, valkey.ErrClosing) {
		return
	}
	if verr, ok := valkey.IsValkeyErr(err); ok && verr.IsNoScript() {
		return
	}
	n.Add(1)
}
