// Package streams is footfall's domain: communities, visitors and their
// presence, today's unique visitors, sessions, and the events that flow to
// the clients of a community. It knows nothing about HTTP.
//
// The Bus interface is the engine seam: streams/memory is the embedded,
// single-node implementation and streams/valkey the distributed one; both
// keep the same contract, which streams/streamstest checks.
//
// # Who multiplexes
//
// A node's clients of one community share one bus subscription, and the
// Hub is the one layer that multiplexes them: it takes a community's
// subscription with its first local subscriber and drops it after the
// last, keeps the community's state from the events it sees (and folds
// resync events), and fans every event out to its subscribers under one
// read lock. Clients never become bus subscriptions.
//
// A bus therefore does not fan out to clients. It keeps one upstream
// subscription per community it is asked for (the Valkey bus: one shard
// channel subscription per node) and hands each event to that community's
// Subscribe handlers, through the registry of streams/internal/delivery
// that both buses share; with a Hub on top there is one handler per
// community. The registry stays a list rather than a single slot because
// the Bus contract allows any number of Subscribe calls per community
// (the conformance suite checks that each gets every event), and a
// community's stream state (the Valkey bus's epoch, dedup and gap repair)
// must be shared by them. Why the Hub rather than the bus: the Hub's
// per-community state (snapshot, resync folding) needs one handler per
// community anyway, and its fanout is a map walk under a read lock, where
// a bus subscription per client would cost each delivery a mutex of its
// own and, on Valkey, a baseline read per client joining.
package streams

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Stream names one of the two client streams of a community.
type Stream string

// The two streams of a community.
const (
	StreamVisitors  Stream = "visitors"
	StreamDashboard Stream = "dashboard"
)

// Event types carried on the bus. The first four are also client message
// types (docs/protocol.md, streams).
const (
	TypeVisitorJoined   = "visitor_joined"
	TypeVisitorLeft     = "visitor_left"
	TypeAnalyticsUpdate = "analytics_update"
	// TypeBroadcast carries a message a platform sent through the service
	// API's broadcast call; Event.Message holds it as given.
	TypeBroadcast = "broadcast"
)

// Today holds the distinct visitors of a community since local midnight.
type Today struct {
	Authenticated int `json:"authenticated_visitors"`
	Anonymous     int `json:"anonymous_visitors"`
}

// Total is the number of distinct visitors today.
func (t Today) Total() int { return t.Authenticated + t.Anonymous }

// Peak is the highest count of present visitors since local midnight and
// when it was first reached (unix seconds). A new day starts with the count
// present at midnight, reached at midnight.
type Peak struct {
	Count int   `json:"count"`
	At    int64 `json:"at"`
}

// Time is when the peak was first reached (zero if never).
func (p Peak) Time() time.Time {
	if p.At == 0 {
		return time.Time{}
	}
	return time.Unix(p.At, 0).UTC()
}

// Event is one thing that happened in a community, as every node sees it.
//
// Seq orders the events of one community; ID is the opaque, node-independent
// id clients see (SSE `id:`), unique per community across restarts of the
// bus's storage.
type Event struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq"`
	Community string    `json:"community"`
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`

	// Presence events (visitor_joined, visitor_left): the figures right
	// after the change.
	Count int   `json:"count,omitempty"`
	Today Today `json:"today,omitzero"`
	Peak  Peak  `json:"peak,omitzero"`

	// analytics_update: the metric and its value.
	Metric string          `json:"metric,omitempty"`
	Value  json.RawMessage `json:"value,omitempty"`

	// broadcast: the stream and the message, as given. analytics_update
	// events carry their client message here too, encoded once at publish.
	Stream  Stream          `json:"stream,omitempty"`
	Message json.RawMessage `json:"message,omitempty"`
	// MessageType is Message's "type", read once when the message was
	// accepted, so that fanout never parses it per client.
	MessageType string `json:"message_type,omitempty"`

	// Resync marks a presence event that re-registers one node's sources
	// after Valkey lost its data: until every node has re-registered its
	// own, the figures are partial, so a gateway folds such events for a
	// moment (Hub: ResyncSettle) instead of announcing each one.
	Resync bool `json:"resync,omitempty"`
}

// IsPresence reports whether e changed the count of present visitors.
func (e *Event) IsPresence() bool {
	return e.Type == TypeVisitorJoined || e.Type == TypeVisitorLeft
}

// Snapshot is the state of a community at one moment.
type Snapshot struct {
	Community string
	Count     int
	Today     Today
	// Peak is today's peak count and when it was first reached.
	Peak Peak
	// Seq is the sequence number of the last event published in the
	// community (0 if none): events with Seq <= this are already reflected.
	Seq uint64
	// LastID is the ID of the event numbered Seq ("" if none or unknown):
	// an SSE client resuming from it misses nothing.
	LastID string
	// Changed is the time of the last change of Count or Today (zero if
	// nothing ever happened), so that REST snapshots have a stable ETag.
	Changed time.Time
}

// Visitor identifies one visitor. An authenticated visitor is a user (`sub`
// of a JWT, `user_id` of a session, `visitor_id` with authenticated: true);
// an anonymous one is a session id of the platform. The two never collide.
type Visitor struct {
	ID            string
	Authenticated bool
}

// Key is the visitor's identity as one string ("u:" or "a:" + id).
func (v Visitor) Key() string {
	if v.Authenticated {
		return "u:" + v.ID
	}
	return "a:" + v.ID
}

// Source is one sign of life of a visitor in a community.
//
// A source with TTL 0 is held: it lives until Leave, or until the node that
// holds it is gone (a Valkey bus ends it at most the bus's presence TTL after
// its node stopped renewing its lease). A source with a TTL ends TTL after
// its last Touch unless touched again or left.
type Source struct {
	Community string
	Visitor   Visitor
	// ID names the source within the visitor: a connection id, "poll",
	// "api". Touching the same ID again renews it.
	ID  string
	TTL time.Duration
}

// PresenceResult is the outcome of a Touch or Leave.
type PresenceResult struct {
	// Count is the number of present visitors after the operation.
	Count int
	// Changed is true when the visitor became present (Touch) or absent
	// (Leave); the bus then published the matching event, whose sequence
	// number is Seq. Seq is the community's last sequence number otherwise.
	Changed bool
	Seq     uint64
	// ID is the ID of the event numbered Seq ("" if none or unknown).
	ID    string
	Today Today
	Peak  Peak
}

// ErrClosed is what a Bus returns once it was closed.
var ErrClosed = errors.New("bus closed")

// Handler receives the events of a subscription. It is called from the
// bus's delivery goroutine, one event at a time and in Seq order per
// community, and must not block: it hands the event on and returns.
type Handler func(*Event)

// Bus is the engine every node shares: event delivery per community,
// presence, today's visitors, event history and sessions.
//
// Every method is safe for concurrent use. Presence operations publish the
// resulting visitor_joined / visitor_left event themselves, exactly once
// cluster-wide, atomically with the change; so does the bus's own expiry of
// sources whose TTL ran out.
type Bus interface {
	// Publish assigns e an ID, Seq and (if zero) Time, stores it in the
	// community's history and delivers it to every subscriber of
	// e.Community on every node. It returns the stored event.
	Publish(ctx context.Context, e Event) (Event, error)

	// Subscribe delivers the events of community to h until the returned
	// cancel function is called. Cancel is idempotent and returns once h
	// will not be called again.
	Subscribe(ctx context.Context, community string, h Handler) (cancel func(), err error)

	// History returns the events of community published after the event
	// with id afterID, oldest first. ok is false when afterID is unknown or
	// no longer in history, or when more than limit events came after it
	// (limit > 0; the caller then starts from a snapshot, and the bus reads
	// none of them). The history keeps at least the last 100 events and the
	// last 5 minutes.
	History(ctx context.Context, community, afterID string, limit int) (events []Event, ok bool, err error)

	// Touch makes s live (adding or renewing it).
	Touch(ctx context.Context, s Source) (PresenceResult, error)
	// Leave ends one source of a visitor; the visitor leaves with its last.
	Leave(ctx context.Context, community string, v Visitor, sourceID string) (PresenceResult, error)
	// Snapshot returns the community's present count and today's figures.
	Snapshot(ctx context.Context, community string) (Snapshot, error)
	// VisitorHistory: the community's buckets of present counts.
	HistoryReader

	// The server-side sessions (sessions.go).
	Sessions

	// Ping reports whether the bus's backing store is reachable.
	Ping(ctx context.Context) error
	// Close stops the bus's goroutines; later calls return ErrClosed.
	// Close is safe to call more than once.
	Close() error
}

// Reconnector is a Bus that can lose its backing store (Valkey) and says
// when it is back. After an outage the caller should re-read the state it
// shows (fresh snapshots for open streams) and re-check what it may have
// missed (revocations published meanwhile are lost).
type Reconnector interface {
	// OnReconnect calls h each time the bus is connected again and has
	// re-registered its state, until cancel is called. h must not block.
	OnReconnect(h func()) (cancel func())
}

// BusStats are a bus's cumulative counters since it was created, for the
// node's metrics. Each counts on one node only.
type BusStats struct {
	// Errors counts commands to the backing store that failed (an error
	// reply, a timeout, a dropped or refused connection), for callers and
	// for the bus's own background work alike. Nil replies, script-cache
	// misses the bus retries at once, and calls cancelled by their caller
	// are not errors.
	Errors uint64
	// Reconnects counts recoveries completed: the bus reached its store
	// again after an outage (or found its lease lapsed), re-registered its
	// state and told its OnReconnect hooks.
	Reconnects uint64
	// Resubscribes counts subscriptions (to a community's events, or to
	// revocations) confirmed again after their connection dropped.
	Resubscribes uint64
	// ServerRestarts counts restarts of a backing server the bus noticed
	// (the server may have lost its data; the bus refilled it).
	ServerRestarts uint64
	// LeaseLapses counts the times the node found its own presence lease
	// lapsed (cut off longer than the presence TTL, or the data lost) and
	// re-registered its visitors under a new one.
	LeaseLapses uint64
	// LeasesReaped counts lapsed leases of other nodes (dead, or cut off)
	// whose visitors this node ended.
	LeasesReaped uint64
	// Pending is the number of events and notices waiting for the bus's
	// delivery goroutine right now (not cumulative; it stays near zero).
	Pending int
}

// BusStatsReporter is a Bus that counts its own failures and recoveries
// (the Valkey bus). The gateway exports the counters as metrics when its
// bus has them; the memory bus cannot fail and has none.
type BusStatsReporter interface {
	BusStats() BusStats
}

// Clock tells the time; tests inject a fake one.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Day returns the calendar day of t in loc as "2006-01-02".
func Day(t time.Time, loc *time.Location) string {
	return t.In(loc).Format(time.DateOnly)
}

// Midnight returns the start of t's day in loc.
func Midnight(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// MaxCommunityIDLen bounds community ids so that keys stay small.
const MaxCommunityIDLen = 64

// NormalizeCommunityID returns the canonical (lower-case) form of id and
// whether id is a valid community id (docs/protocol.md, credentials: [0-9a-fA-F-]+).
// It runs on every request, so it checks the bytes itself rather than
// with a regular expression, and allocates only for an upper-case id.
func NormalizeCommunityID(id string) (string, bool) {
	if id == "" || len(id) > MaxCommunityIDLen {
		return "", false
	}
	upper := false
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case '0' <= b && b <= '9', 'a' <= b && b <= 'f', b == '-':
		case 'A' <= b && b <= 'F':
			upper = true
		default:
			return "", false
		}
	}
	if upper {
		return strings.ToLower(id), true
	}
	return id, true
}
