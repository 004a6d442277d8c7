package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// TestJWKSOnly: footfall starts with only a JWKS URL and accepts tokens
// signed by a key of the set; an unreachable JWKS at start is exit 2
// within 10 s, without the URL in the message.
func TestJWKSOnly(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	var down atomic.Bool
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": base64.RawURLEncoding.EncodeToString(pub),
		}}})
	}))
	defer jwks.Close()

	base, _ := startMain(t, nil, map[string]string{"FOOTFALL_JWT_JWKS_URL": jwks.URL})
	const community = "123e4567-e89b-12d3-a456-426614174000"
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"sub": "jwks-user", "exp": time.Now().Add(time.Hour).Unix(), "communities": map[string]string{community: "member"},
	})
	tok.Header["kid"] = "k1"
	signed, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, err := (&websocket.Dialer{Subprotocols: []string{"bearer", signed}}).Dial("ws"+strings.TrimPrefix(base, "http")+"/ws/communities/"+community+"/visitors/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var first map[string]any
	if err := conn.ReadJSON(&first); err != nil || first["type"] != "visitor_count" {
		t.Fatalf("first message with a JWKS-signed token = %v, %v; want visitor_count", first, err)
	}

	down.Store(true)
	var out, errOut bytes.Buffer
	start := time.Now()
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0"}, env(map[string]string{"FOOTFALL_JWT_JWKS_URL": jwks.URL + "/?key=hidden"}), &out, &errOut)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("run with an unreachable JWKS = %v; want a configuration error (exit 2)", err)
	}
	if strings.Contains(err.Error(), "hidden") || strings.Contains(errOut.String(), "hidden") {
		t.Errorf("the JWKS URL appears in the output: %q / %q", err, errOut.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failed after %v; want within 10 s", d)
	}
}
