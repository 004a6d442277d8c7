// Package webhooktest is a webhook receiver for tests: a real HTTP server
// that checks every request's Footfall-Signature as docs/protocol.md tells
// a platform to and its body against the OpenAPI document's WebhookEvent,
// records the events and answers what the test says.
package webhooktest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/openapi/openapitest"
	"github.com/footfall/footfall/streams"
)

// Delivery is one request the receiver got, its signature checked.
type Delivery struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"`
	CommunityID string          `json:"community_id"`
	Timestamp   string          `json:"timestamp"`
	Data        json.RawMessage `json:"data"`
	// Status is what the receiver answered; Try counts the requests of
	// this id so far (1: the first).
	Status int `json:"-"`
	Try    int `json:"-"`
}

// Answer decides the status of a request, and how long to wait before it
// (the wait ends early when the client gives up).
type Answer func(d Delivery) (status int, delay time.Duration)

// Receiver is a running receiver; it stops when the test ends.
type Receiver struct {
	URL string

	t      testing.TB
	secret []byte
	srv    *httptest.Server
	stop   chan struct{}

	mu     sync.Mutex
	got    []Delivery
	tries  map[string]int
	answer Answer
	clock  streams.Clock
	spec   *openapitest.Validator
}

// Start starts a receiver that checks signatures with secret; a nil
// answer answers 200 at once.
func Start(t testing.TB, secret string, answer Answer) *Receiver {
	r := &Receiver{t: t, secret: []byte(secret), tries: map[string]int{}, answer: answer, clock: streams.SystemClock{}, stop: make(chan struct{}), spec: openapitest.New(t)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	t.Cleanup(func() { close(r.stop); r.srv.Close() })
	return r
}

// SetClock sets what "now" is for the signature's age (default: the
// system clock).
func (r *Receiver) SetClock(c streams.Clock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock = c
}

// SetAnswer replaces the answer.
func (r *Receiver) SetAnswer(a Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answer = a
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	now, answer := r.clock.Now(), r.answer
	r.mu.Unlock()
	if msg := Verify(req.Header.Get("Footfall-Signature"), body, r.secret, now); msg != "" {
		r.t.Errorf("webhook receiver: %s (header %q)", msg, req.Header.Get("Footfall-Signature"))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if err := r.spec.Webhook(body); err != nil {
		r.t.Errorf("webhook receiver: %v", err)
	}
	var d Delivery
	if err := json.Unmarshal(body, &d); err != nil {
		r.t.Errorf("webhook receiver: body %s: %v", body, err)
	}
	r.mu.Lock()
	r.tries[d.ID]++
	d.Try = r.tries[d.ID]
	r.mu.Unlock()
	status, delay := http.StatusOK, time.Duration(0)
	if answer != nil {
		status, delay = answer(d)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		case <-r.stop:
			return
		}
	}
	d.Status = status
	w.WriteHeader(status)
	r.mu.Lock()
	r.got = append(r.got, d)
	r.mu.Unlock()
}

// Verify checks a Footfall-Signature header: the HMAC-SHA256 of
// "<t>.<body>" with key, and t within 5 minutes of now. It returns what is
// wrong, or "".
func Verify(header string, body, key []byte, now time.Time) string {
	var ts, sig string
	for _, p := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "no timestamp"
	}
	if d := now.Sub(time.Unix(t, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return "stale timestamp"
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(ts + "." + string(body)))
	if !hmac.Equal([]byte(sig), []byte(hex.EncodeToString(m.Sum(nil)))) {
		return "bad signature"
	}
	return ""
}

// All returns every answered request, in order.
func (r *Receiver) All() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.got...)
}

// Delivered returns the requests answered 2xx.
func (r *Receiver) Delivered() []Delivery {
	var out []Delivery
	for _, d := range r.All() {
		if d.Status/100 == 2 {
			out = append(out, d)
		}
	}
	return out
}

// Tries returns how many requests of id arrived (answered or not).
func (r *Receiver) Tries(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries[id]
}

// Requests returns how many requests arrived (answered or not).
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.tries {
		n += c
	}
	return n
}

// WaitDelivered waits until n requests were answered 2xx and returns them.
func (r *Receiver) WaitDelivered(t testing.TB, n int, within time.Duration) []Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if d := r.Delivered(); len(d) >= n {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("webhook receiver: %d requests answered 2xx within %v; want %d (all: %+v)", len(r.Delivered()), within, n, r.All())
	return nil
}
