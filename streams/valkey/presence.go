package valkey

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Presence operations

// member is the name of a source in Valkey: "<visitor key>\0<source id>".
func member(v streams.Visitor, sourceID string) string {
	return v.Key() + "\x00" + sourceID
}

// reply is the parsed result() of a presence script.
type reply struct {
	changed   bool
	count     int
	seq       uint64
	today     streams.Today
	extra     int64
	changedAt int64 // unix seconds of the last presence change, 0 if none
	epoch     string
	peak      streams.Peak
}

// lastID is the ID of the event numbered r.seq ("" if none).
func (r reply) lastID() string {
	if r.seq == 0 || r.epoch == "" {
		return ""
	}
	return r.epoch + "-" + strconv.FormatUint(r.seq, 10)
}

func parseReply(res valkey.ValkeyResult) (reply, error) {
	vals, err := res.ToArray()
	if err != nil {
		return reply{}, err
	}
	if len(vals) != 10 {
		return reply{}, fmt.Errorf("unexpected reply of %d elements", len(vals))
	}
	var n [7]int64
	for i := range n {
		if n[i], err = vals[i].AsInt64(); err != nil {
			return reply{}, err
		}
	}
	epoch, err := vals[7].ToString()
	if err != nil {
		return reply{}, err
	}
	var peak [2]int64
	for i := range peak {
		if peak[i], err = vals[8+i].AsInt64(); err != nil {
			return reply{}, err
		}
	}
	return reply{
		changed:   n[0] != 0,
		count:     int(n[1]),
		seq:       uint64(n[2]),
		today:     streams.Today{Authenticated: int(n[3]), Anonymous: int(n[4])},
		extra:     n[5],
		changedAt: n[6],
		epoch:     epoch,
		peak:      streams.Peak{Count: int(peak[0]), At: peak[1]},
	}, nil
}

func (r reply) result() streams.PresenceResult {
	return streams.PresenceResult{Count: r.count, Changed: r.changed, Seq: r.seq, ID: r.lastID(), Today: r.today, Peak: r.peak}
}

// heldCommunity is what the node holds in one community: the sources of
// its open connections, which it re-registers after an outage.
type heldCommunity struct {
	// mu is read-locked by every operation on a held source of the
	// community while it runs, and write-locked by a sync of the
	// community, so that a sync never races an operation.
	mu sync.RWMutex

	// Guarded by Bus.heldMu:
	members map[string]struct{}
	// regLease is the lease under which the community is registered (in
	// ff:lease:<lease>:c) and its members are stored ("" if none yet).
	regLease string
	// dirty: an operation failed with an unknown outcome; the keeper
	// syncs the community at its next tick.
	dirty bool
}

func (b *Bus) isHeld(community, m string) bool {
	b.heldMu.Lock()
	defer b.heldMu.Unlock()
	hc := b.held[community]
	if hc == nil {
		return false
	}
	_, ok := hc.members[m]
	return ok
}

// lockHeld read-locks the lease and the community's held state for an
// operation on a held source; release undoes it.
func (b *Bus) lockHeld(community string) (hc *heldCommunity, lease string, release func(), err error) {
	b.leaseMu.RLock()
	if b.gone {
		b.leaseMu.RUnlock()
		return nil, "", nil, streams.ErrClosed
	}
	for {
		b.heldMu.Lock()
		hc = b.held[community]
		if hc == nil {
			hc = &heldCommunity{members: make(map[string]struct{})}
			b.held[community] = hc
		}
		b.heldMu.Unlock()
		hc.mu.RLock()
		b.heldMu.Lock()
		current := b.held[community] == hc
		b.heldMu.Unlock()
		if current {
			return hc, b.lease, func() { hc.mu.RUnlock(); b.leaseMu.RUnlock() }, nil
		}
		hc.mu.RUnlock() // pruned meanwhile: take the new one
	}
}

func (b *Bus) currentLease() string {
	b.leaseMu.RLock()
	defer b.leaseMu.RUnlock()
	return b.lease
}

// Touch makes s live. A held source (TTL 0) belongs to this node: keeping
// it alive costs Valkey nothing but the node's lease refresh.
func (b *Bus) Touch(ctx context.Context, s streams.Source) (streams.PresenceResult, error) {
	if err := b.check(ctx); err != nil {
		return streams.PresenceResult{}, err
	}
	switch {
	case s.Community == "":
		return streams.PresenceResult{}, errors.New("valkey: touch: empty community")
	case s.Visitor.ID == "":
		return streams.PresenceResult{}, errors.New("valkey: touch: empty visitor id")
	case strings.IndexByte(s.Visitor.ID, 0) >= 0:
		return streams.PresenceResult{}, errors.New("valkey: touch: NUL in visitor id")
	case s.TTL < 0:
		return streams.PresenceResult{}, errors.New("valkey: touch: negative ttl")
	}
	m := member(s.Visitor, s.ID)
	if s.TTL == 0 || b.isHeld(s.Community, m) {
		return b.touchHeld(ctx, s, m)
	}
	r, err := b.runTouch(ctx, s, b.currentLease())
	if err != nil {
		return streams.PresenceResult{}, err
	}
	return r.result(), nil
}

// touchHeld adds a held source, or turns a held source into one with a TTL.
func (b *Bus) touchHeld(ctx context.Context, s streams.Source, m string) (streams.PresenceResult, error) {
	hc, lease, release, err := b.lockHeld(s.Community)
	if err != nil {
		return streams.PresenceResult{}, err
	}
	defer release()
	b.heldMu.Lock()
	register := hc.regLease != lease
	b.heldMu.Unlock()
	if register && s.TTL == 0 {
		// Registered before the first source is stored, so that a reaper
		// finds the community should the node die right after.
		cmd := b.client.B().Sadd().Key(leaseCommsKey(lease)).Member(s.Community).Build()
		if err := b.client.Do(ctx, cmd).Error(); err != nil {
			return streams.PresenceResult{}, fmt.Errorf("valkey: touch: register community: %w", err)
		}
		b.heldMu.Lock()
		hc.regLease = lease
		b.heldMu.Unlock()
	}
	r, err := b.runTouch(ctx, s, lease)
	b.heldMu.Lock()
	switch {
	case s.TTL > 0:
		// No longer held by this node, whatever happened: a failed call
		// leaves the source held in Valkey, or not, and the keeper's sync
		// (dirty) then ends it rather than re-registering it for ever
		// (a leave grace asked for while Valkey was down).
		delete(hc.members, m)
		if err != nil {
			hc.dirty = true
		}
	case err != nil:
		hc.dirty = true // it may or may not have happened: the keeper syncs
	default:
		hc.members[m] = struct{}{}
	}
	b.heldMu.Unlock()
	if err != nil {
		return streams.PresenceResult{}, err
	}
	return r.result(), nil
}

func (b *Bus) runTouch(ctx context.Context, s streams.Source, lease string) (reply, error) {
	now := b.now()
	deadline := int64(0)
	if s.TTL > 0 {
		deadline = now.Add(s.TTL).UnixMilli()
	}
	args := append(b.common(now), s.Visitor.Key(), s.ID, strconv.FormatInt(deadline, 10), lease)
	r, err := parseReply(b.s.touch.exec(ctx, b.client, []string{metaKey(s.Community)}, args))
	if err != nil {
		return reply{}, fmt.Errorf("valkey: touch: %w", err)
	}
	if r.extra == 1 {
		// The community's earliest deadline moved earlier: tell the
		// reapers. Lower only (LT), so a stale hint never delays them.
		cmd := b.client.B().Zadd().Key(keyTTLIndex).Lt().ScoreMember().ScoreMember(float64(deadline), s.Community).Build()
		if err := b.client.Do(ctx, cmd).Error(); err != nil {
			// The presence change happened; the next operation on the
			// community expires the source even if no reaper does.
			b.log.Warn("valkey: index ttl source", "community", s.Community, "err", err)
		}
	}
	return r, nil
}

// Leave ends one source of v; the visitor leaves with its last.
func (b *Bus) Leave(ctx context.Context, community string, v streams.Visitor, sourceID string) (streams.PresenceResult, error) {
	if err := b.check(ctx); err != nil {
		return streams.PresenceResult{}, err
	}
	if community == "" {
		return streams.PresenceResult{}, errors.New("valkey: leave: empty community")
	}
	m := member(v, sourceID)
	if !b.isHeld(community, m) {
		r, err := b.runLeave(ctx, community, v, sourceID, b.currentLease(), "")
		if err != nil {
			return streams.PresenceResult{}, err
		}
		return r.result(), nil
	}
	hc, lease, release, err := b.lockHeld(community)
	if err != nil {
		return streams.PresenceResult{}, err
	}
	defer release()
	b.heldMu.Lock()
	other := hc.regLease
	b.heldMu.Unlock()
	r, err := b.runLeave(ctx, community, v, sourceID, lease, other)
	b.heldMu.Lock()
	delete(hc.members, m)
	if err != nil {
		hc.dirty = true
	}
	b.heldMu.Unlock()
	if err != nil {
		return streams.PresenceResult{}, err
	}
	return r.result(), nil
}

func (b *Bus) runLeave(ctx context.Context, community string, v streams.Visitor, sourceID, lease, other string) (reply, error) {
	if other == lease {
		other = ""
	}
	args := append(b.common(b.now()), v.Key(), sourceID, lease, other)
	r, err := parseReply(b.s.leave.exec(ctx, b.client, []string{metaKey(community)}, args))
	if err != nil {
		return reply{}, fmt.Errorf("valkey: leave: %w", err)
	}
	return r, nil
}

// Snapshot returns community's present count and today's figures (ending
// due TTL sources and rolling the day over first, as every operation does).
func (b *Bus) Snapshot(ctx context.Context, community string) (streams.Snapshot, error) {
	if err := b.check(ctx); err != nil {
		return streams.Snapshot{}, err
	}
	r, err := parseReply(b.s.snapshot.exec(ctx, b.client, []string{metaKey(community)}, b.common(b.now())))
	if err != nil {
		return streams.Snapshot{}, fmt.Errorf("valkey: snapshot: %w", err)
	}
	snap := streams.Snapshot{Community: community, Count: r.count, Today: r.today, Peak: r.peak, Seq: r.seq, LastID: r.lastID()}
	if r.changedAt > 0 {
		snap.Changed = time.Unix(r.changedAt, 0).UTC()
	}
	return snap, nil
}

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
				if r.extra > 0 {
					again = append(again, batch[j])
				}
			}
		}
		comms = again
	}
	return nil
}
