package auth_test

import (
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
)

// TestVerifiedCache: a token verified once is answered from the cache
// until it expires, and callers get copies.
func TestVerifiedCache(t *testing.T) {
	clock := now
	v := newVerifier(t, auth.Config{Secret: testSecret, Now: func() time.Time { return clock }})
	tok := hs(t, with(claims(), "exp", now.Add(time.Minute).Unix()))

	first, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify = %v; want ok", err)
	}
	first.SessionID = "mutated"
	second, err := v.Verify(tok)
	if err != nil || second.Subject != "user-42" {
		t.Fatalf("second Verify = %+v, %v; want user-42", second, err)
	}
	if second.SessionID != "" {
		t.Fatalf("second Verify SessionID = %q; want a fresh copy", second.SessionID)
	}
	// Past exp the cache answers nothing and the full check says 4004.
	clock = now.Add(2 * time.Minute)
	if _, err := v.Verify(tok); codeOf(err) != auth.CodeExpired {
		t.Fatalf("Verify after exp = %v; want 4004", err)
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	v := newVerifier(b, auth.Config{Secret: testSecret, Now: func() time.Time { return now }})
	tok := hs(b, claims())
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
