package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/footfall/footfall/internal/webhook"
	"github.com/footfall/footfall/streams"
)

// webhookConfig is the webhook settings (docs/protocol.md, webhooks).
type webhookConfig struct {
	URL    string
	Secret string
}

// minWebhookSecretBytes is the shortest webhook secret footfall accepts.
const minWebhookSecretBytes = 16

// webhookSettings are the webhook rows of the configuration table
// (docs/protocol.md, webhooks): both or neither. The secret comes first so
// that the URL's check sees it; --dev ignores both.
func (c *config) webhookSettings() []setting {
	return []setting{
		secretSetting(setting{flag: "webhook-secret", usage: "key of the webhooks' HMAC-SHA256 signature, at least 16 bytes; goes with --webhook-url", set: raw(&c.Webhook.Secret)}, minWebhookSecretBytes),
		{flag: "webhook-url", usage: "http(s) URL that receives the webhooks (community_occupied, community_vacated, daily_summary); empty = none", set: webhookURL(c), devIgnores: true, secretPart: urlPassword},
	}
}

// webhookURL stores the webhook URL once it is a valid http(s) URL that
// goes with a secret.
func webhookURL(c *config) func(string) error {
	return func(v string) error {
		v = strings.TrimSpace(v)
		if (v == "") != (c.Webhook.Secret == "") {
			return fmt.Errorf("FOOTFALL_WEBHOOK_URL and FOOTFALL_WEBHOOK_SECRET go together: set both or neither")
		}
		if v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("must be an http or https URL (%s)", redactURL(v))
			}
		}
		c.Webhook.URL = v
		return nil
	}
}

// webhooks is the node's webhook engine, when configured.
type webhooks struct {
	reg  *prometheus.Registry
	stop func()
}

// startWebhooks starts the delivery engine on bus when the webhooks are
// configured (openBus turned the bus's outbox on); stop ends it, before
// the bus closes. Its metrics join GET /metrics (see handler).
func startWebhooks(cfg config, bus streams.Bus, log *slog.Logger) (*webhooks, error) {
	w := &webhooks{stop: func() {}}
	if cfg.Webhook.URL == "" {
		return w, nil
	}
	outbox, ok := bus.(streams.WebhookOutbox)
	if !ok {
		return nil, fmt.Errorf("webhooks: the bus has no outbox")
	}
	w.reg = prometheus.NewRegistry()
	e, err := webhook.New(webhook.Options{
		URL: cfg.Webhook.URL, Secret: []byte(cfg.Webhook.Secret), Outbox: outbox,
		Location: cfg.Timezone, Registerer: w.reg, Log: log.With("component", "webhook"),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	w.stop = func() { cancel(); <-done }
	return w, nil
}

// metrics is the engine's registry for GET /metrics; nil without webhooks.
func (w *webhooks) metrics() prometheus.Gatherer {
	if w.reg == nil {
		return nil
	}
	return w.reg
}
