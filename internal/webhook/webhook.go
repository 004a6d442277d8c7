// Package webhook delivers footfall's webhooks (docs/protocol.md,
// webhooks): it claims the events a bus's outbox queued, POSTs them signed
// to the configured URL, concurrently, and retries failures with backoff
// until it gives up; after local midnight it queues each community's daily
// summary.
//
// Every node of a cluster runs an Engine on the shared bus; the outbox's
// claims make exactly one of them deliver each event at a time, and a
// claim its node never settles (the node died) comes due again after
// Options.Lease, for any node to deliver: at least once.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/footfall/footfall/streams"
)

// Defaults of Options.
const (
	DefaultTimeout      = 5 * time.Second
	DefaultWorkers      = 32
	DefaultLease        = 30 * time.Second
	DefaultPoll         = time.Second
	DefaultFirstRetry   = 5 * time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultGiveUp       = time.Hour
	DefaultSummaryDelay = time.Minute
	DefaultStats        = 5 * time.Second

	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
	// "<t>.<raw body>")>".
	SignatureHeader = "Footfall-Signature"

	// walkLease is how long a node holds a day's summary walk; walkRetry
	// how soon a walk that failed (or that another node holds) is tried
	// again.
	walkLease = 5 * time.Minute
	walkRetry = time.Minute
	// maxResponseBytes is how much of a receiver's answer is read (and
	// dropped) so that the connection can be reused.
	maxResponseBytes = 64 << 10
)

// Options configures an Engine. URL, Secret and Outbox are required.
type Options struct {
	URL    string
	Secret []byte
	Outbox streams.WebhookOutbox
	// History gives daily summaries their figures (default: Outbox, when
	// it is a streams.HistoryReader, as both buses are).
	History streams.HistoryReader
	// Location defines midnight for daily summaries (default UTC).
	Location *time.Location
	// Clock tells the time of due dates, signatures and days (default
	// streams.SystemClock); it must agree with the bus's.
	Clock streams.Clock
	// Client sends the requests (default: a client of the engine's own
	// that follows no redirects).
	Client *http.Client
	// Timeout bounds one delivery (default 5s).
	Timeout time.Duration
	// Workers bounds the deliveries in flight on this node (default 32).
	Workers int
	// Lease is how long a claim holds an event (default 30s); it must
	// exceed Timeout.
	Lease time.Duration
	// Poll is how often the engine looks for due events (default 1s; a
	// bus that signals new events wakes it sooner).
	Poll time.Duration
	// FirstRetry is the wait before the first retry (default 5s); each
	// retry waits twice the previous one, at most MaxBackoff (default
	// 5m), each with ±20% jitter.
	FirstRetry time.Duration
	MaxBackoff time.Duration
	// GiveUp is how long the nominal retry schedule runs before the
	// engine gives an event up (default 1h).
	GiveUp time.Duration
	// SummaryDelay is how long after midnight the day's summaries are
	// queued (default 1m: nodes' clocks differ a little).
	SummaryDelay time.Duration
	// StatsInterval is how often the queue metrics are read (default 5s).
	StatsInterval time.Duration
	// Jitter returns a number in [0, 1) (default math/rand/v2.Float64).
	Jitter func() float64
	// Registerer receives the engine's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Log receives the engine's warnings (default: discarded).
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.History == nil {
		o.History, _ = o.Outbox.(streams.HistoryReader)
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Clock == nil {
		o.Clock = streams.SystemClock{}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Lease <= 0 {
		o.Lease = max(DefaultLease, 2*o.Timeout)
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.FirstRetry <= 0 {
		o.FirstRetry = DefaultFirstRetry
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.GiveUp <= 0 {
		o.GiveUp = DefaultGiveUp
	}
	if o.SummaryDelay < 0 {
		o.SummaryDelay = 0
	} else if o.SummaryDelay == 0 {
		o.SummaryDelay = DefaultSummaryDelay
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = DefaultStats
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Engine delivers webhooks. Create it with New and call Run.
type Engine struct {
	opts   Options
	client *http.Client
	m      *metrics

	warnMu   sync.Mutex
	lastWarn time.Time
}

// New checks opts and returns an Engine (not yet running).
func New(opts Options) (*Engine, error) {
	switch {
	case opts.URL == "":
		return nil, errors.New("webhook: no URL")
	case len(opts.Secret) == 0:
		return nil, errors.New("webhook: no secret")
	case opts.Outbox == nil:
		return nil, errors.New("webhook: no outbox")
	}
	opts = opts.withDefaults()
	if opts.Lease <= opts.Timeout {
		return nil, fmt.Errorf("webhook: lease %v must exceed the timeout %v", opts.Lease, opts.Timeout)
	}
	e := &Engine{opts: opts, client: opts.Client}
	if e.client == nil {
		e.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			// A redirect is an answer that is not 2xx: retried, not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	e.m = m
	return e, nil
}

// Backoff is the nominal wait before retry number attempt (1: the first
// retry): FirstRetry doubled at each retry, at most MaxBackoff. Each wait
// gets ±20% jitter on top.
func (e *Engine) Backoff(attempt int) time.Duration {
	d := e.opts.FirstRetry
	for i := 1; i < attempt && d < e.opts.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, e.opts.MaxBackoff)
}

// gaveUp reports whether an event that failed attempts times is given up:
// the nominal waits before its retries add up to GiveUp.
func (e *Engine) gaveUp(attempts int) bool {
	var sum time.Duration
	for i := 1; i <= attempts; i++ {
		if sum += e.Backoff(i); sum >= e.opts.GiveUp {
			return true
		}
	}
	return false
}

// Run delivers until ctx ends, then waits for the deliveries in flight to
// stop (each gives its event back, due at once, for any node) and returns.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		if t, ok := e.client.Transport.(*http.Transport); ok && e.opts.Client == nil {
			t.CloseIdleConnections()
		}
	}()
	var wake <-chan struct{}
	if w, ok := e.opts.Outbox.(streams.WebhookWaker); ok {
		wake = w.WebhookWake()
	}
	slots := make(chan struct{}, e.opts.Workers)
	freed := make(chan struct{}, 1)
	poll := time.NewTicker(e.opts.Poll)
	defer poll.Stop()

	var nextStats, nextWalk time.Time
	walked := ""
	walkDone := make(chan walkResult, 1)
	walking := false
	for {
		more := e.dispatch(ctx, slots, freed, &wg)
		now := time.Now()
		if !now.Before(nextStats) {
			nextStats = now.Add(e.opts.StatsInterval)
			e.readStats(ctx)
		}
		if day := e.summaryDay(); !walking && day != walked && !now.Before(nextWalk) {
			walking = true
			wg.Go(func() { walkDone <- e.walk(ctx, day) })
		}
		if more {
			// A full batch: there may be more due at once.
			select {
			case <-ctx.Done():
				return
			default:
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		case <-wake:
		case <-freed:
		case r := <-walkDone:
			walking = false
			if r.err != nil {
				if ctx.Err() == nil {
					e.opts.Log.Warn("webhook: daily summaries", "day", r.day, "err", r.err)
				}
				nextWalk = time.Now().Add(walkRetry)
			} else if r.state == streams.WalkBusy {
				nextWalk = time.Now().Add(walkRetry)
			} else {
				walked = r.day
			}
		}
	}
}

// dispatch claims as many due events as there are free workers and starts
// their deliveries. It reports whether it filled every free worker.
func (e *Engine) dispatch(ctx context.Context, slots chan struct{}, freed chan struct{}, wg *sync.WaitGroup) bool {
	free := cap(slots) - len(slots)
	if free == 0 || ctx.Err() != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	evs, err := e.opts.Outbox.ClaimWebhooks(cctx, e.opts.Clock.Now(), free, e.opts.Lease)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			e.warn("webhook: claim due events", "err", err)
		}
		return false
	}
	for _, ev := range evs {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() {
				<-slots
				select {
				case freed <- struct{}{}:
				default:
				}
			}()
			e.deliver(ctx, ev)
		})
	}
	return len(evs) == free
}

// Body returns the JSON body of ev (docs/protocol.md, webhooks).
func Body(ev streams.WebhookEvent) []byte {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	b, _ := json.Marshal(struct {
		ID          string          `json:"id"`
		Type        string          `json:"type"`
		CommunityID string          `json:"community_id"`
		Timestamp   string          `json:"timestamp"`
		Data        json.RawMessage `json:"data"`
	}{ev.ID, ev.Type, ev.Community, ev.Time.UTC().Format(time.RFC3339), data})
	return b
}

// Sign returns the Footfall-Signature header value of body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// deliver makes one attempt at ev and settles it: done after a 2xx (or
// when given up), else due again after the backoff.
func (e *Engine) deliver(ctx context.Context, ev streams.WebhookEvent) {
	body := Body(ev)
	start := time.Now()
	outcome, status, err := e.post(ctx, body)
	e.m.duration.Observe(time.Since(start).Seconds())
	// Settle on a context of its own: a stopping engine still gives the
	// event back.
	sctx, cancel := context.WithTimeout(context.Background(), e.opts.Timeout)
	defer cancel()
	if ctx.Err() != nil && outcome != outcomeDelivered {
		// Stopping: not an attempt; any node may deliver it at once. If
		// this fails too (the bus is gone), the claim lapses.
		_ = e.opts.Outbox.RetryWebhook(sctx, ev, e.opts.Clock.Now(), ev.Attempts)
		return
	}
	e.m.deliveries.WithLabelValues(outcome).Inc()
	if outcome == outcomeDelivered {
		if err := e.opts.Outbox.DoneWebhook(sctx, ev); err != nil {
			// The claim lapses and the event goes again: at least once.
			e.warn("webhook: settle a delivered event", "id", ev.ID, "err", err)
		}
		return
	}
	attempts := ev.Attempts + 1
	if e.gaveUp(attempts) {
		e.m.deliveries.WithLabelValues(outcomeGaveUp).Inc()
		e.opts.Log.Warn("webhook: gave up", "id", ev.ID, "type", ev.Type, "community", ev.Community,
			"attempts", attempts, "status", status, "err", err)
		if err := e.opts.Outbox.DoneWebhook(sctx, ev); err != nil {
			e.warn("webhook: drop a given-up event", "id", ev.ID, "err", err)
		}
		return
	}
	wait := time.Duration(float64(e.Backoff(attempts)) * (0.8 + 0.4*e.opts.Jitter()))
	e.warn("webhook: delivery failed; will retry", "id", ev.ID, "attempt", attempts, "status", status, "err", err, "retry_in", wait.Round(time.Millisecond).String())
	if err := e.opts.Outbox.RetryWebhook(sctx, ev, e.opts.Clock.Now().Add(wait), attempts); err != nil {
		e.warn("webhook: reschedule a failed event", "id", ev.ID, "err", err)
	}
}

// Outcomes of an attempt (the outcome label of
// footfall_webhook_deliveries_total), and gave_up for events given up.
const (
	outcomeDelivered = "delivered"
	outcomeRejected  = "rejected" // an answer that is not 2xx
	outcomeTimeout   = "timeout"
	outcomeError     = "error" // no answer: refused, reset, bad URL
	outcomeGaveUp    = "gave_up"
)

func (e *Engine) post(ctx context.Context, body []byte) (outcome string, status int, err error) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.opts.URL, bytes.NewReader(body))
	if err != nil {
		return outcomeError, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "footfall-webhook")
	req.Header.Set(SignatureHeader, Sign(e.opts.Secret, e.opts.Clock.Now(), body))
	resp, err := e.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return outcomeTimeout, 0, errors.New("no answer within the timeout")
		}
		return outcomeError, 0, redactURL(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return outcomeRejected, resp.StatusCode, nil
	}
	return outcomeDelivered, resp.StatusCode, nil
}

// redactURL drops the URL (which may carry credentials) from a client
// error's message.
func redactURL(err error) error {
	var uerr interface{ Unwrap() error }
	if errors.As(err, &uerr) {
		if inner := uerr.Unwrap(); inner != nil {
			return fmt.Errorf("POST to the webhook URL: %w", inner)
		}
	}
	return errors.New("POST to the webhook URL failed")
}

// warn logs at most one warning a minute (a dead receiver fails every
// event).
func (e *Engine) warn(msg string, args ...any) {
	e.warnMu.Lock()
	now := time.Now()
	ok := now.Sub(e.lastWarn) >= time.Minute
	if ok {
		e.lastWarn = now
	}
	e.warnMu.Unlock()
	if ok {
		e.opts.Log.Warn(msg, args...)
	}
}

func (e *Engine) readStats(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	s, err := e.opts.Outbox.OutboxStats(ctx)
	if err != nil {
		return
	}
	e.m.queue.Set(float64(s.Pending))
	age := 0.0
	if !s.Oldest.IsZero() {
		age = max(0, e.opts.Clock.Now().Sub(s.Oldest).Seconds())
	}
	e.m.oldest.Set(age)
}
