package streams

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// ErrWebhooksOff: the bus's options did not turn its webhook outbox on.
var ErrWebhooksOff = errors.New("webhook outbox not enabled")

// Webhook event types (docs/protocol.md, webhooks).
const (
	WebhookOccupied     = "community_occupied"
	WebhookVacated      = "community_vacated"
	WebhookDailySummary = "daily_summary"
)

// Outbox limits shared by both buses.
const (
	// WebhookRetention is how long a bus keeps an undelivered webhook
	// event at most, whatever the delivery engine does (it gives up
	// sooner).
	WebhookRetention = 24 * time.Hour
	// MaxWebhooksPerCommunity bounds the undelivered events of one
	// community: with the receiver down for long, a community that keeps
	// emptying and filling queues no more than this (later events are
	// dropped until some are delivered or given up).
	MaxWebhooksPerCommunity = 200
)

// WebhookEvent is one queued webhook delivery: the body's fields, and how
// many deliveries were tried.
type WebhookEvent struct {
	// ID is unique cluster-wide and the same at every attempt. It starts
	// with the community id and a colon.
	ID        string
	Type      string
	Community string
	// Time is the event's timestamp (whole seconds).
	Time time.Time
	// Data is the JSON object of the body's "data".
	Data json.RawMessage
	// Attempts is the number of deliveries tried before this claim.
	Attempts int
}

// WebhookID returns the id of a community's webhook event: the community,
// a colon and a suffix unique within the community.
func WebhookID(community, suffix string) string { return community + ":" + suffix }

// WebhookCommunity returns the community of a webhook event id.
func WebhookCommunity(id string) string {
	c, _, _ := strings.Cut(id, ":")
	return c
}

// SummaryWalk is the state of a day's daily summaries.
type SummaryWalk int

const (
	// WalkMine: nobody did it and nobody is doing it; the caller holds
	// the walk until its lease runs out.
	WalkMine SummaryWalk = iota
	// WalkBusy: another node is walking the day.
	WalkBusy
	// WalkDone: the day's summaries are all queued.
	WalkDone
)

// OutboxStats describes the events waiting for delivery (cluster-wide on
// a shared bus).
type OutboxStats struct {
	Pending int
	// Oldest is when the oldest pending event was queued (zero if none).
	Oldest time.Time
}

// WebhookOutbox is a bus that queues webhook events (when its options turn
// it on): the presence changes that occupy and vacate a community are
// queued atomically with the change, and the delivery engine claims them.
// Every event is held by at most one claim at a time, cluster-wide; a claim
// that is neither done nor retried (its node died) comes due again when its
// lease runs out.
type WebhookOutbox interface {
	// ClaimWebhooks returns up to n events due at now that no claim holds,
	// and holds them until now+lease.
	ClaimWebhooks(ctx context.Context, now time.Time, n int, lease time.Duration) ([]WebhookEvent, error)
	// DoneWebhook forgets e (delivered, or given up).
	DoneWebhook(ctx context.Context, e WebhookEvent) error
	// RetryWebhook releases e's claim and makes it due at at, with
	// attempts deliveries tried.
	RetryWebhook(ctx context.Context, e WebhookEvent, at time.Time, attempts int) error
	// EnqueueWebhook queues e, due at once, unless an event of the same id
	// was queued in the last WebhookRetention (delivered or not).
	EnqueueWebhook(ctx context.Context, e WebhookEvent) error
	// VisitedCommunities returns the communities that had visitors on day
	// ("2006-01-02" in the bus's location) as far as the bus noted them;
	// a few more may be among them.
	VisitedCommunities(ctx context.Context, day string) ([]string, error)
	// SummaryWalk tells whether the caller should queue day's daily
	// summaries now; WalkMine holds the walk for lease. FinishSummaryWalk
	// marks the walk done.
	SummaryWalk(ctx context.Context, day string, lease time.Duration) (SummaryWalk, error)
	FinishSummaryWalk(ctx context.Context, day string) error
	// OutboxStats counts the events waiting for delivery.
	OutboxStats(ctx context.Context) (OutboxStats, error)
}

// WebhookWaker is a WebhookOutbox that signals on the channel when it
// queued an event, so that the engine need not wait for its next poll.
type WebhookWaker interface {
	WebhookWake() <-chan struct{}
}
