package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// TestAnonymousTokens: a token with "anon": true is the anonymous visitor
// named by its sub; it may open the visitors stream of its communities
// (any role) and never a dashboard, role "admin" included.
func TestAnonymousTokens(t *testing.T) {
	v := hsVerifier(t)
	other := "aaaaaaaa-0000-0000-0000-000000000000"
	tests := []struct {
		name      string
		claims    map[string]any
		stream    streams.Stream
		community string
		want      auth.Code // 0: allowed
	}{
		{"member visitors", map[string]any{"anon": true}, streams.StreamVisitors, community, 0},
		{"moderator role visitors", map[string]any{"anon": true, "communities": map[string]any{community: "moderator"}}, streams.StreamVisitors, community, 0},
		{"member dashboard", map[string]any{"anon": true}, streams.StreamDashboard, community, auth.CodeForbidden},
		{"admin role in community dashboard", map[string]any{"anon": true, "communities": map[string]any{community: "admin"}}, streams.StreamDashboard, community, auth.CodeForbidden},
		{"site admin dashboard", map[string]any{"anon": true, "role": "admin"}, streams.StreamDashboard, community, auth.CodeForbidden},
		{"site admin other community", map[string]any{"anon": true, "role": "admin"}, streams.StreamVisitors, other, auth.CodeForbidden},
		{"not in communities", map[string]any{"anon": true}, streams.StreamVisitors, other, auth.CodeForbidden},
		{"anon false is a user", map[string]any{"anon": false, "role": "admin"}, streams.StreamDashboard, other, 0},
		{"anon not a bool", map[string]any{"anon": "yes"}, streams.StreamVisitors, community, auth.CodeInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := claims()
			for k, val := range tc.claims {
				c = with(c, k, val)
			}
			cred := auth.Credential{Source: auth.SourceHeader, Token: hs(t, c)}
			id, err := v.Authorize(context.Background(), cred, nil, tc.community, tc.stream)
			if tc.want == 0 {
				if err != nil {
					t.Fatalf("Authorize() error = %v; want allowed", err)
				}
				return
			}
			var ae *auth.Error
			if !errors.As(err, &ae) || ae.Code != tc.want {
				t.Fatalf("Authorize() = %v, %v; want code %d", id, err, tc.want)
			}
		})
	}

	id, err := v.Verify(hs(t, with(claims(), "anon", true, "role", "admin")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := id.Visitor(), (streams.Visitor{ID: "user-42", Authenticated: false}); got != want {
		t.Errorf("anonymous Visitor() = %+v; want %+v", got, want)
	}
	if id.Admin {
		t.Errorf("anonymous token with role admin: Admin = true; want false")
	}
}

// TestMintAnonymous: Mint's Anon claim round-trips through Verify.
func TestMintAnonymous(t *testing.T) {
	v := hsVerifier(t)
	tok, _, err := auth.Mint(testSecret, auth.Claims{
		Subject: "anon-7", Communities: map[string]auth.Role{community: auth.RoleMember}, TTL: time.Hour, Anon: true,
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify(minted anon) error: %v", err)
	}
	if !id.Anonymous || id.Visitor().Authenticated {
		t.Errorf("Verify(minted anon) = %+v; want an anonymous visitor", id)
	}
}
