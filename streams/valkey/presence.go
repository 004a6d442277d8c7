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
	// outbox: the webhook outbox's day to note and pending ids (outbox.go).
	outbox outboxReply
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
	if len(vals) != 11 {
		return reply{}, fmt.Errorf("unexpected reply of %d elements", len(vals))
	}
	ob, err := parseOutboxReply(vals[10])
	if err != nil {
		return reply{}, err
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
		outbox:    ob,
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
	b.afterOutbox(ctx, s.Community, r.outbox)
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
	b.afterOutbox(ctx, community, r.outbox)
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
	b.afterOutbox(ctx, community, r.outbox)
	snap := streams.Snapshot{Community: community, Count: r.count, Today: r.today, Peak: r.peak, Seq: r.seq, LastID: r.lastID()}
	if r.changedAt > 0 {
		snap.Changed = time.Unix(r.changedAt, 0).UTC()
	}
	return snap, nil
}
