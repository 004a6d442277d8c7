package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer is a real HTTP server serving a JWK Set that the test rotates.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]crypto.PublicKey // kid -> key
	failing bool
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{keys: map[string]crypto.PublicKey{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failing {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range s.keys {
			set.Keys = append(set.Keys, jwk(kid, k))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(kid string, k crypto.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k == nil {
		delete(s.keys, kid)
		return
	}
	s.keys[kid] = k
}

func (s *jwksServer) fail(b bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = b
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwk is the JWK of a public key, without "alg" (so that only footfall's
// own check ties a key to its algorithm).
func jwk(kid string, k crypto.PublicKey) map[string]string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		x, y := make([]byte, 32), make([]byte, 32)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		return map[string]string{"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64(x), "y": b64(y)}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": b64(k)}
	}
	panic("unsupported key")
}

// signKid signs claims() with method and key, naming kid in the header.
func signKid(t *testing.T, method jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims())
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksVerifier(t *testing.T, url string, onErr func(error)) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{
		JWKSURL: url, JWKSRefresh: 300 * time.Millisecond, JWKSUnknownKIDEvery: 400 * time.Millisecond,
		Now: func() time.Time { return now }, OnJWKSError: onErr,
	})
	if err != nil {
		t.Fatalf("NewVerifier(JWKS) error = %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestJWKSKeysByKid(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	srv := newJWKSServer(t)
	srv.set("rsa-1", &rsaKey.PublicKey)
	srv.set("ec-1", &ecKey.PublicKey)
	srv.set("ed-1", edPub)
	var refetchErrors atomic.Int64
	v := jwksVerifier(t, srv.URL, func(error) { refetchErrors.Add(1) })

	for _, tc := range []struct {
		name string
		tok  string
		want auth.Code
	}{
		{"RS256 by kid", signKid(t, jwt.SigningMethodRS256, rsaKey, "rsa-1"), 0},
		{"ES256 by kid", signKid(t, jwt.SigningMethodES256, ecKey, "ec-1"), 0},
		{"EdDSA by kid", signKid(t, jwt.SigningMethodEdDSA, edKey, "ed-1"), 0},
		// A key verifies its own algorithm only.
		{"ES256 token naming the RSA key", signKid(t, jwt.SigningMethodES256, ecKey, "rsa-1"), auth.CodeInvalid},
		{"RS256 token naming the EC key", signKid(t, jwt.SigningMethodRS256, rsaKey, "ec-1"), auth.CodeInvalid},
		// No secret: HS256 is not accepted, even "signed" with a JWKS key's bytes.
		{"HS256 naming a kid", signKid(t, jwt.SigningMethodHS256, []byte(jwk("rsa-1", &rsaKey.PublicKey)["n"]), "rsa-1"), auth.CodeInvalid},
		{"no kid", sign(t, jwt.SigningMethodRS256, rsaKey, claims()), auth.CodeInvalid},
		{"unknown kid", signKid(t, jwt.SigningMethodRS256, rsaKey, "nope"), auth.CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.tok)
			if got := codeOf(err); got != tc.want || (tc.want == 0 && (err != nil || id.Subject != "user-42")) {
				t.Fatalf("Verify = %v, %v; want code %d", id, err, tc.want)
			}
		})
	}

	// Rotation: a new key is found by refetching on its unknown kid (at
	// most once per interval, however many tokens name it); a removed key
	// stops working after the periodic refetch.
	rsa2, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv.set("rsa-2", &rsa2.PublicKey)
	time.Sleep(450 * time.Millisecond) // past the unknown-kid interval
	before := srv.fetches.Load()
	tok2 := signKid(t, jwt.SigningMethodRS256, rsa2, "rsa-2")
	if _, err := v.Verify(tok2); err != nil {
		t.Fatalf("Verify(token of a key added since) = %v; want it found by a refetch", err)
	}
	unknown := signKid(t, jwt.SigningMethodRS256, rsa2, "never")
	for range 50 {
		if _, err := v.Verify(unknown); codeOf(err) != auth.CodeInvalid {
			t.Fatalf("Verify(unknown kid) = %v; want 4002", err)
		}
	}
	if n := srv.fetches.Load() - before; n > 3 {
		t.Errorf("%d fetches for one new kid and 50 tokens naming an unknown one; want the unknown kid refetch rate-limited", n)
	}
	rsa1Tok := signKid(t, jwt.SigningMethodRS256, rsaKey, "rsa-1")
	srv.set("rsa-1", nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := v.Verify(rsa1Tok); codeOf(err) == auth.CodeInvalid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a key removed from the set still verifies after 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An outage keeps the last good set.
	srv.fail(true)
	time.Sleep(time.Second)
	if _, err := v.Verify(signKid(t, jwt.SigningMethodES256, ecKey, "ec-1")); err != nil {
		t.Fatalf("Verify during a JWKS outage = %v; want the last good set kept", err)
	}
	if refetchErrors.Load() == 0 {
		t.Errorf("OnJWKSError was not called during the outage")
	}
}

func TestJWKSUnreachableAtStart(t *testing.T) {
	srv := newJWKSServer(t)
	srv.fail(true)
	url := srv.URL + "/keys?secret=do-not-print"
	start := time.Now()
	_, err := auth.NewVerifier(auth.Config{JWKSURL: url})
	if err == nil {
		t.Fatal("NewVerifier with an unreachable JWKS succeeded; want an error")
	}
	if strings.Contains(err.Error(), "do-not-print") {
		t.Errorf("error %q quotes the URL", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("NewVerifier took %v to fail; want within 10 s", d)
	}
}

// TestJWKSBesideSecret: the secret still verifies HS256 tokens beside a JWKS.
func TestJWKSBesideSecret(t *testing.T) {
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	srv := newJWKSServer(t)
	srv.set("ed-1", edPub)
	v, err := auth.NewVerifier(auth.Config{Secret: testSecret, JWKSURL: srv.URL, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Verify(hs(t, claims())); err != nil {
		t.Errorf("HS256 beside a JWKS: %v", err)
	}
	if _, err := v.Verify(signKid(t, jwt.SigningMethodEdDSA, edKey, "ed-1")); err != nil {
		t.Errorf("EdDSA by kid beside a secret: %v", err)
	}
}
