package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/footfall/footfall/api/auth"
)

// Secrets in the environment never appear in usage text, flag errors or
// error messages, and a malformed Valkey URL is not quoted with its
// password (environment values were flag defaults).
func TestSecretsNeverInOutput(t *testing.T) {
	const (
		jwtSecret = "jwt-SECRET-value-0123456789abcdef"
		apiKey    = "api-KEY-value-0123456789abcdef-xyz"
		password  = "valkey-PASSWORD-value"
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	base := map[string]string{
		"FOOTFALL_JWT_SECRET": jwtSecret, "FOOTFALL_API_KEY": apiKey,
		"FOOTFALL_VALKEY_URL": "redis://footfall:" + password + "@" + refused + "/0",
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		m[k] = v
		return m
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"--bogus-flag"}, base},
		{"help", []string{"-h"}, base},
		{"bad value", []string{"--presence-ttl", "soon"}, base},
		{"token help", []string{"token", "-h"}, base},
		{"token unknown flag", []string{"token", "--bogus-flag"}, base},
		{"unreachable valkey", nil, base},
		{"malformed valkey URL", nil, with("FOOTFALL_VALKEY_URL", "redis://footfall:"+password+"%zz@"+refused+"/0")},
		{"password without user", nil, with("FOOTFALL_VALKEY_URL", "redis://"+password+"%zz@"+refused+"/0")},
		{"credentials in cluster seeds", nil, with("FOOTFALL_VALKEY_URL", "footfall:"+password+"@"+refused+","+refused)},
		{"short secret", nil, with("FOOTFALL_JWT_SECRET", "jwt-SECRET-short")},
		{"short API key", nil, with("FOOTFALL_API_KEY", "api-KEY-short")},
	}
	secrets := []string{jwtSecret, apiKey, password, "jwt-SECRET", "api-KEY", "PASSWORD", "%zz"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, tc.args, env(tc.env), &out, &errOut)
			if err == nil {
				t.Fatalf("run(%v) = nil; want an error", tc.args)
			}
			all := out.String() + errOut.String() + err.Error()
			for _, s := range secrets {
				if strings.Contains(all, s) {
					t.Errorf("run(%v) output contains %q:\nstdout+stderr+error: %s", tc.args, s, all)
				}
			}
		})
	}
}

// The redactor keeps secrets out of log lines, raw and JSON-escaped, and
// out of error messages, without hiding the error's kind.
func TestRedactor(t *testing.T) {
	r := newRedactor([]string{"plain-secret", `quo"te\secret`})
	var buf bytes.Buffer
	w := r.writer(&buf)
	line, _ := json.Marshal(map[string]string{"a": "x plain-secret y", "b": `quo"te\secret`})
	if n, err := w.Write(line); err != nil || n != len(line) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(line))
	}
	if got := buf.String(); strings.Contains(got, "plain-secret") || strings.Contains(got, `te\\secret`) || strings.Count(got, "[redacted]") != 2 {
		t.Fatalf("redacted line = %s; want both secrets replaced", got)
	}
	err := r.err(configErrorf("cannot use redis://u:plain-secret@h"))
	if strings.Contains(err.Error(), "plain-secret") || !errors.As(err, new(*configError)) {
		t.Fatalf("redacted error = %q (configError %v); want no secret, still a configError", err, errors.As(err, new(*configError)))
	}
}

// An HS256 secret or API key under 32 bytes stops footfall at start
// outside --dev; --dev ignores them.
func TestSecretMinimumLength(t *testing.T) {
	long := strings.Repeat("k", 32)
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" = accepted
	}{
		{"31-byte secret", nil, map[string]string{"FOOTFALL_JWT_SECRET": long[:31]}, "FOOTFALL_JWT_SECRET"},
		{"32-byte secret", nil, map[string]string{"FOOTFALL_JWT_SECRET": long}, ""},
		{"31-byte secret flag", []string{"--jwt-secret", long[:31]}, nil, "FOOTFALL_JWT_SECRET"},
		{"31-byte API key", nil, map[string]string{"FOOTFALL_JWT_SECRET": long, "FOOTFALL_API_KEY": long[:31]}, "FOOTFALL_API_KEY"},
		{"32-byte API key", nil, map[string]string{"FOOTFALL_JWT_SECRET": long, "FOOTFALL_API_KEY": long}, ""},
		{"short ones under --dev", []string{"--dev"}, map[string]string{"FOOTFALL_JWT_SECRET": "s", "FOOTFALL_API_KEY": "k"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, env(tc.env), &bytes.Buffer{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseConfig(%v) = %v; want nil", tc.args, err)
				}
				return
			}
			var ce *configError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "32 bytes") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("parseConfig(%v) = %v; want one line naming %s and 32 bytes", tc.args, err, tc.wantErr)
			}
			if strings.Contains(err.Error(), long[:31]) {
				t.Fatalf("parseConfig(%v) = %v; the error shows the value", tc.args, err)
			}
		})
	}
	// The whole program refuses to start with it: exit code 2.
	code, stderr, _ := runChild(t, map[string]string{"FOOTFALL_JWT_SECRET": "short"})
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "FOOTFALL_JWT_SECRET") {
		t.Fatalf("footfall with a 5-byte secret: exit %d, stderr %q; want 2 and one line naming FOOTFALL_JWT_SECRET", code, stderr)
	}
}

// --dev builds its own world: with production credentials, a production
// Valkey and a public key in the environment, it starts on the in-memory
// bus with fresh credentials, and says once which variables it ignores.
func TestDevModeIgnoresProductionSettings(t *testing.T) {
	const prodSecret, prodKey = "prod-jwt-secret-0123456789abcdef", "prod-api-key-0123456789abcdef-xyz"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	base, logs := startMain(t, []string{"--dev"}, map[string]string{
		"FOOTFALL_JWT_SECRET": prodSecret, "FOOTFALL_API_KEY": prodKey,
		"FOOTFALL_VALKEY_URL":     "redis://:prod-password@" + refused,
		"FOOTFALL_JWT_PUBLIC_KEY": "/nonexistent/prod.pem",
	})
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), `"bus":`) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), `"bus":"memory"`) {
		t.Errorf("dev node logs %s; want the memory bus", logs.String())
	}
	if n := strings.Count(logs.String(), "ignoring"); n != 1 {
		t.Errorf("logs say %d times that they ignore something; want once: %s", n, logs.String())
	}
	for _, v := range []string{"FOOTFALL_JWT_SECRET", "FOOTFALL_API_KEY", "FOOTFALL_VALKEY_URL", "FOOTFALL_JWT_PUBLIC_KEY"} {
		if !strings.Contains(logs.String(), v) {
			t.Errorf("the dev-mode notice does not name %s: %s", v, logs.String())
		}
	}
	for _, v := range []string{prodSecret, prodKey, "prod-password"} {
		if strings.Contains(logs.String(), v) {
			t.Errorf("dev node logs contain %q", v)
		}
	}
	resp, err := http.Get(base + "/dev/info")
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		APIKey string `json:"api_key"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info.APIKey == "" || info.APIKey == prodKey {
		t.Errorf("/dev/info api_key = %q; want a fresh key, not the production one", info.APIKey)
	}
	// A token signed with the production secret is not accepted.
	const community = "123e4567-e89b-12d3-a456-426614174000"
	tok, _, err := auth.Mint([]byte(prodSecret), auth.Claims{Subject: "u", TTL: time.Hour,
		Communities: map[string]auth.Role{community: auth.RoleMember}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/communities/"+community+"/visitors/count", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a production-signed token on a dev node = %d; want 401", resp.StatusCode)
	}
}

// --dev listens on this machine only unless an address is given.
func TestDevModeAddress(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--dev"}, nil, "127.0.0.1:8080"},
		{[]string{"--dev"}, map[string]string{"FOOTFALL_ADDR": ":9090"}, ":9090"},
		{[]string{"--dev", "--addr", "0.0.0.0:7070"}, nil, "0.0.0.0:7070"},
		{nil, map[string]string{"FOOTFALL_JWT_SECRET": testSecret}, ":8080"},
	}
	for _, tc := range cases {
		c, err := parseConfig(tc.args, env(tc.env), &bytes.Buffer{})
		if err != nil || c.Addr != tc.want {
			t.Errorf("parseConfig(%v, %v).Addr = %q, %v; want %q", tc.args, tc.env, c.Addr, err, tc.want)
		}
	}
}
