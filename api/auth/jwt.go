package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// Defaults of Config.
const (
	DefaultMaxTokenBytes  = 8192
	DefaultMaxCommunities = 1000
)

// minRSABits is the smallest RSA key accepted: RFC 7518 section 3.3 says
// "a key of size 2048 bits or larger MUST be used" with RS256.
const minRSABits = 2048

// Config configures a Verifier. At least one of Secret and PublicKeyPEM
// must be set.
type Config struct {
	// Secret is the HS256 secret.
	Secret []byte
	// PublicKeyPEM is an RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)
	// public key, PEM-encoded as PKIX ("PUBLIC KEY") or, for RSA, PKCS #1
	// ("RSA PUBLIC KEY").
	PublicKeyPEM []byte
	// Audience and Issuer, when set, must be in the token's aud and equal
	// its iss.
	Audience, Issuer string
	// MaxTokenBytes bounds the length of a token; a longer one is
	// CodeInvalid without being parsed. Default DefaultMaxTokenBytes.
	MaxTokenBytes int
	// MaxCommunities bounds the entries of the communities claim; more is
	// CodeInvalid. Default DefaultMaxCommunities.
	MaxCommunities int
	// Now tells the time. Default time.Now.
	Now func() time.Time

	// JWKSURL is a JWKS document whose keys (RS256, ES256, EdDSA, each
	// with a kid) verify tokens naming their kid. NewVerifier fetches it
	// once and fails if it cannot; the Verifier then refetches it every
	// JWKSRefresh (so that a removed key stops working), and on a token
	// with an unknown kid at most once every JWKSUnknownKIDEvery, keeping
	// the last good set through failures. Close stops that.
	JWKSURL string
	// JWKSRefresh and JWKSUnknownKIDEvery default to 5 minutes and 5
	// seconds.
	JWKSRefresh, JWKSUnknownKIDEvery time.Duration
	// JWKSClient fetches the JWKS (default: an http.Client with a 5 s
	// timeout).
	JWKSClient *http.Client
	// OnJWKSError, when set, hears of failed refetches (the last good set
	// stays in use). It must not block.
	OnJWKSError func(error)
}

// Verifier checks credentials. It is safe for concurrent use.
type Verifier struct {
	secret         []byte
	key            any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	keyAlg         string // the one alg key verifies: RS256, ES256 or EdDSA
	audience       string
	issuer         string
	maxTokenBytes  int
	maxCommunities int
	now            func() time.Time
	parser         *jwt.Parser
	algs           []string
	cache          verifiedCache
	// jwks holds the keys of Config.JWKSURL (nil without one); stopJWKS
	// ends its refetching.
	jwks     keyfunc.Keyfunc
	stopJWKS context.CancelFunc
}

// verifiedCacheSize bounds the verified-token cache.
const verifiedCacheSize = 10000

// verifiedCache remembers tokens that verified, until they expire, so that
// a client polling every few seconds does not cost a signature check each
// time. Keys are SHA-256 digests, so the cache holds no token.
type verifiedCache struct {
	mu sync.Mutex
	m  map[[32]byte]*Identity
}

func (c *verifiedCache) get(token string, now time.Time) *Identity {
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.m[k]
	if id == nil {
		return nil
	}
	if !now.Before(id.ExpiresAt) {
		delete(c.m, k)
		return nil
	}
	cp := *id // callers may set SessionID on their copy
	return &cp
}

func (c *verifiedCache) put(token string, id *Identity) {
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]*Identity)
	}
	if len(c.m) >= verifiedCacheSize {
		// Drop about a tenth, at random (map order): cheap, and a dropped
		// token is only verified again.
		n := 0
		for k := range c.m {
			delete(c.m, k)
			if n++; n >= verifiedCacheSize/10 {
				break
			}
		}
	}
	cp := *id
	c.m[k] = &cp
}

// NewVerifier returns a Verifier for cfg. It fails when neither a secret
// nor a public key is set, or when the PEM does not hold a supported public
// key. With both set, tokens may use HS256 with the secret or the key's
// algorithm with the key.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{
		audience:       cfg.Audience,
		issuer:         cfg.Issuer,
		maxTokenBytes:  cfg.MaxTokenBytes,
		maxCommunities: cfg.MaxCommunities,
		now:            cfg.Now,
	}
	if v.maxTokenBytes <= 0 {
		v.maxTokenBytes = DefaultMaxTokenBytes
	}
	if v.maxCommunities <= 0 {
		v.maxCommunities = DefaultMaxCommunities
	}
	if v.now == nil {
		v.now = time.Now
	}
	if len(cfg.Secret) > 0 {
		v.secret = slices.Clone(cfg.Secret)
		v.algs = append(v.algs, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeyPEM) > 0 {
		key, alg, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		v.key, v.keyAlg = key, alg
		v.algs = append(v.algs, alg)
	}
	if cfg.JWKSURL != "" {
		if err := v.startJWKS(cfg); err != nil {
			return nil, err
		}
		for _, alg := range jwksAlgs {
			if !slices.Contains(v.algs, alg) {
				v.algs = append(v.algs, alg)
			}
		}
	}
	if len(v.algs) == 0 {
		return nil, errors.New("auth: neither a JWT secret, a public key nor a JWKS URL is configured")
	}
	// Claims are checked by Verify itself, in an order that lets it tell
	// "signed but expired" from everything else; the parser only checks
	// the format, the alg and the signature.
	v.parser = jwt.NewParser(jwt.WithValidMethods(v.algs), jwt.WithoutClaimsValidation())
	return v, nil
}

// Algorithms returns the JWT algorithms v accepts ("HS256" and/or the
// public key's algorithm).
func (v *Verifier) Algorithms() []string { return slices.Clone(v.algs) }

// parsePublicKey decodes the first PEM block of data and returns the key
// and the one algorithm it verifies.
func parsePublicKey(data []byte) (any, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("auth: public key: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, "", fmt.Errorf("auth: public key: PEM block is a %s; give the public key", block.Type)
		}
		return nil, "", fmt.Errorf("auth: public key: unsupported PEM block %q (want PUBLIC KEY or RSA PUBLIC KEY)", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("auth: public key: %w", err)
	}
	alg, err := algOf(key)
	if err != nil {
		return nil, "", fmt.Errorf("auth: public key: %w", err)
	}
	return key, alg, nil
}

// algOf returns the one JWT algorithm a public key verifies.
func algOf(key any) (string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return "", fmt.Errorf("RSA key of %d bits is too small (minimum %d)", k.N.BitLen(), minRSABits)
		}
		return jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC curve %s is not supported (want P-256 for ES256)", k.Curve.Params().Name)
		}
		return jwt.SigningMethodES256.Alg(), nil
	case ed25519.PublicKey:
		return jwt.SigningMethodEdDSA.Alg(), nil
	}
	return "", fmt.Errorf("unsupported key type %T (want RSA, EC P-256 or Ed25519)", key)
}

// tokenClaims are the claims footfall reads (docs/protocol.md, credentials).
type tokenClaims struct {
	jwt.RegisteredClaims
	// Communities is decoded by Verify so that a malformed claim gets its
	// own reason.
	Communities json.RawMessage `json:"communities,omitempty"`
	Role        string          `json:"role,omitempty"`
	// Anon makes the token an anonymous visitor's (see Identity.Anonymous).
	Anon bool `json:"anon,omitempty"`
}

// keyFor returns the verification key of t's alg. The parser has already
// refused any alg outside v.algs, so HS256 only ever meets the secret and
// the key's alg only ever meets the key: an HS256 token "signed" with the
// public key's bytes (the HS/RS confusion) is checked against the secret,
// or refused when there is none.
//
// A token whose header names a kid verifies with that key of the JWKS (an
// unknown kid refetches the set, rate-limited), and only if the key is one
// of the algorithm the token names: an RSA key verifies RS256 only, a P-256
// key ES256 only, an Ed25519 key EdDSA only.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == jwt.SigningMethodHS256.Alg() {
		if v.secret != nil {
			return v.secret, nil
		}
		return nil, errors.New("no key for this alg")
	}
	if kid, ok := t.Header["kid"].(string); ok && kid != "" && v.jwks != nil {
		key, err := v.jwks.Keyfunc(t)
		if err != nil {
			return nil, errUnknownKID
		}
		if keyAlg, err := algOf(key); err != nil || keyAlg != alg {
			return nil, errors.New("the key of this kid is not for this alg")
		}
		return key, nil
	}
	if alg == v.keyAlg && v.key != nil {
		return v.key, nil
	}
	return nil, errors.New("no key for this alg")
}

// errUnknownKID: the token names a kid that the JWKS does not hold.
var errUnknownKID = errors.New("unknown kid")

// Verify checks a JWT and returns the identity it carries.
//
// A token that is too long, malformed, signed with an alg other than the
// configured ones ("none" included) or with a bad signature, that has a
// wrong aud or iss (when configured), no sub, no exp, an nbf in the future,
// or a communities claim that is not an object of community id to
// "member", "moderator" or "admin" (or has more than MaxCommunities
// entries) gives an *Error with CodeInvalid and no identity.
//
// A token that passes all of that but whose exp is not after now gives an
// *Error with CodeExpired together with the identity, so that the caller
// can tell "signed but expired" (docs/protocol.md, fine print) from a forgery. A
// token with a bad signature is CodeInvalid whatever its exp.
//
// There is no leeway: a token expires at exp exactly and becomes valid at
// nbf exactly. The issuer and footfall are expected to run NTP; a leeway
// would only keep revoked-by-expiry tokens alive longer. The top-level
// "role" claim makes a site admin when it is "admin"; other values are
// ignored. Community ids are lower-cased; when two differ only in case the
// higher role wins.
func (v *Verifier) Verify(token string) (*Identity, error) {
	if token == "" {
		return nil, fail(CodeInvalid, "empty token")
	}
	if len(token) > v.maxTokenBytes {
		return nil, fail(CodeInvalid, "token too large")
	}
	if id := v.cache.get(token, v.now()); id != nil {
		return id, nil
	}
	var claims tokenClaims
	t, err := v.parser.ParseWithClaims(token, &claims, v.keyFor)
	if err != nil {
		return nil, fail(CodeInvalid, v.parseReason(t, err))
	}

	now := v.now()
	switch {
	case claims.Subject == "":
		return nil, fail(CodeInvalid, "token has no sub")
	case claims.ExpiresAt == nil:
		return nil, fail(CodeInvalid, "token has no exp")
	case claims.NotBefore != nil && now.Before(claims.NotBefore.Time):
		return nil, fail(CodeInvalid, "token not valid yet (nbf)")
	case v.issuer != "" && claims.Issuer != v.issuer:
		return nil, fail(CodeInvalid, "wrong issuer")
	case v.audience != "" && !slices.Contains(claims.Audience, v.audience):
		return nil, fail(CodeInvalid, "wrong audience")
	}
	communities, reason := v.communities(claims.Communities)
	if reason != "" {
		return nil, fail(CodeInvalid, reason)
	}
	id := &Identity{
		Subject:     claims.Subject,
		Communities: communities,
		Admin:       claims.Role == string(RoleAdmin) && !claims.Anon,
		ExpiresAt:   claims.ExpiresAt.Time,
		Anonymous:   claims.Anon,
	}
	if !now.Before(id.ExpiresAt) {
		return id, fail(CodeExpired, "token expired")
	}
	if _, jwks := t.Header["kid"]; !jwks || v.jwks == nil || t.Method.Alg() == jwt.SigningMethodHS256.Alg() {
		// A token a JWKS key verified is checked each time: its key may
		// be removed from the set.
		v.cache.put(token, id)
	}
	return id, nil
}

// parseReason turns a parser error into a reason that is safe to log: the
// parser's own messages may quote parts of the token.
func (v *Verifier) parseReason(t *jwt.Token, err error) string {
	if t != nil && t.Method != nil && !slices.Contains(v.algs, t.Method.Alg()) {
		return "signing algorithm not accepted"
	}
	if errors.Is(err, errUnknownKID) {
		return "unknown key id (kid)"
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signing algorithm not accepted"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid signature"
	}
	return "invalid token"
}

// communities decodes the communities claim. An absent or null claim is no
// community. It returns a non-empty reason when the claim is malformed.
func (v *Verifier) communities(raw json.RawMessage) (map[string]Role, string) {
	var m map[string]string
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, "malformed communities claim"
		}
	}
	if len(m) > v.maxCommunities {
		return nil, "too many communities"
	}
	for _, r := range m {
		if !Role(r).Valid() {
			return nil, "unknown role in communities claim"
		}
	}
	return normalizeRoles(m), ""
}

// Claims are what Mint puts in a token.
type Claims struct {
	Subject     string
	Communities map[string]Role
	// Admin makes a site admin (role "admin").
	Admin bool
	// TTL is the token's lifetime; it must be positive.
	TTL time.Duration
	// Audience and Issuer are put in aud and iss when set.
	Audience, Issuer string
	// Anon makes an anonymous visitor's token ("anon": true).
	Anon bool
}

// mintClaims is the JSON of a minted token.
type mintClaims struct {
	jwt.RegisteredClaims
	Communities map[string]Role `json:"communities,omitempty"`
	Role        Role            `json:"role,omitempty"`
	Anon        bool            `json:"anon,omitempty"`
}

// Mint makes an HS256 token with c, issued at now (for `footfall token` and
// dev mode). exp is a whole second, rounded up so that the token lives at
// least c.TTL; expiresAt is that exp. Community ids are lower-cased.
func Mint(secret []byte, c Claims, now time.Time) (token string, expiresAt time.Time, err error) {
	switch {
	case len(secret) == 0:
		return "", time.Time{}, errors.New("auth: mint: empty secret")
	case c.Subject == "":
		return "", time.Time{}, errors.New("auth: mint: empty subject")
	case c.TTL <= 0:
		return "", time.Time{}, errors.New("auth: mint: TTL must be positive")
	}
	for k, r := range c.Communities {
		if !r.Valid() {
			return "", time.Time{}, fmt.Errorf("auth: mint: community %q: unknown role %q", k, r)
		}
	}
	exp := now.Add(c.TTL)
	if t := exp.Truncate(time.Second); !t.Equal(exp) {
		exp = t.Add(time.Second)
	}
	exp = exp.UTC()
	claims := mintClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    c.Issuer,
			ExpiresAt: jwt.NewNumericDate(exp),
			IssuedAt:  jwt.NewNumericDate(now),
		},
		Communities: normalizeRoles(c.Communities),
		Anon:        c.Anon,
	}
	if c.Audience != "" {
		claims.Audience = jwt.ClaimStrings{c.Audience}
	}
	if c.Admin {
		claims.Role = RoleAdmin
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: mint: %w", err)
	}
	return token, exp, nil
}
