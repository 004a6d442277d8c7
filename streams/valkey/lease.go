package valkey

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// The node's lease and the keeper

// leaseTTL is the lifetime of the lease key: a little under the presence
// TTL, so that a dead node's sources end within the TTL even counting the
// reapers' polling interval.
func (b *Bus) leaseTTL() time.Duration { return b.opts.PresenceTTL * 9 / 10 }

// leaseCheckInterval is how often reapers look for lapsed leases.
func (b *Bus) leaseCheckInterval() time.Duration {
	return max(b.opts.PresenceTTL/10, 10*time.Millisecond)
}

func (b *Bus) registerLease(ctx context.Context, lease string) error {
	ttl := b.leaseTTL()
	res := b.client.DoMulti(ctx,
		b.client.B().Set().Key(leaseKey(lease)).Value(b.opts.NodeID).Nx().Px(ttl).Build(),
		b.client.B().Zadd().Key(keyLeases).ScoreMember().ScoreMember(float64(time.Now().Add(ttl).UnixMilli()), lease).Build(),
	)
	for _, r := range res {
		if err := r.Error(); err != nil && !valkey.IsValkeyNil(err) {
			return err
		}
	}
	return nil
}

// refreshLease extends the node's lease; lapsed is true when it was gone
// (expired while the node was cut off or stalled, or Valkey lost its data).
func (b *Bus) refreshLease(ctx context.Context) (lapsed bool, err error) {
	lease := b.currentLease()
	ttl := b.leaseTTL()
	res := b.client.DoMulti(ctx,
		b.client.B().Set().Key(leaseKey(lease)).Value(b.opts.NodeID).Xx().Px(ttl).Build(),
		b.client.B().Zadd().Key(keyLeases).ScoreMember().ScoreMember(float64(time.Now().Add(ttl).UnixMilli()), lease).Build(),
	)
	if err := res[0].Error(); err != nil {
		if valkey.IsValkeyNil(err) {
			return true, nil
		}
		return false, err
	}
	return false, res[1].Error()
}

// switchLease replaces a lapsed lease by a new one. Reapers may reap the
// old one at any time; the node's sources move to the new one with the
// next sync.
func (b *Bus) switchLease(ctx context.Context) error {
	b.leaseMu.Lock() // waits for operations running under the old lease
	if b.gone {
		b.leaseMu.Unlock()
		return streams.ErrClosed
	}
	old := b.lease
	b.lease = newLeaseID(b.opts.NodeID)
	b.retired = append(b.retired, old)
	lease := b.lease
	b.leaseMu.Unlock()
	b.counters.leaseLapses.Add(1)
	b.log.Warn("valkey: node lease lapsed; re-registering", "old", old, "new", lease)
	return b.registerLease(ctx, lease)
}

// keep is the keeper goroutine: it refreshes the node's lease every
// PresenceTTL/3 and, when a connection dropped or the lease lapsed,
// recovers. It exits when Close closes b.stop.
func (b *Bus) keep() {
	t := time.NewTicker(b.opts.PresenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-b.lost:
			b.recoverLoop()
		case <-t.C:
			ctx, cancel := b.bgContext()
			lapsed, err := b.refreshLease(ctx)
			if err == nil {
				var restarted bool
				restarted, err = b.checkServers(ctx)
				lapsed = lapsed || restarted
			}
			if err == nil && !lapsed {
				if err := b.syncHeld(ctx, false, true); err != nil && ctx.Err() == nil {
					b.log.Warn("valkey: sync held sources", "err", err)
				}
				b.pruneHeld(ctx)
			}
			cancel()
			if err != nil {
				b.log.Warn("valkey: refresh node lease", "err", err)
			}
			if err != nil || lapsed {
				b.recoverLoop()
			}
		}
	}
}

// checkServers reads the run id of every server (every master and replica
// of a cluster) and reports whether one changed since the last check: that
// server restarted and may have lost its data, even if none of this node's
// subscriptions or its lease lived there. Only the keeper calls it.
func (b *Bus) checkServers(ctx context.Context) (restarted bool, err error) {
	for addr, c := range b.client.Nodes() {
		info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
		if err != nil {
			countError(&b.counters.errors, err) // c is not the counting client
			return false, fmt.Errorf("server %s: %w", addr, err)
		}
		id := infoField(info, "run_id")
		if old, ok := b.runIDs[addr]; ok && old != id {
			b.log.Warn("valkey: server restarted", "addr", addr)
			b.counters.serverRestarts.Add(1)
			restarted = true
		}
		b.runIDs[addr] = id
	}
	return restarted, nil
}

// infoField returns the value of field in an INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// recoverLoop runs recover until it succeeds or the bus stops. Ping fails
// until it has succeeded.
func (b *Bus) recoverLoop() {
	b.recovering.Store(true)
	var bo backoff
	for {
		err := b.recover()
		if err == nil {
			b.recovering.Store(false)
			return
		}
		if errors.Is(err, streams.ErrClosed) {
			return
		}
		b.log.Warn("valkey: recovery", "err", err)
		if !b.sleep(bo.next()) {
			return
		}
	}
}

// recover brings Valkey back in line with the node after an outage: it
// waits for Valkey to answer, renews (or replaces) the lease, re-registers
// every held source (set, not incremented), waits for the subscriptions to
// be back and then calls the OnReconnect hooks.
func (b *Bus) recover() error {
	select {
	case <-b.stop:
		return streams.ErrClosed
	default:
	}
	ctx, cancel := context.WithTimeout(b.life, 10*opTimeout)
	defer cancel()
	pctx, pcancel := context.WithTimeout(ctx, pingTimeout)
	err := b.client.Do(pctx, b.client.B().Ping().Build()).Error()
	pcancel()
	if err != nil {
		return fmt.Errorf("valkey unreachable: %w", err)
	}
	// Drops noticed so far are handled by this recovery.
	select {
	case <-b.lost:
	default:
	}
	lapsed, err := b.refreshLease(ctx)
	if err != nil {
		return fmt.Errorf("refresh lease: %w", err)
	}
	// Learn the servers' new run ids: the restarts so far are handled now.
	if _, err := b.checkServers(ctx); err != nil {
		return err
	}
	if lapsed {
		if err := b.switchLease(ctx); err != nil {
			return fmt.Errorf("new lease: %w", err)
		}
	}
	// Floors always: on a cluster, the shard of a community may have lost
	// its data while the lease's shard did not.
	if err := b.syncHeld(ctx, true, false); err != nil {
		return fmt.Errorf("re-register sources: %w", err)
	}
	b.cleanupRetired(ctx)
	b.waitSubscribed(ctx)
	b.counters.reconnects.Add(1)
	b.queue.Push(item{reconnect: true})
	return nil
}

// waitSubscribed waits (a few seconds at most) for every subscription to
// be confirmed again.
func (b *Bus) waitSubscribed(ctx context.Context) {
	deadline := time.Now().Add(opTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := b.revLoop.connected.Load()
		b.topicsMu.Lock()
		for _, t := range b.topics {
			if !t.loop.stopping.Load() && t.loop.err() == nil && !t.loop.connected.Load() {
				all = false
			}
		}
		b.topicsMu.Unlock()
		if all {
			return
		}
		if !b.sleep(20 * time.Millisecond) {
			return
		}
	}
}

// syncBatch bounds the communities synced in one pipeline.
const syncBatch = 256

// syncHeld re-registers the node's held sources: all of them (onlyDirty
// false) or those of communities where an operation failed. With floors
// it also raises the seq of every community the node subscribes to, to the
// highest its subscribers saw (Valkey may have lost its data).
func (b *Bus) syncHeld(ctx context.Context, floors, onlyDirty bool) error {
	b.leaseMu.RLock()
	defer b.leaseMu.RUnlock()
	if b.gone {
		return streams.ErrClosed
	}
	lease := b.lease

	b.heldMu.Lock()
	comms := make([]string, 0, len(b.held))
	hcs := make([]*heldCommunity, 0, len(b.held))
	for c, hc := range b.held {
		if !onlyDirty || hc.dirty {
			comms = append(comms, c)
			hcs = append(hcs, hc)
		}
	}
	b.heldMu.Unlock()

	seen := b.topicFloors()
	if len(comms) > 0 {
		// Registered first, as for a Touch.
		for i := 0; i < len(comms); i += 1000 {
			cmd := b.client.B().Sadd().Key(leaseCommsKey(lease)).Member(comms[i:min(i+1000, len(comms))]...).Build()
			if err := b.client.Do(ctx, cmd).Error(); err != nil {
				return err
			}
		}
	}
	var failed error
	for i := 0; i < len(comms); i += syncBatch {
		end := min(i+syncBatch, len(comms))
		for _, hc := range hcs[i:end] {
			hc.mu.Lock()
		}
		execs := make([]valkey.LuaExec, 0, end-i)
		now := b.now()
		b.heldMu.Lock()
		for j := i; j < end; j++ {
			hc := hcs[j]
			args := append(b.common(now), hc.regLease, lease, strconv.FormatUint(seen[comms[j]], 10))
			for m := range hc.members {
				args = append(args, m)
			}
			execs = append(execs, valkey.LuaExec{Keys: []string{metaKey(comms[j])}, Args: args})
		}
		b.heldMu.Unlock()
		res := b.s.sync.execMany(ctx, b.client, execs)
		b.heldMu.Lock()
		for j, r := range res {
			hc := hcs[i+j]
			if err := r.Error(); err != nil {
				hc.dirty = true
				failed = err
				continue
			}
			hc.regLease, hc.dirty = lease, false
		}
		b.heldMu.Unlock()
		for _, hc := range hcs[i:end] {
			hc.mu.Unlock()
		}
	}
	if failed != nil {
		return failed
	}
	if !floors {
		return nil
	}
	held := make(map[string]bool, len(comms))
	for _, c := range comms {
		held[c] = true
	}
	var execs []valkey.LuaExec
	now := b.now()
	for c, seq := range seen {
		if !held[c] && seq > 0 {
			args := append(b.common(now), "", "", strconv.FormatUint(seq, 10))
			execs = append(execs, valkey.LuaExec{Keys: []string{metaKey(c)}, Args: args})
		}
	}
	for _, r := range b.s.sync.execMany(ctx, b.client, execs) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

// topicFloors returns, per subscribed community, the highest seq the node
// has seen.
func (b *Bus) topicFloors() map[string]uint64 {
	b.topicsMu.Lock()
	ts := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, t)
	}
	b.topicsMu.Unlock()
	seen := make(map[string]uint64, len(ts))
	for _, t := range ts {
		t.mu.Lock()
		seen[t.community] = t.maxSeen
		t.mu.Unlock()
	}
	return seen
}

// cleanupRetired deletes the keys of leases the node replaced, once all its
// sources moved to the current lease.
func (b *Bus) cleanupRetired(ctx context.Context) {
	b.leaseMu.Lock()
	retired := b.retired
	b.retired = nil
	b.leaseMu.Unlock()
	if len(retired) == 0 {
		return
	}
	cmds := make(valkey.Commands, 0, 2*len(retired)+1)
	for _, l := range retired {
		cmds = append(cmds,
			b.client.B().Del().Key(leaseCommsKey(l)).Build(),
			b.client.B().Del().Key(leaseKey(l)).Build())
	}
	cmds = append(cmds, b.client.B().Zrem().Key(keyLeases).Member(retired...).Build())
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			b.log.Warn("valkey: clean up replaced lease", "err", err)
			b.leaseMu.Lock()
			b.retired = append(b.retired, retired...) // try again next time
			b.leaseMu.Unlock()
			return
		}
	}
}

// pruneHeld forgets communities where the node holds nothing any more,
// removing them from its lease's index.
func (b *Bus) pruneHeld(ctx context.Context) {
	b.leaseMu.RLock()
	defer b.leaseMu.RUnlock()
	b.heldMu.Lock()
	var comms []string
	var hcs []*heldCommunity
	for c, hc := range b.held {
		if len(hc.members) == 0 && !hc.dirty && hc.mu.TryLock() {
			if len(hc.members) == 0 && !hc.dirty { // an operation may have run before TryLock
				comms, hcs = append(comms, c), append(hcs, hc)
			} else {
				hc.mu.Unlock()
			}
		}
	}
	b.heldMu.Unlock()
	if len(comms) == 0 {
		return
	}
	defer func() {
		for _, hc := range hcs {
			hc.mu.Unlock()
		}
	}()
	byLease := make(map[string][]string)
	for i, hc := range hcs {
		if hc.regLease != "" {
			byLease[hc.regLease] = append(byLease[hc.regLease], comms[i])
		}
	}
	for l, cs := range byLease {
		if err := b.client.Do(ctx, b.client.B().Srem().Key(leaseCommsKey(l)).Member(cs...).Build()).Error(); err != nil {
			b.log.Warn("valkey: prune lease index", "err", err)
			return
		}
	}
	b.heldMu.Lock()
	for i, c := range comms {
		if b.held[c] == hcs[i] {
			delete(b.held, c)
		}
	}
	b.heldMu.Unlock()
}

// goodbye ends the node's held sources as it closes (visitor_left for
// visitors that leave with them) and removes its lease. It gives up after
// a few seconds: the lease then lapses and another node reaps.
func (b *Bus) goodbye() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	b.leaseMu.Lock()
	b.gone = true
	leases := append([]string{b.lease}, b.retired...)
	b.leaseMu.Unlock()

	byLease := make(map[string][]string)
	b.heldMu.Lock()
	for c, hc := range b.held {
		for _, l := range uniq(hc.regLease, leases[0]) {
			byLease[l] = append(byLease[l], c)
		}
	}
	b.heldMu.Unlock()
	for l, comms := range byLease {
		if err := b.reapCommunities(ctx, l, comms); err != nil {
			b.log.Warn("valkey: end held sources at close", "err", err)
			return
		}
	}
	cmds := make(valkey.Commands, 0, 2*len(leases)+1)
	for _, l := range leases {
		cmds = append(cmds, b.client.B().Del().Key(leaseKey(l)).Build(), b.client.B().Del().Key(leaseCommsKey(l)).Build())
	}
	cmds = append(cmds, b.client.B().Zrem().Key(keyLeases).Member(leases...).Build())
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			b.log.Warn("valkey: remove lease at close", "err", err)
			return
		}
	}
}

func uniq(a, b string) []string {
	switch {
	case a == "" || a == b:
		return []string{b}
	default:
		return []string{a, b}
	}
}
