package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// FuzzVerifyClaims verifies tokens whose header and claims are arbitrary
// JSON but whose HS256 signature is right (or, with forge set, made with
// another secret), so that the fuzzer explores everything after the
// signature check: Verify never panics, refuses every forgery, and what it
// accepts is what the token says (an HS256 header, the token's own sub, an
// exp after now, lower-case community ids with valid roles, no admin or
// dashboard for an anonymous visitor). Verifying the same token again (from
// the cache) gives the same outcome.
func FuzzVerifyClaims(f *testing.F) {
	exp := now.Add(time.Hour).Unix()
	hs256 := `{"alg":"HS256","typ":"JWT"}`
	for _, s := range [][2]string{
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"communities":{"` + community + `":"member"}}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"communities":{"` + strings.ToUpper(community) + `":"moderator","` + community + `":"member"}}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"role":"admin","anon":true}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"role":"admin"}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(now.Add(-time.Second).Unix()) + `}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(now.Unix()) + `}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"nbf":` + itoa(now.Add(time.Second).Unix()) + `}`},
		{hs256, `{"sub":"user-42","exp":1e300}`}, {hs256, `{"sub":"user-42","exp":-1e300}`}, {hs256, `{"sub":"user-42","exp":"soon"}`},
		{hs256, `{"sub":"user-42","exp":9223372036854775807}`}, {hs256, `{"sub":"user-42","exp":1.5e9}`},
		{hs256, `{"sub":"","exp":` + itoa(exp) + `}`}, {hs256, `{"sub":42,"exp":` + itoa(exp) + `}`}, {hs256, `{"exp":` + itoa(exp) + `}`},
		{hs256, `{"sub":"a","sub":"b","exp":` + itoa(exp) + `}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"communities":["` + community + `"]}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"communities":{"x":"owner"}}`},
		{hs256, `{"sub":"user-42","exp":` + itoa(exp) + `,"communities":null,"aud":["a",5],"iss":7}`},
		{`{"alg":"none"}`, `{"sub":"user-42","exp":` + itoa(exp) + `}`},
		{`{"alg":"HS512"}`, `{"sub":"user-42","exp":` + itoa(exp) + `}`},
		{`{"alg":"HS256","kid":"k1","crit":["exp"]}`, `{"sub":"user-42","exp":` + itoa(exp) + `}`},
		{`{"typ":"JWT"}`, `{}`}, {`[]`, `[]`}, {``, ``}, {`null`, `null`}, {hs256, `{"sub":"\ud800","exp":` + itoa(exp) + `}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), false)
	}
	f.Add([]byte(hs256), []byte(`{"sub":"user-42","exp":`+itoa(exp)+`}`), true)

	v := newVerifier(f, auth.Config{Secret: testSecret})
	otherSecret := []byte("another-secret-0123456789abcdef0")
	f.Fuzz(func(t *testing.T, header, payload []byte, forge bool) {
		secret := testSecret
		if forge {
			secret = otherSecret
		}
		signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signed))
		token := signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

		id, err := v.Verify(token)
		code := codeOf(err)
		switch code {
		case 0:
			if id == nil {
				t.Fatalf("Verify(%s . %s) = nil, nil; want an identity", header, payload)
			}
		case auth.CodeExpired:
			if id == nil || now.Before(id.ExpiresAt) {
				t.Fatalf("Verify(%s . %s) = %+v, expired; want the identity of a token whose exp is not after now", header, payload, id)
			}
		case auth.CodeInvalid:
			if id != nil {
				t.Fatalf("Verify(%s . %s) = %+v, %v; want no identity", header, payload, id, err)
			}
		default:
			t.Fatalf("Verify(%s . %s) error = %v; want nil, 4002 or 4004", header, payload, err)
		}
		if forge && code != auth.CodeInvalid {
			t.Fatalf("Verify(%s . %s) signed with another secret = %+v, %v; want 4002", header, payload, id, err)
		}
		if id != nil {
			checkVerifiedClaims(t, header, payload, id, code)
		}

		again, err2 := v.Verify(token)
		if codeOf(err2) != code || (again == nil) != (id == nil) ||
			(id != nil && (again.Subject != id.Subject || !again.ExpiresAt.Equal(id.ExpiresAt) || again.Admin != id.Admin || again.Anonymous != id.Anonymous)) {
			t.Fatalf("Verify(%s . %s) twice = %+v, %v then %+v, %v; want the same outcome", header, payload, id, err, again, err2)
		}
	})
}

// checkVerifiedClaims checks an identity against the token it came from.
func checkVerifiedClaims(t *testing.T, header, payload []byte, id *auth.Identity, code auth.Code) {
	t.Helper()
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(header, &h) != nil || h.Alg != "HS256" {
		t.Fatalf("Verify accepted a token whose header %s is not HS256", header)
	}
	var c struct {
		Sub  any  `json:"sub"`
		Anon bool `json:"anon"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatalf("Verify accepted claims %s that are not a JSON object: %v", payload, err)
	}
	if sub, ok := c.Sub.(string); !ok || sub == "" || sub != id.Subject {
		t.Fatalf("Verify(%s) subject = %q; want the token's non-empty sub %v", payload, id.Subject, c.Sub)
	}
	if code == 0 && !now.Before(id.ExpiresAt) {
		t.Fatalf("Verify(%s) accepted a token expiring at %v, not after now %v", payload, id.ExpiresAt, now)
	}
	if id.Anonymous != c.Anon {
		t.Fatalf("Verify(%s) anonymous = %v; want the anon claim %v", payload, id.Anonymous, c.Anon)
	}
	if id.Anonymous && (id.Admin || id.Allows(community, streams.StreamDashboard)) {
		t.Fatalf("Verify(%s) = %+v: an anonymous visitor may never be admin nor open a dashboard", payload, id)
	}
	for cid, role := range id.Communities {
		if cid != strings.ToLower(cid) || !role.Valid() {
			t.Fatalf("Verify(%s) communities hold %q: %q; want lower-case ids and valid roles", payload, cid, role)
		}
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
