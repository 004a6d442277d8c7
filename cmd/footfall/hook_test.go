package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestAuthHookSetting: FOOTFALL_AUTH_HOOK_URL makes the whole program ask
// the platform about a request with its cookies, with the API key.
func TestAuthHookSetting(t *testing.T) {
	const key = "hook-setting-api-key-0123456789abcdef"
	var calls atomic.Int64
	var authz atomic.Value
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		authz.Store(r.Header.Get("Authorization"))
		_, _ = io.Copy(io.Discard, r.Body)
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": "42", "role": "member", "ttl_seconds": 60})
	}))
	defer hook.Close()
	base, _ := startMain(t, nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret, "FOOTFALL_API_KEY": key, "FOOTFALL_AUTH_HOOK_URL": hook.URL})
	req, _ := http.NewRequest("GET", base+"/api/v1/communities/123e4567-e89b-12d3-a456-426614174000/visitors/count", nil)
	req.Header.Set("Cookie", "sessionid=django-session")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body["count"] != 1.0 {
		t.Fatalf("count poll with the platform's cookie = %d %v; want 200 with the hook's visitor counted", resp.StatusCode, body)
	}
	if calls.Load() != 1 || authz.Load() != "Bearer "+key {
		t.Fatalf("hook calls = %d, Authorization %v; want 1 call with the API key", calls.Load(), authz.Load())
	}
}
