package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/footfall/footfall/api/auth"
)

// req builds a WebSocket-path request. Each of auth and cookie is set when
// not nil; each protocols element is one Sec-WebSocket-Protocol line.
type req struct {
	auth      []string // Authorization lines
	protocols []string // Sec-WebSocket-Protocol lines
	query     string   // raw query, without "?"
	cookie    string   // footfall_session value; "" = no cookie
}

func (r req) build() *http.Request {
	hr := httptest.NewRequest(http.MethodGet, "/ws/communities/"+community+"/visitors/", nil)
	hr.URL.RawQuery = r.query
	for _, a := range r.auth {
		hr.Header.Add("Authorization", a)
	}
	for _, p := range r.protocols {
		hr.Header.Add("Sec-WebSocket-Protocol", p)
	}
	if r.cookie != "" {
		hr.AddCookie(&http.Cookie{Name: "theme", Value: "dark"})
		hr.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: r.cookie})
	}
	return hr
}

func TestExtract(t *testing.T) {
	tests := []struct {
		name string
		req  req
		want auth.Credential
	}{
		{"nothing", req{}, auth.Credential{}},

		// 1. Authorization header.
		{"bearer header", req{auth: []string{"Bearer tok.en.1"}},
			auth.Credential{Source: auth.SourceHeader, Token: "tok.en.1"}},
		{"scheme in lower case", req{auth: []string{"bearer tok"}},
			auth.Credential{Source: auth.SourceHeader, Token: "tok"}},
		{"scheme in upper case, extra spaces", req{auth: []string{"  BEARER    tok  "}},
			auth.Credential{Source: auth.SourceHeader, Token: "tok"}},
		{"basic scheme is malformed", req{auth: []string{"Basic dXNlcjpwYXNz"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"token scheme is malformed", req{auth: []string{"Token tok"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"bare token is malformed", req{auth: []string{"eyJhbGciOi.x.y"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"bearer without token is malformed", req{auth: []string{"Bearer"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"bearer and spaces only is malformed", req{auth: []string{"Bearer   "}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"two tokens is malformed", req{auth: []string{"Bearer a b"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"two header lines is malformed", req{auth: []string{"Bearer a", "Bearer b"}},
			auth.Credential{Source: auth.SourceHeader, Malformed: true}},
		{"empty header is absent", req{auth: []string{""}, query: "token=q"},
			auth.Credential{Source: auth.SourceQuery, Token: "q"}},
		{"blank header is absent", req{auth: []string{"   "}},
			auth.Credential{}},
		{"header wins over everything, cookie still read", req{auth: []string{"Bearer h"}, protocols: []string{"bearer, p"}, query: "token=q", cookie: "s1"},
			auth.Credential{Source: auth.SourceHeader, Token: "h", SessionID: "s1"}},
		{"malformed header wins over everything", req{auth: []string{"Basic x"}, protocols: []string{"bearer, p"}, query: "token=q", cookie: "s1"},
			auth.Credential{Source: auth.SourceHeader, Malformed: true, SessionID: "s1"}},

		// 2. Subprotocols.
		{"bearer subprotocol", req{protocols: []string{"bearer, tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "bearer"}},
		{"bearer subprotocol without spaces", req{protocols: []string{"bearer,tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "bearer"}},
		{"bearer subprotocol across header lines", req{protocols: []string{"bearer", "tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "bearer"}},
		{"among other protocols, with spaces", req{protocols: []string{" chat.v1 ,  bearer ", "  tok  , json"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "bearer"}},
		{"empty items are skipped", req{protocols: []string{"bearer,, ,tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "bearer"}},
		{"name in other case is echoed as offered", req{protocols: []string{"Bearer, tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "Bearer"}},
		{"seed form", req{protocols: []string{"Authorization, Bearer tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "Authorization"}},
		{"seed form across lines", req{protocols: []string{"Authorization", "Bearer tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "Authorization"}},
		{"seed form in lower case", req{protocols: []string{"authorization, bearer tok"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "tok", Subprotocol: "authorization"}},
		{"seed form, not bearer, is malformed", req{protocols: []string{"Authorization, Basic x"}, cookie: "s1"},
			auth.Credential{Source: auth.SourceSubprotocol, Subprotocol: "Authorization", Malformed: true, SessionID: "s1"}},
		{"first form offered wins", req{protocols: []string{"Authorization, Bearer a, bearer, b"}},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "a", Subprotocol: "Authorization"}},
		{"bearer last with nothing after is ignored", req{protocols: []string{"chat, bearer"}, query: "token=q"},
			auth.Credential{Source: auth.SourceQuery, Token: "q"}},
		{"other protocols only", req{protocols: []string{"chat, json"}},
			auth.Credential{}},
		{"subprotocol wins over query and cookie", req{protocols: []string{"bearer, p"}, query: "token=q", cookie: "s1"},
			auth.Credential{Source: auth.SourceSubprotocol, Token: "p", Subprotocol: "bearer", SessionID: "s1"}},

		// 3. Query.
		{"query token", req{query: "token=q.t.1"},
			auth.Credential{Source: auth.SourceQuery, Token: "q.t.1"}},
		{"query token escaped", req{query: "last_event_id=7&token=a%2Bb"},
			auth.Credential{Source: auth.SourceQuery, Token: "a+b"}},
		{"empty query token is absent", req{query: "token="},
			auth.Credential{}},
		{"empty query token falls to the cookie", req{query: "token=", cookie: "s1"},
			auth.Credential{Source: auth.SourceCookie, SessionID: "s1"}},
		{"first non-empty query token", req{query: "token=&token=q"},
			auth.Credential{Source: auth.SourceQuery, Token: "q"}},
		{"query wins over cookie", req{query: "token=q", cookie: "s1"},
			auth.Credential{Source: auth.SourceQuery, Token: "q", SessionID: "s1"}},

		// 4. Cookie.
		{"session cookie", req{cookie: "s1"},
			auth.Credential{Source: auth.SourceCookie, SessionID: "s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := auth.Extract(tt.req.build()); got != tt.want {
				t.Errorf("Extract(%+v) = %+v; want %+v", tt.req, got, tt.want)
			}
		})
	}
}

func TestExtractEmptyCookie(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", auth.SessionCookie+"=")
	if got := auth.Extract(r); got != (auth.Credential{}) {
		t.Errorf("Extract(empty cookie) = %+v; want none", got)
	}
}

func TestSourceString(t *testing.T) {
	for s, want := range map[auth.Source]string{
		auth.SourceNone: "none", auth.SourceHeader: "header", auth.SourceSubprotocol: "subprotocol",
		auth.SourceQuery: "query", auth.SourceCookie: "cookie", auth.Source(99): "unknown",
	} {
		if got := s.String(); got != want {
			t.Errorf("Source(%d).String() = %q; want %q", int(s), got, want)
		}
	}
}
