package valkey

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Webhook outbox (docs/protocol.md, webhooks), on when Options.Webhooks is.
//
// A community's events live in its own slot, written by the presence
// script that changes the count (lua/outbox.lua), atomically with the
// change:
//
//	ff:{c}:w              HASH   event id -> "<unix s>:<type>:<data JSON>"
//	ff:{c}:wa             HASH   event id -> deliveries tried (after a failure)
//	ff:{c}:wq:<suffix>    STRING an EnqueueWebhook of that id happened
//
// Event ids are "<community>:<suffix>". The node that ran the script then
// indexes the community's pending ids in two global sorted sets, which a
// cluster cannot write in the same script:
//
//	ff:wh:due             ZSET   event id -> due time (ms); a claim moves
//	                             it to the claim's end
//	ff:wh:born            ZSET   event id -> when first indexed (ms)
//	ff:wh:v:<day>         SET    communities that had visitors that day
//	ff:wh:walk:<day>      STRING node walking the day's summaries, or "done"
//
// Every presence script returns the community's pending ids while it has
// any, and the node indexes them again (ZADD NX): an event whose node died
// between the script and the index is indexed at the community's next
// operation, by any node. A claim whose node dies comes due again when the
// claim ends. The community keys expire streams.WebhookRetention after
// their last event; the per-day keys after visitedKeep.

const (
	keyWebhookDue  = "ff:wh:due"
	keyWebhookBorn = "ff:wh:born"
	// visitedKeep is how long the per-day keys live.
	visitedKeep = 3 * 24 * time.Hour
)

func outboxKey(c string) string           { return "ff:{" + c + "}:w" }
func attemptsKey(c string) string         { return "ff:{" + c + "}:wa" }
func enqueuedKey(c, suffix string) string { return "ff:{" + c + "}:wq:" + suffix }
func visitedKey(day string) string        { return "ff:wh:v:" + day }
func walkKey(day string) string           { return "ff:wh:walk:" + day }

// outboxReply is outbox_result(): the day to note the community as
// visited ("" if none) and its pending event ids.
type outboxReply struct {
	day string
	ids []string
}

func parseOutboxReply(m valkey.ValkeyMessage) (outboxReply, error) {
	vals, err := m.ToArray()
	if err != nil || len(vals) == 0 {
		return outboxReply{}, err
	}
	var r outboxReply
	if r.day, err = vals[0].ToString(); err != nil {
		return outboxReply{}, err
	}
	for _, v := range vals[1:] {
		id, err := v.ToString()
		if err != nil {
			return outboxReply{}, err
		}
		r.ids = append(r.ids, id)
	}
	return r, nil
}

// afterOutbox does what a presence script's outbox_result asks of the
// node: note the community as visited today, index its pending events.
// A failure is logged: the community's next operation does it again
// (except the visited note, which the walk's held communities cover).
func (b *Bus) afterOutbox(ctx context.Context, community string, r outboxReply) {
	if r.day == "" && len(r.ids) == 0 {
		return
	}
	var cmds valkey.Commands
	if r.day != "" {
		k := visitedKey(r.day)
		cmds = append(cmds,
			b.client.B().Sadd().Key(k).Member(community).Build(),
			b.client.B().Pexpire().Key(k).Milliseconds(visitedKeep.Milliseconds()).Build())
	}
	if len(r.ids) > 0 {
		cmds = append(cmds, b.indexCmds(float64(b.now().UnixMilli()), r.ids...)...)
	}
	for _, res := range b.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			b.log.Warn("valkey: index webhook events", "community", community, "err", err)
			return
		}
	}
}

// indexCmds index ids, due at ms, unless they are indexed already.
func (b *Bus) indexCmds(ms float64, ids ...string) valkey.Commands {
	due := b.client.B().Zadd().Key(keyWebhookDue).Nx().ScoreMember()
	born := b.client.B().Zadd().Key(keyWebhookBorn).Nx().ScoreMember()
	for _, id := range ids {
		due = due.ScoreMember(ms, id)
		born = born.ScoreMember(ms, id)
	}
	return valkey.Commands{due.Build(), born.Build()}
}

var _ streams.WebhookOutbox = (*Bus)(nil)

func (b *Bus) outboxCheck(ctx context.Context) error {
	if err := b.check(ctx); err != nil {
		return err
	}
	if !b.opts.Webhooks {
		return streams.ErrWebhooksOff
	}
	return nil
}

// ClaimWebhooks implements streams.WebhookOutbox: one script on the due
// index claims, so that each event is held by one node at a time.
func (b *Bus) ClaimWebhooks(ctx context.Context, now time.Time, n int, lease time.Duration) ([]streams.WebhookEvent, error) {
	if err := b.outboxCheck(ctx); err != nil {
		return nil, err
	}
	ids, err := b.s.claim.exec(ctx, b.client, []string{keyWebhookDue}, []string{
		strconv.FormatInt(now.UnixMilli(), 10), strconv.FormatInt(now.Add(lease).UnixMilli(), 10), strconv.Itoa(n),
	}).AsStrSlice()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	cmds := make(valkey.Commands, 0, 2*len(ids))
	for _, id := range ids {
		c := streams.WebhookCommunity(id)
		cmds = append(cmds,
			b.client.B().Hget().Key(outboxKey(c)).Field(id).Build(),
			b.client.B().Hget().Key(attemptsKey(c)).Field(id).Build())
	}
	res := b.client.DoMulti(ctx, cmds...)
	var out []streams.WebhookEvent
	var gone []string
	for i, id := range ids {
		v, err := res[2*i].ToString()
		if valkey.IsValkeyNil(err) {
			gone = append(gone, id) // done meanwhile, or expired
			continue
		} else if err != nil {
			return out, err
		}
		ev, ok := parseEvent(id, v)
		if !ok {
			gone = append(gone, id)
			continue
		}
		if a, err := res[2*i+1].AsInt64(); err == nil {
			ev.Attempts = int(a)
		}
		out = append(out, ev)
	}
	if len(gone) > 0 {
		for _, r := range b.client.DoMulti(ctx,
			b.client.B().Zrem().Key(keyWebhookDue).Member(gone...).Build(),
			b.client.B().Zrem().Key(keyWebhookBorn).Member(gone...).Build()) {
			if err := r.Error(); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// parseEvent reads an outbox value "<unix s>:<type>:<data JSON>".
func parseEvent(id, v string) (streams.WebhookEvent, bool) {
	ts, rest, ok := strings.Cut(v, ":")
	typ, data, ok2 := strings.Cut(rest, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || !ok2 || err != nil || !json.Valid([]byte(data)) {
		return streams.WebhookEvent{}, false
	}
	return streams.WebhookEvent{
		ID: id, Type: typ, Community: streams.WebhookCommunity(id),
		Time: time.Unix(sec, 0).UTC(), Data: json.RawMessage(data),
	}, true
}

// DoneWebhook implements streams.WebhookOutbox. The event goes first, then
// its index entries: a node dying in between leaves index entries that the
// next claim drops.
func (b *Bus) DoneWebhook(ctx context.Context, e streams.WebhookEvent) error {
	if err := b.outboxCheck(ctx); err != nil {
		return err
	}
	c := streams.WebhookCommunity(e.ID)
	for _, r := range b.client.DoMulti(ctx,
		b.client.B().Hdel().Key(outboxKey(c)).Field(e.ID).Build(),
		b.client.B().Hdel().Key(attemptsKey(c)).Field(e.ID).Build()) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("valkey: webhook done: %w", err)
		}
	}
	for _, r := range b.client.DoMulti(ctx,
		b.client.B().Zrem().Key(keyWebhookDue).Member(e.ID).Build(),
		b.client.B().Zrem().Key(keyWebhookBorn).Member(e.ID).Build()) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("valkey: webhook done: %w", err)
		}
	}
	return nil
}

// RetryWebhook implements streams.WebhookOutbox.
func (b *Bus) RetryWebhook(ctx context.Context, e streams.WebhookEvent, at time.Time, attempts int) error {
	if err := b.outboxCheck(ctx); err != nil {
		return err
	}
	c := streams.WebhookCommunity(e.ID)
	cmds := valkey.Commands{
		b.client.B().Hset().Key(attemptsKey(c)).FieldValue().FieldValue(e.ID, strconv.Itoa(attempts)).Build(),
		b.client.B().Pexpire().Key(attemptsKey(c)).Milliseconds(streams.WebhookRetention.Milliseconds()).Build(),
		// XX: an event done meanwhile (its claim lapsed and another node
		// delivered it) is not brought back.
		b.client.B().Zadd().Key(keyWebhookDue).Xx().ScoreMember().ScoreMember(float64(at.UnixMilli()), e.ID).Build(),
	}
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("valkey: webhook retry: %w", err)
		}
	}
	return nil
}

// EnqueueWebhook implements streams.WebhookOutbox: queued once per id (a
// marker in the community's slot, kept streams.WebhookRetention), then
// indexed.
func (b *Bus) EnqueueWebhook(ctx context.Context, e streams.WebhookEvent) error {
	if err := b.outboxCheck(ctx); err != nil {
		return err
	}
	c := streams.WebhookCommunity(e.ID)
	if c != e.Community || c == "" {
		return fmt.Errorf("valkey: webhook id %q does not start with its community", e.ID)
	}
	suffix := strings.TrimPrefix(e.ID, c+":")
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	value := strconv.FormatInt(e.Time.Unix(), 10) + ":" + e.Type + ":" + string(data)
	pending, err := b.s.whEnqueue.exec(ctx, b.client, []string{outboxKey(c), enqueuedKey(c, suffix)}, []string{
		e.ID, value, strconv.FormatInt(streams.WebhookRetention.Milliseconds(), 10), strconv.Itoa(streams.MaxWebhooksPerCommunity),
	}).AsInt64()
	if err != nil {
		return fmt.Errorf("valkey: webhook enqueue: %w", err)
	}
	if pending == 0 {
		return nil
	}
	for _, r := range b.client.DoMulti(ctx, b.indexCmds(float64(b.now().UnixMilli()), e.ID)...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("valkey: webhook enqueue: %w", err)
		}
	}
	return nil
}

// VisitedCommunities implements streams.WebhookOutbox: the communities
// noted that day, and those where a live node holds sources now (present
// maybe since before the day, with no operation in it).
func (b *Bus) VisitedCommunities(ctx context.Context, day string) ([]string, error) {
	if err := b.outboxCheck(ctx); err != nil {
		return nil, err
	}
	leases, err := b.client.Do(ctx, b.client.B().Zrange().Key(keyLeases).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	cmds := valkey.Commands{b.client.B().Smembers().Key(visitedKey(day)).Build()}
	for _, l := range leases {
		cmds = append(cmds, b.client.B().Smembers().Key(leaseCommsKey(l)).Build())
	}
	set := map[string]struct{}{}
	for _, r := range b.client.DoMulti(ctx, cmds...) {
		cs, err := r.AsStrSlice()
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			set[c] = struct{}{}
		}
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out, nil
}

// SummaryWalk implements streams.WebhookOutbox with one SET NX GET.
func (b *Bus) SummaryWalk(ctx context.Context, day string, lease time.Duration) (streams.SummaryWalk, error) {
	if err := b.outboxCheck(ctx); err != nil {
		return 0, err
	}
	cmd := b.client.B().Arbitrary("SET").Keys(walkKey(day)).
		Args(b.opts.NodeID, "NX", "GET", "PX", strconv.FormatInt(lease.Milliseconds(), 10)).Build()
	old, err := b.client.Do(ctx, cmd).ToString()
	switch {
	case valkey.IsValkeyNil(err):
		return streams.WalkMine, nil
	case err != nil:
		return 0, err
	case old == "done":
		return streams.WalkDone, nil
	}
	return streams.WalkBusy, nil
}

// FinishSummaryWalk implements streams.WebhookOutbox.
func (b *Bus) FinishSummaryWalk(ctx context.Context, day string) error {
	if err := b.outboxCheck(ctx); err != nil {
		return err
	}
	return b.client.Do(ctx, b.client.B().Set().Key(walkKey(day)).Value("done").PxMilliseconds(visitedKeep.Milliseconds()).Build()).Error()
}

// OutboxStats implements streams.WebhookOutbox (cluster-wide).
func (b *Bus) OutboxStats(ctx context.Context) (streams.OutboxStats, error) {
	if err := b.outboxCheck(ctx); err != nil {
		return streams.OutboxStats{}, err
	}
	res := b.client.DoMulti(ctx,
		b.client.B().Zcard().Key(keyWebhookDue).Build(),
		b.client.B().Zrange().Key(keyWebhookBorn).Min("0").Max("0").Withscores().Build())
	n, err := res[0].AsInt64()
	if err != nil {
		return streams.OutboxStats{}, err
	}
	s := streams.OutboxStats{Pending: int(n)}
	vals, err := res[1].ToArray()
	if err != nil {
		return s, err
	}
	if len(vals) > 0 {
		ms, err := scoreOf(vals)
		if err != nil {
			return s, err
		}
		s.Oldest = time.UnixMilli(int64(ms))
	}
	return s, nil
}
