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
		DrainSpread:       cfg.DrainSpread,
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
	go srv.Run(context.Background()) // until srv.Shutdown

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = srv.Shutdown(context.Background()) // no stream yet: returns at once
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
	var serveFailed error
	select {
	case err := <-serveErr:
		serveFailed = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Info("shutting down")
	}

	// The shutdown order (docs/protocol.md, Shutdown), within
	// FOOTFALL_SHUTDOWN_TIMEOUT: the api server stops admitting, tells its
	// streams to go spread over FOOTFALL_DRAIN_SPREAD, waits for them and
	// stops its own work; then the HTTP server finishes the requests in
	// flight; then (deferred) the webhook engine stops and the bus closes.
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		log.Warn("shutdown: streams still open at the timeout were cut", "err", err)
	}
	if serveFailed != nil {
		return serveFailed
	}
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("shutdown", "err", err)
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
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
