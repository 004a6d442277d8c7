package auth_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/golang-jwt/jwt/v5"
)

func TestVerify(t *testing.T) {
	manyCommunities := func(n int) map[string]any {
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprintf("%08x-0000-0000-0000-000000000000", i)] = "member"
		}
		return m
	}
	expired := with(claims(), "exp", now.Unix())

	tests := []struct {
		name  string
		cfg   auth.Config // Secret defaults to testSecret
		token string
		want  auth.Code
		check func(t *testing.T, id *auth.Identity)
	}{
		{name: "valid", token: hs(t, claims()), check: func(t *testing.T, id *auth.Identity) {
			if id.Subject != "user-42" || id.Admin || id.SessionID != "" {
				t.Errorf("Verify() = %+v; want subject user-42, not admin, no session", id)
			}
			if !id.ExpiresAt.Equal(now.Add(time.Hour)) {
				t.Errorf("Verify().ExpiresAt = %v; want %v", id.ExpiresAt, now.Add(time.Hour))
			}
			if got := id.Communities[community]; got != auth.RoleMember {
				t.Errorf("Verify().Communities[%s] = %q; want member", community, got)
			}
		}},
		{name: "site admin", token: hs(t, with(claims(), "role", "admin")), check: func(t *testing.T, id *auth.Identity) {
			if !id.Admin {
				t.Errorf("Verify().Admin = false; want true")
			}
		}},
		{name: "other site role is not admin", token: hs(t, with(claims(), "role", "staff")), check: func(t *testing.T, id *auth.Identity) {
			if id.Admin {
				t.Errorf("Verify().Admin = true; want false")
			}
		}},
		{name: "role not a string", token: hs(t, with(claims(), "role", true)), want: auth.CodeInvalid},

		// Format, alg and signature.
		{name: "empty", token: "", want: auth.CodeInvalid},
		{name: "one segment", token: "abc", want: auth.CodeInvalid},
		{name: "garbage segments", token: "a.b.c", want: auth.CodeInvalid},
		{name: "empty segments", token: "..", want: auth.CodeInvalid},
		{name: "four segments", token: hs(t, claims()) + ".x", want: auth.CodeInvalid},
		{name: "alg none", token: unsigned(t, map[string]any{"alg": "none", "typ": "JWT"}, claims()), want: auth.CodeInvalid},
		{name: "alg None", token: unsigned(t, map[string]any{"alg": "None"}, claims()), want: auth.CodeInvalid},
		{name: "alg none signed by the library", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims()), want: auth.CodeInvalid},
		{name: "no alg", token: unsigned(t, map[string]any{"typ": "JWT"}, claims()), want: auth.CodeInvalid},
		{name: "HS384 with the secret", token: sign(t, jwt.SigningMethodHS384, testSecret, claims()), want: auth.CodeInvalid},
		{name: "HS512 with the secret", token: sign(t, jwt.SigningMethodHS512, testSecret, claims()), want: auth.CodeInvalid},
		{name: "bad signature", token: sign(t, jwt.SigningMethodHS256, []byte("another secret"), claims()), want: auth.CodeInvalid},
		{name: "bad signature and expired is invalid, not expired", token: sign(t, jwt.SigningMethodHS256, []byte("another secret"), expired), want: auth.CodeInvalid},
		{name: "tampered payload", token: tamper(t, hs(t, claims()), with(claims(), "role", "admin")), want: auth.CodeInvalid},
		{name: "signature stripped", token: strings.Join(strings.Split(hs(t, claims()), ".")[:2], ".") + ".", want: auth.CodeInvalid},

		// Size.
		{name: "oversized", token: hs(t, with(claims(), "pad", strings.Repeat("x", 8192))), want: auth.CodeInvalid},
		{name: "oversized under a larger limit", cfg: auth.Config{MaxTokenBytes: 1 << 20}, token: hs(t, with(claims(), "pad", strings.Repeat("x", 8192)))},

		// Registered claims.
		{name: "missing exp", token: hs(t, with(claims(), "exp", nil)), want: auth.CodeInvalid},
		{name: "exp not a number", token: hs(t, with(claims(), "exp", "tomorrow")), want: auth.CodeInvalid},
		{name: "missing sub", token: hs(t, with(claims(), "sub", nil)), want: auth.CodeInvalid},
		{name: "empty sub", token: hs(t, with(claims(), "sub", "")), want: auth.CodeInvalid},
		{name: "sub not a string", token: hs(t, with(claims(), "sub", 42)), want: auth.CodeInvalid},
		{name: "nbf in the future", token: hs(t, with(claims(), "nbf", now.Unix()+1)), want: auth.CodeInvalid},
		{name: "nbf now", token: hs(t, with(claims(), "nbf", now.Unix()))},
		{name: "nbf past", token: hs(t, with(claims(), "nbf", now.Unix()-60))},
		{name: "aud and iss ignored when not configured", token: hs(t, with(claims(), "aud", "elsewhere", "iss", "someone"))},

		// Expiry: no leeway.
		{name: "expires now", token: hs(t, expired), want: auth.CodeExpired, check: func(t *testing.T, id *auth.Identity) {
			if id == nil || id.Subject != "user-42" || !id.ExpiresAt.Equal(now) {
				t.Errorf("Verify(expired) identity = %+v; want user-42 expiring %v", id, now)
			}
		}},
		{name: "expired long ago", token: hs(t, with(claims(), "exp", now.Add(-48*time.Hour).Unix())), want: auth.CodeExpired},
		{name: "expires in a second", token: hs(t, with(claims(), "exp", now.Unix()+1))},
		{name: "expired and no sub is invalid", token: hs(t, with(expired, "sub", nil)), want: auth.CodeInvalid},
		{name: "expired and nbf in the future is invalid", token: hs(t, with(expired, "nbf", now.Unix()+1)), want: auth.CodeInvalid},
		{name: "expired and bad communities is invalid", token: hs(t, with(expired, "communities", []any{community})), want: auth.CodeInvalid},

		// The communities claim.
		{name: "communities absent", token: hs(t, with(claims(), "communities", nil)), check: noCommunities},
		{name: "communities null", token: rawClaims(t, fmt.Sprintf(`{"sub":"u","exp":%d,"communities":null}`, now.Unix()+60)), check: noCommunities},
		{name: "communities empty", token: hs(t, with(claims(), "communities", map[string]any{})), check: noCommunities},
		{name: "communities an array", token: hs(t, with(claims(), "communities", []any{community})), want: auth.CodeInvalid},
		{name: "communities a string", token: hs(t, with(claims(), "communities", community)), want: auth.CodeInvalid},
		{name: "communities a number", token: hs(t, with(claims(), "communities", 1)), want: auth.CodeInvalid},
		{name: "community role not a string", token: hs(t, with(claims(), "communities", map[string]any{community: 1})), want: auth.CodeInvalid},
		{name: "role null", token: rawClaims(t, fmt.Sprintf(`{"sub":"u","exp":%d,"communities":{"ab":null}}`, now.Unix()+60)), want: auth.CodeInvalid},
		{name: "role nested", token: hs(t, with(claims(), "communities", map[string]any{community: map[string]any{"role": "member"}})), want: auth.CodeInvalid},
		{name: "unknown role", token: hs(t, with(claims(), "communities", map[string]any{community: "owner"})), want: auth.CodeInvalid},
		{name: "role in upper case is unknown", token: hs(t, with(claims(), "communities", map[string]any{community: "Member"})), want: auth.CodeInvalid},
		{name: "more than MaxCommunities", cfg: auth.Config{MaxCommunities: 2}, token: hs(t, with(claims(), "communities", manyCommunities(3))), want: auth.CodeInvalid},
		{name: "MaxCommunities exactly", cfg: auth.Config{MaxCommunities: 3}, token: hs(t, with(claims(), "communities", manyCommunities(3)))},
		{name: "default limit 1000 exceeded", cfg: auth.Config{MaxTokenBytes: 1 << 20}, token: hs(t, with(claims(), "communities", manyCommunities(1001))), want: auth.CodeInvalid},
		{name: "default limit 1000 reached", cfg: auth.Config{MaxTokenBytes: 1 << 20}, token: hs(t, with(claims(), "communities", manyCommunities(1000)))},
		{name: "community keys are case-insensitive", token: hs(t, with(claims(), "communities", map[string]any{strings.ToUpper(community): "moderator"})), check: func(t *testing.T, id *auth.Identity) {
			want := map[string]auth.Role{community: auth.RoleModerator}
			if !maps.Equal(id.Communities, want) {
				t.Errorf("Verify().Communities = %v; want %v", id.Communities, want)
			}
		}},
		{name: "keys differing in case: the higher role wins", token: rawClaims(t, fmt.Sprintf(`{"sub":"u","exp":%d,"communities":{"AB":"moderator","ab":"member","aB":"member"}}`, now.Unix()+60)), check: func(t *testing.T, id *auth.Identity) {
			if got := id.Communities["ab"]; got != auth.RoleModerator || len(id.Communities) != 1 {
				t.Errorf("Verify().Communities = %v; want map[ab:moderator]", id.Communities)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Secret = testSecret
			v := newVerifier(t, cfg)
			id, err := v.Verify(tt.token)
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Verify(%s) error = %v (code %d); want code %d", tt.name, err, got, tt.want)
			}
			switch {
			case tt.want == 0 && id == nil:
				t.Fatalf("Verify(%s) = nil identity; want one", tt.name)
			case tt.want == auth.CodeExpired && id == nil:
				t.Fatalf("Verify(%s) = nil identity with CodeExpired; want the identity", tt.name)
			case tt.want == auth.CodeInvalid && id != nil:
				t.Fatalf("Verify(%s) = %+v with CodeInvalid; want nil", tt.name, id)
			}
			if err != nil {
				assertNoSecret(t, err, tt.token)
			}
			if tt.check != nil {
				tt.check(t, id)
			}
		})
	}
}

func noCommunities(t *testing.T, id *auth.Identity) {
	t.Helper()
	if len(id.Communities) != 0 {
		t.Errorf("Verify().Communities = %v; want empty", id.Communities)
	}
}

// tamper replaces the payload of token with c, keeping its signature.
func tamper(t *testing.T, token string, c jwt.MapClaims) string {
	t.Helper()
	parts := strings.Split(token, ".")
	forged := strings.Split(unsigned(t, map[string]any{"alg": "HS256", "typ": "JWT"}, c), ".")
	return parts[0] + "." + forged[1] + "." + parts[2]
}

// assertNoSecret fails when err's text contains the token or any of its
// segments.
func assertNoSecret(t *testing.T, err error, token string) {
	t.Helper()
	msg := err.Error()
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("error %q contains a token segment", msg)
		}
	}
}

func TestVerifyAudienceIssuer(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: testSecret, Audience: "footfall", Issuer: "https://platform.example"})
	good := with(claims(), "aud", "footfall", "iss", "https://platform.example")
	tests := []struct {
		name string
		c    jwt.MapClaims
		want auth.Code
	}{
		{"both right", good, 0},
		{"aud in an array", with(good, "aud", []any{"other", "footfall"}), 0},
		{"wrong aud", with(good, "aud", "other"), auth.CodeInvalid},
		{"aud array without ours", with(good, "aud", []any{"a", "b"}), auth.CodeInvalid},
		{"missing aud", with(good, "aud", nil), auth.CodeInvalid},
		{"aud in other case", with(good, "aud", "Footfall"), auth.CodeInvalid},
		{"wrong iss", with(good, "iss", "https://evil.example"), auth.CodeInvalid},
		{"missing iss", with(good, "iss", nil), auth.CodeInvalid},
		{"expired with wrong aud is invalid", with(good, "aud", "other", "exp", now.Unix()), auth.CodeInvalid},
		{"expired with wrong iss is invalid", with(good, "iss", "x", "exp", now.Unix()), auth.CodeInvalid},
		{"expired, aud and iss right", with(good, "exp", now.Unix()), auth.CodeExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(hs(t, tt.c))
			if got := codeOf(err); got != tt.want {
				t.Errorf("Verify(%s) error = %v; want code %d", tt.name, err, tt.want)
			}
		})
	}
}

func TestVerifyPublicKeys(t *testing.T) {
	rsaPKCS1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)})
	otherRSA := must(rsa.GenerateKey(rand.Reader, 2048))
	otherEC := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))

	tests := []struct {
		name   string
		pem    []byte
		method jwt.SigningMethod
		key    any
		want   auth.Code
	}{
		{"RS256", pemPublic(t, rsaKey()), jwt.SigningMethodRS256, rsaKey(), 0},
		{"RS256 with a PKCS1 PEM", rsaPKCS1, jwt.SigningMethodRS256, rsaKey(), 0},
		{"RS256 by another key", pemPublic(t, rsaKey()), jwt.SigningMethodRS256, otherRSA, auth.CodeInvalid},
		{"RS384 with the RSA key", pemPublic(t, rsaKey()), jwt.SigningMethodRS384, rsaKey(), auth.CodeInvalid},
		{"PS256 with the RSA key", pemPublic(t, rsaKey()), jwt.SigningMethodPS256, rsaKey(), auth.CodeInvalid},
		{"ES256", pemPublic(t, ecKey()), jwt.SigningMethodES256, ecKey(), 0},
		{"ES256 by another key", pemPublic(t, ecKey()), jwt.SigningMethodES256, otherEC, auth.CodeInvalid},
		{"EdDSA", pemPublic(t, edKey()), jwt.SigningMethodEdDSA, edKey(), 0},
		{"RS256 against an EC key", pemPublic(t, ecKey()), jwt.SigningMethodRS256, rsaKey(), auth.CodeInvalid},
		{"ES256 against an Ed25519 key", pemPublic(t, edKey()), jwt.SigningMethodES256, ecKey(), auth.CodeInvalid},
		{"HS256 without a secret", pemPublic(t, edKey()), jwt.SigningMethodHS256, testSecret, auth.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, auth.Config{PublicKeyPEM: tt.pem})
			id, err := v.Verify(sign(t, tt.method, tt.key, claims()))
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Verify(%s) error = %v; want code %d", tt.name, err, tt.want)
			}
			if tt.want == 0 && id.Subject != "user-42" {
				t.Errorf("Verify(%s).Subject = %q; want user-42", tt.name, id.Subject)
			}
			_, err = v.Verify(sign(t, tt.method, tt.key, with(claims(), "exp", now.Unix())))
			if tt.want == 0 && codeOf(err) != auth.CodeExpired {
				t.Errorf("Verify(%s, expired) error = %v; want code 4004", tt.name, err)
			}
		})
	}
}

// TestVerifyKeyConfusion is the HS/RS confusion attack: a token HS256-signed
// with the public key's PEM bytes as the HMAC secret must not pass.
func TestVerifyKeyConfusion(t *testing.T) {
	for _, tc := range []struct {
		name string
		pem  []byte
	}{
		{"RSA", pemPublic(t, rsaKey())},
		{"EC", pemPublic(t, ecKey())},
		{"Ed25519", pemPublic(t, edKey())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := sign(t, jwt.SigningMethodHS256, tc.pem, with(claims(), "role", "admin"))

			keyOnly := newVerifier(t, auth.Config{PublicKeyPEM: tc.pem})
			if _, err := keyOnly.Verify(forged); codeOf(err) != auth.CodeInvalid {
				t.Errorf("Verify(HS256 signed with the PEM) on a key-only verifier = %v; want code 4002", err)
			}

			both := newVerifier(t, auth.Config{Secret: testSecret, PublicKeyPEM: tc.pem})
			if _, err := both.Verify(forged); codeOf(err) != auth.CodeInvalid {
				t.Errorf("Verify(HS256 signed with the PEM) on a secret+key verifier = %v; want code 4002", err)
			}
			if _, err := both.Verify(hs(t, claims())); err != nil {
				t.Errorf("Verify(HS256 with the secret) on a secret+key verifier = %v; want nil", err)
			}
		})
	}
	both := newVerifier(t, auth.Config{Secret: testSecret, PublicKeyPEM: pemPublic(t, rsaKey())})
	if _, err := both.Verify(sign(t, jwt.SigningMethodRS256, rsaKey(), claims())); err != nil {
		t.Errorf("Verify(RS256) on a secret+key verifier = %v; want nil", err)
	}
	if got, want := both.Algorithms(), []string{"HS256", "RS256"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Algorithms() = %v; want %v", got, want)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	small := must(rsa.GenerateKey(rand.Reader, 1024))
	x25519 := must(ecdh.X25519().GenerateKey(rand.Reader))
	x25519DER := must(x509.MarshalPKIXPublicKey(x25519.PublicKey()))
	privDER := must(x509.MarshalPKCS8PrivateKey(ecKey()))

	tests := []struct {
		name string
		cfg  auth.Config
	}{
		{"nothing configured", auth.Config{}},
		{"empty secret", auth.Config{Secret: []byte{}}},
		{"not PEM", auth.Config{PublicKeyPEM: []byte("ssh-ed25519 AAAA...")}},
		{"garbage in the PEM", auth.Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}},
		{"private key", auth.Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}},
		{"certificate", auth.Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})}},
		{"EC P-384", auth.Config{PublicKeyPEM: pemPublic(t, p384)}},
		{"RSA 1024", auth.Config{PublicKeyPEM: pemPublic(t, small)}},
		{"X25519", auth.Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: x25519DER})}},
		{"bad key next to a good secret", auth.Config{Secret: testSecret, PublicKeyPEM: []byte("nope")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := auth.NewVerifier(tt.cfg); err == nil {
				t.Errorf("NewVerifier(%s) = %v, nil; want an error", tt.name, v)
			}
		})
	}
}

func TestMint(t *testing.T) {
	at := now.Add(300 * time.Millisecond)
	token, exp, err := auth.Mint(testSecret, auth.Claims{
		Subject:     "user-1",
		Communities: map[string]auth.Role{strings.ToUpper(community): auth.RoleModerator},
		Admin:       true,
		TTL:         time.Hour,
		Audience:    "footfall",
		Issuer:      "footfall-dev",
	}, at)
	if err != nil {
		t.Fatalf("Mint() error: %v", err)
	}
	if want := now.Add(time.Hour + time.Second); !exp.Equal(want) {
		t.Errorf("Mint() expiresAt = %v; want %v (rounded up to a whole second)", exp, want)
	}
	v := newVerifier(t, auth.Config{Secret: testSecret, Audience: "footfall", Issuer: "footfall-dev"})
	id, err := v.Verify(token)
	if err != nil {
		t.Fatalf("Verify(Mint()) error: %v", err)
	}
	want := map[string]auth.Role{community: auth.RoleModerator}
	if id.Subject != "user-1" || !id.Admin || !id.ExpiresAt.Equal(exp) || !maps.Equal(id.Communities, want) {
		t.Errorf("Verify(Mint()) = %+v; want user-1, admin, expiring %v, %v", id, exp, want)
	}

	// A whole-second now is not rounded.
	if _, exp, _ := auth.Mint(testSecret, auth.Claims{Subject: "u", TTL: time.Minute}, now); !exp.Equal(now.Add(time.Minute)) {
		t.Errorf("Mint(now whole second).expiresAt = %v; want %v", exp, now.Add(time.Minute))
	}

	// A minted token expires like any other.
	short, _, err := auth.Mint(testSecret, auth.Claims{Subject: "u", TTL: time.Second}, now.Add(-time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hsVerifier(t).Verify(short); codeOf(err) != auth.CodeExpired {
		t.Errorf("Verify(minted, expired) error = %v; want code 4004", err)
	}

	for _, tt := range []struct {
		name   string
		secret []byte
		c      auth.Claims
	}{
		{"no secret", nil, auth.Claims{Subject: "u", TTL: time.Hour}},
		{"no subject", testSecret, auth.Claims{TTL: time.Hour}},
		{"no TTL", testSecret, auth.Claims{Subject: "u"}},
		{"negative TTL", testSecret, auth.Claims{Subject: "u", TTL: -time.Second}},
		{"unknown role", testSecret, auth.Claims{Subject: "u", TTL: time.Hour, Communities: map[string]auth.Role{"ab": "owner"}}},
	} {
		if _, _, err := auth.Mint(tt.secret, tt.c, now); err == nil {
			t.Errorf("Mint(%s) error = nil; want an error", tt.name)
		}
	}
}
