package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// runToken is `footfall token`: mint a token with the configured secret.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("footfall token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "the token's subject (user id), required")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	admin := fs.Bool("admin", false, "site admin (role: admin): allowed everywhere")
	// Environment values are read after parsing, never made flag defaults:
	// usage text would show the secret.
	secret := fs.String("jwt-secret", "", "HS256 secret (default: FOOTFALL_JWT_SECRET)")
	aud := fs.String("jwt-audience", "", "audience (default: FOOTFALL_JWT_AUDIENCE)")
	iss := fs.String("jwt-issuer", "", "issuer (default: FOOTFALL_JWT_ISSUER)")
	communities := map[string]auth.Role{}
	fs.Func("community", "ID=ROLE (member, moderator or admin); repeatable", func(v string) error {
		id, role, ok := strings.Cut(v, "=")
		if !ok {
			return fmt.Errorf("want ID=ROLE, got %q", v)
		}
		cid, valid := streams.NormalizeCommunityID(id)
		if !valid {
			return fmt.Errorf("invalid community id %q", id)
		}
		switch auth.Role(role) {
		case auth.RoleMember, auth.RoleModerator, auth.RoleAdmin:
		default:
			return fmt.Errorf("role must be member, moderator or admin, not %q", role)
		}
		communities[cid] = auth.Role(role)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return configErrorf("token: %v", err)
	}
	for p, env := range map[*string]string{secret: "FOOTFALL_JWT_SECRET", aud: "FOOTFALL_JWT_AUDIENCE", iss: "FOOTFALL_JWT_ISSUER"} {
		if *p == "" {
			*p = getenv(env)
		}
	}
	switch {
	case *sub == "":
		return configErrorf("token: --sub is required")
	case *secret == "":
		return configErrorf("token: no secret: set FOOTFALL_JWT_SECRET or --jwt-secret (tokens for a public key are minted by the platform's private key)")
	case *ttl <= 0:
		return configErrorf("token: --ttl must be positive")
	}
	token, _, err := auth.Mint([]byte(*secret), auth.Claims{
		Subject: *sub, Communities: communities, Admin: *admin, TTL: *ttl, Audience: *aud, Issuer: *iss,
	}, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}

// runHealthcheck is `footfall healthcheck`: GET /healthz of the local node
// (for the container's HEALTHCHECK, which has no curl). Exit 0 when healthy.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string) error {
	addr := getenv("FOOTFALL_ADDR")
	if len(args) > 0 {
		addr = args[0]
	}
	if addr == "" {
		addr = ":8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return configErrorf("healthcheck: bad address %q", addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	client := &http.Client{Timeout: 3 * time.Second}
	if getenv("FOOTFALL_TLS_CERT") != "" {
		scheme = "https"
		// The node's own certificate names its public host, not 127.0.0.1.
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // loopback self-check
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered %d", resp.StatusCode)
	}
	return nil
}
