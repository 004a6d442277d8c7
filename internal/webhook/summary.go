package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/footfall/footfall/streams"
)

// summaryDay is the latest day whose summaries are due: the day before
// today, once SummaryDelay passed since midnight.
func (e *Engine) summaryDay() string {
	t := e.opts.Clock.Now().Add(-e.opts.SummaryDelay)
	return streams.Day(streams.Midnight(t, e.opts.Location).Add(-time.Nanosecond), e.opts.Location)
}

type walkResult struct {
	day   string
	state streams.SummaryWalk
	err   error
}

// walk queues the daily summary of each community that had visitors on
// day, unless another node does it or did it. Each community's summary has
// an id of its own that the outbox queues once, so a walk that failed half
// way (or a node that died walking) is simply walked again.
func (e *Engine) walk(ctx context.Context, day string) walkResult {
	r := walkResult{day: day}
	ob := e.opts.Outbox
	if r.state, r.err = ob.SummaryWalk(ctx, day, walkLease); r.err != nil || r.state != streams.WalkMine {
		return r
	}
	if e.opts.History == nil {
		r.err = errors.New("the bus has no visitor history")
		return r
	}
	start, err := time.ParseInLocation(time.DateOnly, day, e.opts.Location)
	if err != nil {
		r.err = err
		return r
	}
	end := streams.Midnight(start.Add(36*time.Hour), e.opts.Location)
	comms, err := ob.VisitedCommunities(ctx, day)
	if err != nil {
		r.err = err
		return r
	}
	var failed []error
	for _, c := range comms {
		if ctx.Err() != nil {
			r.err = ctx.Err()
			return r
		}
		if err := e.summarize(ctx, c, day, start, end); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", c, err))
		}
	}
	if len(failed) > 0 {
		// Walked again after walkRetry; what was queued stays queued once.
		r.err = fmt.Errorf("%d of %d communities: %w", len(failed), len(comms), failed[0])
		return r
	}
	r.err = ob.FinishSummaryWalk(ctx, day)
	return r
}

// summaryData is the data of a daily_summary (docs/protocol.md, webhooks).
type summaryData struct {
	Authenticated int     `json:"authenticated_visitors"`
	Anonymous     int     `json:"anonymous_visitors"`
	Total         int     `json:"total_unique_visitors"`
	Peak          int     `json:"peak"`
	PeakAt        *string `json:"peak_at"`
}

// summarize queues community's summary of the day [start, end).
func (e *Engine) summarize(ctx context.Context, community, day string, start, end time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	pts, err := e.opts.History.VisitorHistory(ctx, community, streams.StepDay, start, start)
	if err != nil {
		return err
	}
	var p *streams.Point
	for i := range pts {
		if pts[i].Time.Equal(start) {
			p = &pts[i]
		}
	}
	if p == nil || (p.Peak == 0 && p.Today.Total() == 0) {
		return nil // nobody that day
	}
	d := summaryData{
		Authenticated: p.Today.Authenticated, Anonymous: p.Today.Anonymous, Total: p.Today.Total(),
		Peak: p.Peak,
	}
	if !p.PeakAt.IsZero() {
		at := p.PeakAt.UTC().Format(time.RFC3339)
		d.PeakAt = &at
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return e.opts.Outbox.EnqueueWebhook(ctx, streams.WebhookEvent{
		ID:        SummaryID(community, day),
		Type:      streams.WebhookDailySummary,
		Community: community,
		// The midnight that ended the day: the same at every walk.
		Time: end.UTC(),
		Data: data,
	})
}

// SummaryID is the id of community's daily summary of day.
func SummaryID(community, day string) string {
	return streams.WebhookID(community, "daily-"+day)
}

// metrics are the engine's Prometheus metrics.
type metrics struct {
	deliveries *prometheus.CounterVec
	queue      prometheus.Gauge
	oldest     prometheus.Gauge
	duration   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "footfall_webhook_deliveries_total",
			Help: "Webhook delivery attempts by this node, by outcome: delivered (2xx), rejected (another status), timeout (no answer within 5s), error (no answer: refused, reset); gave_up counts events dropped after the last retry.",
		}, []string{"outcome"}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "footfall_webhook_queue_length",
			Help: "Webhook events waiting for delivery (being delivered, or due for a retry), cluster-wide on Valkey.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "footfall_webhook_oldest_pending_seconds",
			Help: "Age of the oldest webhook event waiting for delivery (0: none).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "footfall_webhook_delivery_duration_seconds",
			Help:    "How long webhook delivery attempts took (to a 2xx, another answer, or the timeout).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 9),
		}),
	}
	for _, o := range []string{outcomeDelivered, outcomeRejected, outcomeTimeout, outcomeError, outcomeGaveUp} {
		m.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.deliveries, m.queue, m.oldest, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("webhook: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
