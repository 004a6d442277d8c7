// Command footfall is the realtime gateway: live visitor counts and
// moderator dashboards for community sites over WebSocket, on an embedded
// bus or on Valkey.
//
//	footfall --dev                 # try it: random secret and API key
//	footfall                       # production: configured by FOOTFALL_* variables
//	footfall token --sub user-42 --community ID=member --ttl 1h
package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/footfall/footfall/api"
	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/footfall/footfall/streams/memory"
	"github.com/footfall/footfall/streams/valkey"
	"github.com/footfall/footfall/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(*configError)):
		fmt.Fprintln(os.Stderr, "footfall:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "footfall:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it with their own arguments,
// environment and outputs. It returns when ctx ends and the node has shut
// down.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(args[1:], getenv, stdout, stderr)
		case "healthcheck":
			return runHealthcheck(ctx, args[1:], getenv)
		}
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	// No secret reaches the logs or the returned error, whatever library
	// wrote the message (a Valkey client error, say).
	red := newRedactor(cfg.secrets)
	return red.err(runNode(ctx, cfg, stdout, red.writer(stderr)))
}

// runNode runs a node with cfg until ctx ends.
func runNode(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	var err error
	var handler slog.Handler = slog.NewJSONHandler(stderr, nil)
	if cfg.LogFormat == "text" {
		handler = slog.NewTextHandler(stderr, nil)
	}
	log := slog.New(handler)

	authCfg := auth.Config{
		Secret: []byte(cfg.JWTSecret), Audience: cfg.JWTAudience, Issuer: cfg.JWTIssuer,
		MaxTokenBytes: cfg.MaxTokenBytes, MaxCommunities: cfg.MaxTokenComms,
		JWKSURL: cfg.JWTJWKSURL,
		OnJWKSError: func(err error) {
			log.Warn("JWKS refetch failed; keeping the last good key set", "err", redactJWKSError(err, cfg.JWTJWKSURL))
		},
	}
	if cfg.JWTPublicKey != "" {
		if authCfg.PublicKeyPEM, err = readFile("FOOTFALL_JWT_PUBLIC_KEY", cfg.JWTPublicKey); err != nil {
			return err
		}
	}
	if cfg.Dev {
		// Dev mode builds its own world: fresh credentials every start,
		// whatever the environment holds (parseConfig left them out).
		if len(cfg.DevIgnored) > 0 {
			fmt.Fprintf(stderr, "footfall dev mode: ignoring %s (dev mode uses the in-memory bus and fresh random credentials)\n", strings.Join(cfg.DevIgnored, ", "))
		}
		authCfg.Secret = []byte(randomHex(32))
		cfg.APIKey = randomHex(32)
		fmt.Fprintf(stdout, "footfall dev mode: JWT secret (HS256): %s\n", authCfg.Secret)
		fmt.Fprintf(stdout, "footfall dev mode: service API key: %s\n", cfg.APIKey)
	}
	verifier, err := auth.NewVerifier(authCfg)
	if err != nil {
		return configErrorf("JWT configuration: %v", err)
	}
	defer verifier.Close()

	bus, busName, err := openBus(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer bus.Close()
	hooks, err := startWebhooks(cfg, bus, log)
	if err != nil {
		return err
	}
	defer hooks.stop() // before the bus closes

	opts := api.Options{
		Metrics:           hooks.metrics(),
		Bus:               bus,
		Verifier:          verifier,
		Log:               log,
		APIKey:            cfg.APIKey,
		AllowedOrigins:    cfg.AllowedOrigins,
		PresenceTTL:       cfg.PresenceTTL,
		LeaveGrace:        cfg.LeaveGrace,
		PublicCommunities: cfg.PublicComms,
		GuestKey:          guestKey(authCfg.Secret, cfg.APIKey),
		AuthHookURL:       cfg.AuthHookURL,
		DashboardInterval: cfg.DashboardInterval,
		Dev:               cfg.Dev,
		Web:               web.FS(),
		Limits: api.Limits{
			ConnRatePerIP: cfg.ConnRatePerIP, MaxConnsPerIP: cfg.MaxConnsPerIP, RequestRatePerIP: cfg.RequestRatePerIP,
			MessageRate: cfg.MessageRate, MessageBurst: cfg.MessageBurst,
			MaxMessageBytes: cfg.MaxMessageBytes, MaxFrameBytes: cfg.MaxFrameBytes,
			MaxBodyBytes: int64(cfg.MaxBodyBytes), MaxBatch: cfg.MaxBatch,
			TrustedProxies: cfg.TrustedProxies,
		},
	}
	if cfg.Dev {
		opts.DevSecret, opts.DevAudience, opts.DevIssuer = authCfg.Secret, cfg.JWTAudience, cfg.JWTIssuer
		if len(opts.PublicCommunities) == 0 {
			// The demo page's "guest" choice needs a public community.
			opts.PublicCommunities = []string{"*"}
		}
	}
	if len(opts.PublicCommunities) > 0 && opts.GuestKey == nil && cfg.ValkeyURL != "" {
		log.Warn("guests: neither FOOTFALL_JWT_SECRET nor FOOTFALL_API_KEY is set, so each node signs footfall_vid cookies with a key of its own; a guest moving to another node counts again there")
	}
	srv := api.New(opts)
	defer srv.Close()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return configErrorf("FOOTFALL_ADDR: %v", err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "footfall listening on %s://%s\n", scheme, ln.Addr())
	log.Info("listening", "addr", ln.Addr().String(), "dev", cfg.Dev, "bus", busName)

	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// An idle keep-alive connection is closed after this (hijacked
		// streams are not idle connections: they have their own keepalive).
		IdleTimeout: cfg.IdleTimeout,
		ErrorLog:    slog.NewLogLogger(handler, slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- hs.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- hs.Serve(ln)
		}
	}()
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		srv.Run(runCtx)
	}()
	defer func() {
		stopRun()
		<-runDone
	}()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Shutdown order (STYLE): stop accepting, tell streams to go, drain,
	// close the bus (deferred).
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Streams are told to go spread over DrainSpread (new ones are refused
	// meanwhile), so that the other nodes take this one's clients over
	// time, not all in one second.
	srv.DrainOver(shutCtx, cfg.DrainSpread)
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	for srv.OpenClients() > 0 && shutCtx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	<-serveErr
	log.Info("stopped")
	return nil
}

// valkeyStartTimeout bounds the wait for Valkey at start: an unreachable
// server is a configuration error reported within it (README, configuration).
const valkeyStartTimeout = 8 * time.Second

// openBus returns the embedded bus, or the Valkey bus when
// FOOTFALL_VALKEY_URL is set. An unreachable Valkey is a configuration
// error (exit 2, one line), reported within valkeyStartTimeout.
func openBus(ctx context.Context, cfg config, log *slog.Logger) (streams.Bus, string, error) {
	if cfg.ValkeyURL == "" {
		var outbox *memory.Outbox
		if cfg.Webhook.URL != "" {
			outbox = &memory.Outbox{}
		}
		return memory.New(memory.Options{Location: cfg.Timezone, Webhooks: outbox}), "memory", nil
	}
	vctx, cancel := context.WithTimeout(ctx, valkeyStartTimeout)
	defer cancel()
	bus, err := valkey.New(vctx, valkey.Options{
		URL:         cfg.ValkeyURL,
		NodeID:      nodeID(),
		PresenceTTL: cfg.PresenceTTL,
		Location:    cfg.Timezone,
		Log:         log.With("component", "valkey"),
		Webhooks:    cfg.Webhook.URL != "",
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", configErrorf("FOOTFALL_VALKEY_URL: cannot use Valkey: %v", err)
	}
	return bus, "valkey", nil
}

// nodeID names this node in Valkey (CLIENT LIST, lease keys): the host
// name, for the operator, and a random part, so that two processes on one
// host never share an id.
func nodeID() string {
	host, _ := os.Hostname()
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return -1
	}, host)
	if len(clean) > 40 {
		clean = clean[:40]
	}
	if clean == "" {
		clean = "node"
	}
	return clean + "-" + randomHex(4)
}

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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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

// guestKey derives the key that signs guests' footfall_vid cookies from
// the secrets every node of a cluster shares (the HS256 secret, the API
// key), so that a cookie one node issued is valid on all. Nil when neither
// is set: the server then draws a key of its own.
func guestKey(secret []byte, apiKey string) []byte {
	if len(secret) == 0 && apiKey == "" {
		return nil
	}
	m := hmac.New(sha256.New, []byte("footfall guest cookie key v1"))
	m.Write(secret)
	m.Write([]byte{0})
	m.Write([]byte(apiKey))
	return m.Sum(nil)
}

// redactJWKSError removes the JWKS URL (which may carry a secret) from the
// text of a refetch error.
func redactJWKSError(err error, url string) string {
	msg := err.Error()
	if url != "" {
		msg = strings.ReplaceAll(msg, url, "FOOTFALL_JWT_JWKS_URL")
	}
	return msg
}
