package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkRESTPoll measures footfall's own cost of an authenticated count
// poll (GET .../visitors/count with a Bearer token, answered from node
// state) beside /healthz, through the whole middleware chain and access
// log but without a socket: what the poll target's ratio depends on.
func BenchmarkRESTPoll(b *testing.B) {
	g := newGateway(b, nil)
	h := g.srv.Handler()
	tok := member(b, "poller")
	for _, bc := range []struct{ name, path, auth string }{
		{"healthz", "/healthz", ""},
		{"count", "/api/v1/communities/" + community1 + "/visitors/count", "Bearer " + tok},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, bc.path, nil)
			if bc.auth != "" {
				req.Header.Set("Authorization", bc.auth)
			}
			b.ReportAllocs()
			for range b.N {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%s = %d %s", bc.path, w.Code, w.Body)
				}
			}
		})
	}
}
