package valkey

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/valkey-io/valkey-go"
)

// ---------------------------------------------------------------------------
// Reaper

// reap is the reaper goroutine: every ReapInterval it ends the TTL sources
// whose deadline passed, and every PresenceTTL/10 the sources of lapsed
// leases. Both lists are shared by all nodes; a node claims what it works
// on so that the others skip it. It exits when Close closes b.stop.
func (b *Bus) reap() {
	ttl := time.NewTicker(b.opts.ReapInterval)
	defer ttl.Stop()
	leases := time.NewTicker(b.leaseCheckInterval())
	defer leases.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-ttl.C:
			ctx, cancel := b.bgContext()
			if err := b.reapTTL(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("valkey: reap expired sources", "err", err)
			}
			cancel()
		case <-leases.C:
			ctx, cancel := b.bgContext()
			if err := b.reapLeases(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("valkey: reap lapsed leases", "err", err)
			}
			cancel()
		}
	}
}

// claimBatch bounds the members a reaper claims at once.
const claimBatch = 100

// claim claims due members of the sorted set key until ms until.
func (b *Bus) claim(ctx context.Context, key string, now, until int64) ([]string, error) {
	return b.s.claim.exec(ctx, b.client, []string{key}, []string{
		strconv.FormatInt(now, 10), strconv.FormatInt(until, 10), strconv.Itoa(claimBatch),
	}).AsStrSlice()
}

// reapTTL settles the communities whose earliest TTL deadline passed.
func (b *Bus) reapTTL(ctx context.Context) error {
	for range 10 { // at most 10 batches per tick
		now := b.now().UnixMilli()
		claimUntil := now + max(2*time.Second, 4*b.opts.ReapInterval).Milliseconds()
		comms, err := b.claim(ctx, keyTTLIndex, now, claimUntil)
		if err != nil || len(comms) == 0 {
			return err
		}
		execs := make([]valkey.LuaExec, len(comms))
		args := b.common(b.now())
		for i, c := range comms {
			execs[i] = valkey.LuaExec{Keys: []string{metaKey(c)}, Args: args}
		}
		var done []string
		for i, r := range b.s.snapshot.execMany(ctx, b.client, execs) {
			if r.Error() == nil {
				done = append(done, comms[i])
				if rep, err := parseReply(r); err == nil {
					b.afterOutbox(ctx, comms[i], rep.outbox)
				}
			}
		}
		if len(done) == 0 {
			return errors.New("no community settled")
		}
		// Drop the claims, then put back the communities that still have
		// TTL sources at their earliest deadline. A Touch that added a
		// source meanwhile indexed it itself (ZADD LT) or is seen here.
		unclaim := append([]string{strconv.FormatInt(claimUntil, 10)}, done...)
		if err := b.s.unclaim.exec(ctx, b.client, []string{keyTTLIndex}, unclaim).Error(); err != nil {
			return err
		}
		cmds := make(valkey.Commands, len(done))
		for i, c := range done {
			cmds[i] = b.client.B().Zrange().Key(ttlKey(c)).Min("0").Max("0").Withscores().Build()
		}
		add := b.client.B().Zadd().Key(keyTTLIndex).Lt().ScoreMember()
		n := 0
		for i, r := range b.client.DoMulti(ctx, cmds...) {
			vals, err := r.ToArray()
			if err != nil {
				return err
			}
			if len(vals) == 0 {
				continue
			}
			score, err := scoreOf(vals)
			if err != nil {
				return err
			}
			add = add.ScoreMember(score, done[i])
			n++
		}
		if n > 0 {
			if err := b.client.Do(ctx, add.Build()).Error(); err != nil {
				return err
			}
		}
		if len(comms) < claimBatch {
			return nil
		}
	}
	return nil
}

// scoreOf reads the score of a one-member ZRANGE WITHSCORES reply (RESP2:
// member, score; RESP3: [member, score]).
func scoreOf(vals []valkey.ValkeyMessage) (float64, error) {
	if len(vals) == 1 {
		pair, err := vals[0].ToArray()
		if err != nil || len(pair) != 2 {
			return 0, fmt.Errorf("unexpected ZRANGE reply")
		}
		return pair[1].AsFloat64()
	}
	if len(vals) != 2 {
		return 0, fmt.Errorf("unexpected ZRANGE reply")
	}
	return vals[1].AsFloat64()
}

// reapLeases ends the held sources of leases that lapsed.
func (b *Bus) reapLeases(ctx context.Context) error {
	now := time.Now().UnixMilli()
	claimUntil := now + max(2*time.Second, 4*b.leaseCheckInterval()).Milliseconds()
	leases, err := b.claim(ctx, keyLeases, now, claimUntil)
	if err != nil || len(leases) == 0 {
		return err
	}
	cmds := make(valkey.Commands, len(leases))
	for i, l := range leases {
		cmds[i] = b.client.B().Exists().Key(leaseKey(l)).Build()
	}
	for i, r := range b.client.DoMulti(ctx, cmds...) {
		alive, err := r.AsInt64()
		if err != nil {
			return err
		}
		if alive == 1 {
			continue // refreshed late; its node's next refresh resets the score
		}
		if err := b.reapLease(ctx, leases[i], claimUntil); err != nil {
			return err
		}
	}
	return nil
}

// reapLease ends every source lease holds, community by community (each
// once: the script removes what it ends), then forgets the lease.
func (b *Bus) reapLease(ctx context.Context, lease string, claimUntil int64) error {
	comms, err := b.client.Do(ctx, b.client.B().Smembers().Key(leaseCommsKey(lease)).Build()).AsStrSlice()
	if err != nil {
		return err
	}
	if err := b.reapCommunities(ctx, lease, comms); err != nil {
		return err
	}
	if err := b.client.Do(ctx, b.client.B().Del().Key(leaseCommsKey(lease)).Build()).Error(); err != nil {
		return err
	}
	b.counters.leasesReaped.Add(1)
	return b.s.unclaim.exec(ctx, b.client, []string{keyLeases}, []string{strconv.FormatInt(claimUntil, 10), lease}).Error()
}

// reapCommunities runs the reap script for lease on comms until nothing is
// left.
func (b *Bus) reapCommunities(ctx context.Context, lease string, comms []string) error {
	for len(comms) > 0 {
		var again []string
		for i := 0; i < len(comms); i += syncBatch {
			batch := comms[i:min(i+syncBatch, len(comms))]
			args := append(b.common(b.now()), lease, strconv.Itoa(maxPerRun))
			execs := make([]valkey.LuaExec, len(batch))
			for j, c := range batch {
				execs[j] = valkey.LuaExec{Keys: []string{metaKey(c)}, Args: args}
			}
			for j, res := range b.s.reap.execMany(ctx, b.client, execs) {
				r, err := parseReply(res)
				if err != nil {
					return err
				}
				b.afterOutbox(ctx, batch[j], r.outbox)
				if r.extra > 0 {
					again = append(again, batch[j])
				}
			}
		}
		comms = again
	}
	return nil
}
