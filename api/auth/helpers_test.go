package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/golang-jwt/jwt/v5"
)

// now is the fixed time every test verifier runs at.
var now = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

var testSecret = []byte("test-secret-0123456789abcdef0123")

const community = "123e4567-e89b-12d3-a456-426614174000"

// claims returns valid claims for user-42, a member of community, valid
// for an hour from now.
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":         "user-42",
		"exp":         now.Add(time.Hour).Unix(),
		"communities": map[string]any{community: "member"},
	}
}

// with returns a copy of c with the given claims set; a nil value deletes
// the claim.
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
			continue
		}
		out[k] = kv[i+1]
	}
	return out
}

// sign signs c with method and key.
func sign(tb testing.TB, method jwt.SigningMethod, key any, c jwt.Claims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		tb.Fatalf("SignedString(%s) error: %v", method.Alg(), err)
	}
	return s
}

// hs signs c with HS256 and testSecret.
func hs(tb testing.TB, c jwt.Claims) string {
	tb.Helper()
	return sign(tb, jwt.SigningMethodHS256, testSecret, c)
}

// unsigned builds a token with the given header and claims and an empty
// signature (alg "none" style).
func unsigned(tb testing.TB, header map[string]any, c jwt.MapClaims) string {
	tb.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(c) + "."
}

// rawClaims builds an HS256 token whose payload is exactly payload, for
// claims that MapClaims cannot express (duplicate keys).
func rawClaims(tb testing.TB, payload string) string {
	tb.Helper()
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(head+"."+body, testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return head + "." + body + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func newVerifier(tb testing.TB, cfg auth.Config) *auth.Verifier {
	tb.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return now }
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		tb.Fatalf("NewVerifier() error: %v", err)
	}
	return v
}

func hsVerifier(tb testing.TB) *auth.Verifier {
	tb.Helper()
	return newVerifier(tb, auth.Config{Secret: testSecret})
}

// Generated keys are shared by the tests of one run: RSA generation is
// slow.
var (
	rsaKey = sync.OnceValue(func() *rsa.PrivateKey { return must(rsa.GenerateKey(rand.Reader, 2048)) })
	ecKey  = sync.OnceValue(func() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)) })
	edKey  = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return must(k, err)
	})
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// pemPublic PEM-encodes the public half of key as PKIX "PUBLIC KEY".
func pemPublic(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		tb.Fatalf("MarshalPKIXPublicKey() error: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// codeOf returns the code of err if it is an *auth.Error, 0 if err is nil
// and -1 for any other error.
func codeOf(err error) auth.Code {
	if err == nil {
		return 0
	}
	var ae *auth.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return -1
}

// fakeStore is a hand-written SessionStore: sessions by id, or an error
// by id; anything else is ErrSessionNotFound.
type fakeStore struct {
	mu       sync.Mutex
	sessions map[string]streams.Session
	errs     map[string]error
	calls    int
}

func (s *fakeStore) Session(_ context.Context, id string) (streams.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err, ok := s.errs[id]; ok {
		return streams.Session{}, err
	}
	if sess, ok := s.sessions[id]; ok {
		return sess, nil
	}
	return streams.Session{}, streams.ErrSessionNotFound
}

var errStoreDown = errors.New("valkey: connection refused")

// newFakeStore has sessions "live" (user-7, moderator of community, upper
// case in the store), "site-admin", "stale" (returned although past its
// expiry), "no-user", "sess-revoked", "sess-expired" and "broken" (the
// store fails).
func newFakeStore() *fakeStore {
	return &fakeStore{
		sessions: map[string]streams.Session{
			"live": {
				ID: "live", UserID: "user-7",
				Communities: map[string]string{"123E4567-E89B-12D3-A456-426614174000": "moderator", "other": "owner"},
				ExpiresAt:   now.Add(time.Hour),
			},
			"site-admin": {ID: "site-admin", UserID: "root", Role: "admin", ExpiresAt: now.Add(time.Hour)},
			"stale":      {ID: "stale", UserID: "user-8", ExpiresAt: now},
			"no-user":    {ID: "no-user", ExpiresAt: now.Add(time.Hour)},
		},
		errs: map[string]error{
			"sess-revoked": streams.ErrSessionRevoked,
			"sess-expired": streams.ErrSessionExpired,
			"broken":       errStoreDown,
		},
	}
}
