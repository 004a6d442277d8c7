package valkey

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/valkey-io/valkey-go"
)

// clientOption turns the configured URL into valkey-go options.
func clientOption(raw string) (valkey.ClientOption, error) {
	raw = strings.TrimSpace(raw)
	var opt valkey.ClientOption
	if raw == "" {
		return opt, errors.New("valkey: empty URL")
	}
	if strings.Contains(raw, "://") {
		var err error
		if opt, err = valkey.ParseURL(raw); err != nil {
			return opt, fmt.Errorf("valkey: parse URL: %w", err)
		}
	} else {
		for _, a := range strings.Split(raw, ",") {
			if a = strings.TrimSpace(a); a != "" {
				opt.InitAddress = append(opt.InitAddress, a)
			}
		}
	}
	opt.DisableCache = true
	// The bus retries on its own terms (subscriptions, the keeper); a
	// script must never be sent twice.
	opt.DisableRetry = true
	if opt.Dialer.Timeout == 0 {
		opt.Dialer.Timeout = dialTimeout
	}
	// A hung server is noticed within a few seconds (valkey-go pings idle
	// connections and fails them after this).
	opt.ConnWriteTimeout = 3 * time.Second
	return opt, nil
}

// redactURL drops the credentials from a URL for error messages.
func redactURL(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		if j := strings.LastIndex(raw, "@"); j > i {
			return raw[:i+3] + "***@" + raw[j+1:]
		}
	}
	return raw
}

// randomID returns n random base32 characters (lower case).
func randomID(n int) string {
	b := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	s := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return s[:n]
}

// newEpoch returns a fresh epoch candidate: 8 random characters.
func newEpoch() string { return randomID(8) }

func newLeaseID(node string) string { return node + "." + randomID(6) }

// backoff doubles a wait up to maxBackoff.
type backoff struct{ d time.Duration }

func (bo *backoff) next() time.Duration {
	if bo.d == 0 {
		bo.d = 50 * time.Millisecond
	} else {
		bo.d = min(2*bo.d, maxBackoff)
	}
	return bo.d
}

func (bo *backoff) reset() { bo.d = 0 }
