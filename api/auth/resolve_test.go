package auth_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/golang-jwt/jwt/v5"
)

// TestResolve covers the rows of docs/protocol.md, outcomes and the credential
// precedence of section 7, from the request to the identity.
func TestResolve(t *testing.T) {
	valid := hs(t, claims())
	expired := hs(t, with(claims(), "exp", now.Unix()))
	badSig := sign(t, jwt.SigningMethodHS256, []byte("wrong"), claims())
	badSigExpired := sign(t, jwt.SigningMethodHS256, []byte("wrong"), with(claims(), "exp", now.Unix()))
	noSub := hs(t, with(claims(), "sub", nil))
	notYet := hs(t, with(claims(), "nbf", now.Unix()+60))
	alg384 := sign(t, jwt.SigningMethodHS384, testSecret, claims())

	const (
		fromToken   = "user-42"
		fromSession = "user-7"
	)
	tests := []struct {
		name        string
		req         req
		want        auth.Code // 0: success; -1: the store's error
		subject     string
		sessionID   string
		storeCalled bool
	}{
		// Section 3, row 1: no credential.
		{name: "nothing", req: req{}, want: auth.CodeMissing},
		{name: "empty query token only", req: req{query: "token="}, want: auth.CodeMissing},
		{name: "unrelated subprotocol only", req: req{protocols: []string{"chat"}}, want: auth.CodeMissing},

		// Row 2: malformed, bad signature, wrong alg/aud/iss, unknown session.
		{name: "non-bearer header", req: req{auth: []string{"Basic dXNlcjpwYXNz"}}, want: auth.CodeInvalid},
		{name: "garbage token", req: req{auth: []string{"Bearer not-a-jwt"}}, want: auth.CodeInvalid},
		{name: "bad signature", req: req{auth: []string{"Bearer " + badSig}}, want: auth.CodeInvalid},
		{name: "wrong alg", req: req{query: "token=" + alg384}, want: auth.CodeInvalid},
		{name: "no sub", req: req{auth: []string{"Bearer " + noSub}}, want: auth.CodeInvalid},
		{name: "nbf in the future", req: req{auth: []string{"Bearer " + notYet}}, want: auth.CodeInvalid},
		{name: "seed subprotocol not bearer", req: req{protocols: []string{"Authorization, Basic x"}}, want: auth.CodeInvalid},
		{name: "unknown session", req: req{cookie: "never-existed"}, want: auth.CodeInvalid, storeCalled: true},
		{name: "session without a user", req: req{cookie: "no-user"}, want: auth.CodeInvalid, storeCalled: true},
		{name: "oversized session id", req: req{cookie: strings.Repeat("s", 300)}, want: auth.CodeInvalid},

		// Row 4: expired token and no live session, or expired session.
		{name: "expired token, no cookie", req: req{auth: []string{"Bearer " + expired}}, want: auth.CodeExpired},
		{name: "revoked session", req: req{cookie: "sess-revoked"}, want: auth.CodeExpired, storeCalled: true},
		{name: "expired session", req: req{cookie: "sess-expired"}, want: auth.CodeExpired, storeCalled: true},
		{name: "session expiring as we look", req: req{cookie: "stale"}, want: auth.CodeExpired, storeCalled: true},

		// Successes from each source.
		{name: "header token", req: req{auth: []string{"Bearer " + valid}}, subject: fromToken},
		{name: "bearer subprotocol", req: req{protocols: []string{"bearer, " + valid}}, subject: fromToken},
		{name: "seed subprotocol", req: req{protocols: []string{"Authorization, Bearer " + valid}}, subject: fromToken},
		{name: "query token", req: req{query: "token=" + url.QueryEscape(valid)}, subject: fromToken},
		{name: "live session", req: req{cookie: "live"}, subject: fromSession, sessionID: "live", storeCalled: true},

		// Section 7: the first credential found decides...
		{name: "valid token beats a live session", req: req{auth: []string{"Bearer " + valid}, cookie: "live"}, subject: fromToken},
		{name: "valid token beats a broken store", req: req{auth: []string{"Bearer " + valid}, cookie: "broken"}, subject: fromToken},
		{name: "malformed header does not fall back", req: req{auth: []string{"Basic x"}, query: "token=" + valid, cookie: "live"}, want: auth.CodeInvalid},
		{name: "malformed seed subprotocol does not fall back", req: req{protocols: []string{"Authorization, Token x"}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "bad signature does not fall back", req: req{auth: []string{"Bearer " + badSig}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "bad signature and expired does not fall back", req: req{auth: []string{"Bearer " + badSigExpired}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "no sub does not fall back", req: req{auth: []string{"Bearer " + noSub}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "nbf in the future does not fall back", req: req{auth: []string{"Bearer " + notYet}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "wrong alg does not fall back", req: req{auth: []string{"Bearer " + alg384}, cookie: "live"}, want: auth.CodeInvalid},
		{name: "header decides over the query", req: req{auth: []string{"Bearer " + badSig}, query: "token=" + valid}, want: auth.CodeInvalid},
		{name: "subprotocol decides over the query", req: req{protocols: []string{"bearer, " + badSig}, query: "token=" + valid}, want: auth.CodeInvalid},
		{name: "empty query token lets the cookie decide", req: req{query: "token=", cookie: "live"}, subject: fromSession, sessionID: "live", storeCalled: true},

		// ...except that a signed but expired token falls back to a live session.
		{name: "expired header token, live session", req: req{auth: []string{"Bearer " + expired}, cookie: "live"}, subject: fromSession, sessionID: "live", storeCalled: true},
		{name: "expired subprotocol token, live session", req: req{protocols: []string{"bearer, " + expired}, cookie: "live"}, subject: fromSession, sessionID: "live", storeCalled: true},
		{name: "expired query token, live session", req: req{query: "token=" + expired, cookie: "live"}, subject: fromSession, sessionID: "live", storeCalled: true},
		{name: "expired token, unknown session", req: req{auth: []string{"Bearer " + expired}, cookie: "never-existed"}, want: auth.CodeExpired, storeCalled: true},
		{name: "expired token, revoked session", req: req{auth: []string{"Bearer " + expired}, cookie: "sess-revoked"}, want: auth.CodeExpired, storeCalled: true},
		{name: "expired token, expired session", req: req{auth: []string{"Bearer " + expired}, cookie: "sess-expired"}, want: auth.CodeExpired, storeCalled: true},
		{name: "expired token, oversized session id", req: req{auth: []string{"Bearer " + expired}, cookie: strings.Repeat("s", 300)}, want: auth.CodeExpired},

		// Store failures are not authentication outcomes.
		{name: "broken store", req: req{cookie: "broken"}, want: -1, storeCalled: true},
		{name: "expired token, broken store", req: req{auth: []string{"Bearer " + expired}, cookie: "broken"}, want: -1, storeCalled: true},
	}
	v := hsVerifier(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			id, err := v.Resolve(context.Background(), auth.Extract(tt.req.build()), store)
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Resolve(%s) error = %v (code %d); want code %d", tt.name, err, got, tt.want)
			}
			if tt.want == -1 && !errors.Is(err, errStoreDown) {
				t.Errorf("Resolve(%s) error = %v; want the store's error %v", tt.name, err, errStoreDown)
			}
			if (store.calls > 0) != tt.storeCalled {
				t.Errorf("Resolve(%s) called the store %d times; want called = %v", tt.name, store.calls, tt.storeCalled)
			}
			if err != nil {
				if id != nil {
					t.Errorf("Resolve(%s) = %+v, %v; want a nil identity with the error", tt.name, id, err)
				}
				if strings.Contains(err.Error(), tt.req.cookie) && tt.req.cookie != "" {
					t.Errorf("Resolve(%s) error %q contains the session id", tt.name, err)
				}
				return
			}
			if id.Subject != tt.subject || id.SessionID != tt.sessionID {
				t.Errorf("Resolve(%s) = subject %q session %q; want %q, %q", tt.name, id.Subject, id.SessionID, tt.subject, tt.sessionID)
			}
		})
	}
}

func TestResolveSessionIdentity(t *testing.T) {
	v := hsVerifier(t)
	id, err := v.Resolve(context.Background(), auth.Credential{Source: auth.SourceCookie, SessionID: "live"}, newFakeStore())
	if err != nil {
		t.Fatalf("Resolve(live session) error: %v", err)
	}
	want := map[string]auth.Role{community: auth.RoleModerator} // lower-cased, unknown role "owner" dropped
	if len(id.Communities) != 1 || id.Communities[community] != want[community] {
		t.Errorf("Resolve(live session).Communities = %v; want %v", id.Communities, want)
	}
	if id.Admin || !id.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("Resolve(live session) = admin %v, expires %v; want false, %v", id.Admin, id.ExpiresAt, now.Add(time.Hour))
	}

	admin, err := v.Resolve(context.Background(), auth.Credential{Source: auth.SourceCookie, SessionID: "site-admin"}, newFakeStore())
	if err != nil || !admin.Admin || admin.Subject != "root" {
		t.Errorf("Resolve(site-admin session) = %+v, %v; want root, admin", admin, err)
	}
}

func TestResolveNilStore(t *testing.T) {
	v := hsVerifier(t)
	_, err := v.Resolve(context.Background(), auth.Credential{Source: auth.SourceCookie, SessionID: "live"}, nil)
	if got := codeOf(err); got != -1 {
		t.Errorf("Resolve(cookie, nil store) error = %v; want a non-auth error", err)
	}
	// A token needs no store.
	if _, err := v.Resolve(context.Background(), auth.Credential{Source: auth.SourceHeader, Token: hs(t, claims())}, nil); err != nil {
		t.Errorf("Resolve(token, nil store) error = %v; want nil", err)
	}
}

// TestAuthorize covers row 3 of docs/protocol.md, outcomes and its order with the
// other rows: authentication fails before authorization is asked.
func TestAuthorize(t *testing.T) {
	other := "00000000-0000-0000-0000-0000000000ff"
	tok := func(role string, extra ...any) string {
		return hs(t, with(claims(), append([]any{"communities", map[string]any{community: role}}, extra...)...))
	}
	tests := []struct {
		name      string
		cred      auth.Credential
		community string
		stream    streams.Stream
		want      auth.Code
	}{
		{"member, visitors", bearer(tok("member")), community, streams.StreamVisitors, 0},
		{"member, dashboard", bearer(tok("member")), community, streams.StreamDashboard, auth.CodeForbidden},
		{"moderator, dashboard", bearer(tok("moderator")), community, streams.StreamDashboard, 0},
		{"community admin, dashboard", bearer(tok("admin")), community, streams.StreamDashboard, 0},
		{"member of another community", bearer(tok("member")), other, streams.StreamVisitors, auth.CodeForbidden},
		{"no communities", bearer(hs(t, with(claims(), "communities", nil))), community, streams.StreamVisitors, auth.CodeForbidden},
		{"site admin, dashboard anywhere", bearer(hs(t, with(claims(), "communities", nil, "role", "admin"))), other, streams.StreamDashboard, 0},
		{"session moderator, dashboard", auth.Credential{Source: auth.SourceCookie, SessionID: "live"}, community, streams.StreamDashboard, 0},
		{"session moderator, other community", auth.Credential{Source: auth.SourceCookie, SessionID: "live"}, other, streams.StreamVisitors, auth.CodeForbidden},
		{"expired member is expired, not forbidden", bearer(tok("member", "exp", now.Unix())), other, streams.StreamDashboard, auth.CodeExpired},
		{"invalid is invalid, not forbidden", bearer("x.y.z"), other, streams.StreamDashboard, auth.CodeInvalid},
		{"nothing is missing, not forbidden", auth.Credential{}, other, streams.StreamDashboard, auth.CodeMissing},
		{"expired token falls back to a moderator session", auth.Credential{Source: auth.SourceHeader, Token: tok("member", "exp", now.Unix()), SessionID: "live"}, community, streams.StreamDashboard, 0},
	}
	v := hsVerifier(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Authorize(context.Background(), tt.cred, newFakeStore(), tt.community, tt.stream)
			if got := codeOf(err); got != tt.want {
				t.Fatalf("Authorize(%s) error = %v; want code %d", tt.name, err, tt.want)
			}
			if (err == nil) != (id != nil) {
				t.Errorf("Authorize(%s) = %v, %v; want an identity exactly when there is no error", tt.name, id, err)
			}
		})
	}
}

func bearer(token string) auth.Credential {
	return auth.Credential{Source: auth.SourceHeader, Token: token}
}

func TestAllows(t *testing.T) {
	member := &auth.Identity{Subject: "u", Communities: map[string]auth.Role{community: auth.RoleMember}}
	moderator := &auth.Identity{Subject: "u", Communities: map[string]auth.Role{community: auth.RoleModerator}}
	cadmin := &auth.Identity{Subject: "u", Communities: map[string]auth.Role{community: auth.RoleAdmin}}
	unknown := &auth.Identity{Subject: "u", Communities: map[string]auth.Role{community: "owner"}}
	site := &auth.Identity{Subject: "root", Admin: true}
	nobody := &auth.Identity{Subject: "u"}
	const other = "ff"

	tests := []struct {
		name      string
		id        *auth.Identity
		community string
		stream    streams.Stream
		want      bool
	}{
		{"member visitors", member, community, streams.StreamVisitors, true},
		{"member dashboard", member, community, streams.StreamDashboard, false},
		{"moderator visitors", moderator, community, streams.StreamVisitors, true},
		{"moderator dashboard", moderator, community, streams.StreamDashboard, true},
		{"community admin visitors", cadmin, community, streams.StreamVisitors, true},
		{"community admin dashboard", cadmin, community, streams.StreamDashboard, true},
		{"member elsewhere", member, other, streams.StreamVisitors, false},
		{"moderator elsewhere", moderator, other, streams.StreamDashboard, false},
		{"unknown role", unknown, community, streams.StreamVisitors, false},
		{"no communities", nobody, community, streams.StreamVisitors, false},
		{"site admin visitors", site, other, streams.StreamVisitors, true},
		{"site admin dashboard", site, other, streams.StreamDashboard, true},
		{"unknown stream", cadmin, community, streams.Stream("raw"), false},
		{"site admin, unknown stream", site, community, streams.Stream("raw"), false},
		{"nil identity", nil, community, streams.StreamVisitors, false},
		{"upper-case community", member, strings.ToUpper(community), streams.StreamVisitors, true},
	}
	for _, tt := range tests {
		if got := tt.id.Allows(tt.community, tt.stream); got != tt.want {
			t.Errorf("Allows(%s: %s, %s) = %v; want %v", tt.name, tt.community, tt.stream, got, tt.want)
		}
	}
}

func TestCodes(t *testing.T) {
	for c, want := range map[auth.Code]string{
		auth.CodeMissing:   "authentication_required",
		auth.CodeInvalid:   "invalid_token",
		auth.CodeForbidden: "forbidden",
		auth.CodeExpired:   "expired",
		auth.Code(1000):    "error",
	} {
		if got := c.Slug(); got != want {
			t.Errorf("Code(%d).Slug() = %q; want %q", int(c), got, want)
		}
	}
	e := &auth.Error{Code: auth.CodeExpired, Reason: "token expired"}
	if got, want := e.Error(), "expired (4004): token expired"; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	for _, r := range []auth.Role{auth.RoleMember, auth.RoleModerator, auth.RoleAdmin} {
		if !r.Valid() {
			t.Errorf("Role(%q).Valid() = false; want true", r)
		}
	}
	if auth.Role("Admin").Valid() {
		t.Errorf(`Role("Admin").Valid() = true; want false`)
	}
}

func TestIdentityVisitor(t *testing.T) {
	id := &auth.Identity{Subject: "user-42"}
	if got, want := id.Visitor(), (streams.Visitor{ID: "user-42", Authenticated: true}); got != want {
		t.Errorf("Visitor() = %+v; want %+v", got, want)
	}
}
