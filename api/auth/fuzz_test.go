package auth_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/golang-jwt/jwt/v5"
)

// FuzzExtract feeds arbitrary header, subprotocol, query and cookie strings
// through Extract, Verify, Resolve and Authorize: none may panic, and the
// credential and the outcomes must be consistent.
func FuzzExtract(f *testing.F) {
	valid := mustMint(f, time.Hour, now)
	expired := mustMint(f, time.Hour, now.Add(-2*time.Hour))
	edSigned := sign(f, jwt.SigningMethodEdDSA, edKey(), claims())
	none := unsigned(f, map[string]any{"alg": "none"}, claims())

	f.Add("Bearer "+valid, "", "", "", "")
	f.Add("bearer   "+expired, "", "", "", "live")
	f.Add("Basic dXNlcjpwYXNz", "bearer, x", "", "token=y", "live")
	f.Add("Bearer", "", "", "", "")
	f.Add("", "bearer, "+valid, "", "", "")
	f.Add("", "bearer", edSigned, "", "")
	f.Add("", " chat , Authorization", "Bearer "+expired, "", "sess-revoked")
	f.Add("", "Authorization, Basic x", "", "", "")
	f.Add("", ",,,bearer,,", ",", "token=", "broken")
	f.Add("", "", "", "token="+url.QueryEscape(expired), "live")
	f.Add("", "", "", "token=&token="+none, "")
	f.Add("", "", "", "token=%zz&token=%", "never-existed")
	f.Add("", "", "", "", "\"quoted\"")
	f.Add("", "", "", "", "a; footfall_session=b")
	f.Add("Bearer a.b.c", "", "", "", "")
	f.Add("Bearer eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjFlOTk5fQ.x", "", "", "", "")

	v := newVerifier(f, auth.Config{Secret: testSecret, PublicKeyPEM: pemPublic(f, edKey()), Audience: "", Issuer: ""})
	f.Fuzz(func(t *testing.T, authz, proto1, proto2, query, cookie string) {
		r, err := http.NewRequest(http.MethodGet, "http://footfall.test/ws/communities/"+community+"/visitors/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.URL.RawQuery = query
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		for _, p := range []string{proto1, proto2} {
			if p != "" {
				r.Header["Sec-Websocket-Protocol"] = append(r.Header["Sec-Websocket-Protocol"], p)
			}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{auth.SessionCookie + "=" + cookie}
		}

		c := auth.Extract(r)
		switch c.Source {
		case auth.SourceNone:
			if c.Token != "" || c.Malformed || c.Subprotocol != "" || c.SessionID != "" {
				t.Fatalf("Extract() = %+v; want an empty credential for SourceNone", c)
			}
		case auth.SourceHeader, auth.SourceSubprotocol, auth.SourceQuery:
			if c.Malformed == (c.Token != "") {
				t.Fatalf("Extract() = %+v; want a token exactly when not malformed", c)
			}
		case auth.SourceCookie:
			if c.Token != "" || c.Malformed || c.SessionID == "" {
				t.Fatalf("Extract() = %+v; want only a session id for SourceCookie", c)
			}
		default:
			t.Fatalf("Extract().Source = %d; want a known source", c.Source)
		}
		if (c.Subprotocol != "") != (c.Source == auth.SourceSubprotocol) {
			t.Fatalf("Extract() = %+v; want a subprotocol exactly for SourceSubprotocol", c)
		}

		for _, token := range []string{c.Token, authz, proto2, query} {
			id, err := v.Verify(token)
			switch code := codeOf(err); code {
			case 0, auth.CodeExpired:
				if id == nil {
					t.Fatalf("Verify(%q) = nil, %v; want an identity", token, err)
				}
			case auth.CodeInvalid:
				if id != nil {
					t.Fatalf("Verify(%q) = %+v, %v; want nil", token, id, err)
				}
			default:
				t.Fatalf("Verify(%q) error = %v; want nil, 4002 or 4004", token, err)
			}
		}

		store := newFakeStore()
		id, err := v.Resolve(context.Background(), c, store)
		if (id == nil) == (err == nil) {
			t.Fatalf("Resolve(%+v) = %v, %v; want exactly one of identity and error", c, id, err)
		}
		if codeOf(err) == -1 && !errors.Is(err, errStoreDown) {
			t.Fatalf("Resolve(%+v) error = %v; want an *auth.Error or the store's error", c, err)
		}
		if _, err := v.Authorize(context.Background(), c, store, community, "dashboard"); err == nil && id == nil {
			t.Fatalf("Authorize(%+v) succeeded where Resolve failed", c)
		}
	})
}

func mustMint(tb testing.TB, ttl time.Duration, at time.Time) string {
	tb.Helper()
	token, _, err := auth.Mint(testSecret, auth.Claims{
		Subject:     "user-42",
		Communities: map[string]auth.Role{community: auth.RoleModerator},
		TTL:         ttl,
	}, at)
	if err != nil {
		tb.Fatalf("Mint() error: %v", err)
	}
	return token
}
