package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/internal/webhook/webhooktest"
	"github.com/footfall/footfall/streams"
)

const webhookTestSecret = "whole-program-webhook-secret-0123456789"

// The whole program with webhooks: a visitor's WebSocket occupies the
// community, closing it vacates it once the leave grace ran out; both
// arrive signed; the metrics show them; the secret appears nowhere.
func TestWebhooksEndToEnd(t *testing.T) {
	const community = "123e4567-e89b-12d3-a456-426614174abc"
	rcv := webhooktest.Start(t, webhookTestSecret, nil)
	base, logs := startMain(t, nil, map[string]string{
		"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_LEAVE_GRACE": "1s",
		"FOOTFALL_WEBHOOK_URL": rcv.URL, "FOOTFALL_WEBHOOK_SECRET": webhookTestSecret,
	})
	tok, _, err := auth.Mint([]byte(testSecret), auth.Claims{Subject: "visitor-1", TTL: time.Hour,
		Communities: map[string]auth.Role{community: auth.RoleMember}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ws := "ws" + strings.TrimPrefix(base, "http") + "/ws/communities/" + community + "/visitors/?token=" + tok
	conn, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	occ := rcv.WaitDelivered(t, 1, 5*time.Second)[0]
	if occ.Type != streams.WebhookOccupied || occ.CommunityID != community || string(occ.Data) != `{"count":1}` {
		t.Fatalf("first webhook %+v; want %s's community_occupied with count 1", occ, community)
	}
	conn.Close()
	closed := time.Now()
	vac := rcv.WaitDelivered(t, 2, 10*time.Second)[1]
	if vac.Type != streams.WebhookVacated || string(vac.Data) != `{"count":0}` {
		t.Fatalf("second webhook %+v; want community_vacated with count 0", vac)
	}
	if d := time.Since(closed); d < time.Second {
		t.Errorf("vacated %v after the close; want after the 1s leave grace", d)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`footfall_webhook_deliveries_total{outcome="delivered"} 2`, "footfall_webhook_queue_length", "footfall_webhook_oldest_pending_seconds", "footfall_connections_open"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
	if strings.Contains(logs.String(), webhookTestSecret) || bytes.Contains(body, []byte(webhookTestSecret)) {
		t.Errorf("the webhook secret appears in the output")
	}
}

func TestWebhookConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"url without secret", map[string]string{"FOOTFALL_WEBHOOK_URL": "http://127.0.0.1:9/hook"}, "FOOTFALL_WEBHOOK_SECRET"},
		{"secret without url", map[string]string{"FOOTFALL_WEBHOOK_SECRET": webhookTestSecret}, "FOOTFALL_WEBHOOK_URL"},
		{"short secret", map[string]string{"FOOTFALL_WEBHOOK_URL": "http://127.0.0.1:9/hook", "FOOTFALL_WEBHOOK_SECRET": "short"}, "FOOTFALL_WEBHOOK_SECRET"},
		{"not http", map[string]string{"FOOTFALL_WEBHOOK_URL": "ftp://u:" + webhookTestSecret + "@example.invalid/", "FOOTFALL_WEBHOOK_SECRET": webhookTestSecret}, "FOOTFALL_WEBHOOK_URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["FOOTFALL_JWT_SECRET"] = testSecret
			var out, errOut bytes.Buffer
			err := run(context.Background(), nil, env(tc.env), &out, &errOut)
			var ce *configError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v; want a configuration error naming %s", err, tc.want)
			}
			if strings.Contains(err.Error()+out.String()+errOut.String(), webhookTestSecret) {
				t.Errorf("the webhook secret appears in the output: %v", err)
			}
		})
	}
	// --dev ignores the webhook settings, and says so.
	var out bytes.Buffer
	cfg, err := parseConfig([]string{"--dev"}, env(map[string]string{"FOOTFALL_WEBHOOK_URL": "http://127.0.0.1:9/", "FOOTFALL_WEBHOOK_SECRET": webhookTestSecret}), &out)
	if err != nil || cfg.Webhook.URL != "" || cfg.Webhook.Secret != "" || !strings.Contains(strings.Join(cfg.DevIgnored, ","), "FOOTFALL_WEBHOOK_URL") {
		t.Errorf("--dev: %v, webhook %+v, ignored %v; want the webhook settings ignored", err, cfg.Webhook, cfg.DevIgnored)
	}
}
