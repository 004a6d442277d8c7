package auth

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// jwksAlgs are the algorithms a JWKS key may verify (each key only its own).
var jwksAlgs = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}

// Defaults of the JWKS settings of Config.
const (
	DefaultJWKSRefresh         = 5 * time.Minute
	DefaultJWKSUnknownKIDEvery = 5 * time.Second
	jwksFetchTimeout           = 5 * time.Second
)

// startJWKS fetches cfg.JWKSURL (failing if it cannot) and starts its
// refetching, which Close stops. The JWKS client is keyfunc/jwkset: it
// keeps the last good set when a refetch fails, refetches on an unknown
// kid through a rate limiter, and replaces the whole set on success, so a
// key removed from the document stops verifying.
func (v *Verifier) startJWKS(cfg Config) error {
	refresh := cfg.JWKSRefresh
	if refresh <= 0 {
		refresh = DefaultJWKSRefresh
	}
	every := cfg.JWKSUnknownKIDEvery
	if every <= 0 {
		every = DefaultJWKSUnknownKIDEvery
	}
	client := cfg.JWKSClient
	if client == nil {
		client = &http.Client{Timeout: jwksFetchTimeout}
	}
	onErr := cfg.OnJWKSError
	ctx, cancel := context.WithCancel(context.Background())
	failFirst := false
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               jwksFetchTimeout,
		NoErrorReturnFirstHTTPReq: &failFirst,
		RefreshInterval:           refresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(every), 1),
		// Never wait for the limiter: a token with an unknown kid inside
		// the interval is refused at once (4002).
		RateLimitWaitMax: time.Nanosecond,
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				if onErr != nil {
					onErr(err)
				}
			}
		},
	})
	if err != nil {
		cancel()
		// The library's error names the URL, which may carry a secret in
		// its query string: say only what failed.
		return fmt.Errorf("auth: JWKS: cannot fetch the key set at start: %w", errNoJWKS)
	}
	v.jwks, v.stopJWKS = kf, cancel
	return nil
}

// errNoJWKS is why a Verifier could not start with its JWKS.
var errNoJWKS = fmt.Errorf("unreachable, not a JWK Set, or no usable key")

// Close stops the Verifier's background work (refetching the JWKS). It is
// safe to call more than once, and on a Verifier without a JWKS.
func (v *Verifier) Close() {
	if v.stopJWKS != nil {
		v.stopJWKS()
	}
}
