package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
)

// The auth hook (docs/protocol.md, auth hook): a request that carries no
// footfall credential but the platform's own cookies (Django's sessionid,
// say) is decided by the platform. footfall POSTs what it knows to
// FOOTFALL_AUTH_HOOK_URL and the platform answers 200 with the visitor and
// its role, 401 (not signed in: a guest on a public community, else 4001)
// or 403 (4003). Anything else (a timeout, a 5xx, nonsense) is a failure:
// WebSocket close 1011, HTTP 503 auth_hook_unavailable, never a guest.

// Timings of the auth hook.
const (
	hookTimeout      = 2 * time.Second
	hookDefaultTTL   = 60 * time.Second
	hookMaxTTL       = time.Hour
	hookRefusalTTL   = 5 * time.Second
	hookRetryEvery   = 30 * time.Second
	hookCacheMax     = 100_000
	hookMaxAnswer    = 64 << 10
	hookCookiePrefix = "footfall_"
)

// errHookUnavailable is a hook failure, as the client sees it.
var errHookUnavailable = &httpError{Status: http.StatusServiceUnavailable, Slug: "auth_hook_unavailable", Message: "the platform's auth hook did not answer; try again"}

// hookRequest is the body footfall POSTs to the hook.
type hookRequest struct {
	CommunityID string `json:"community_id"`
	Stream      string `json:"stream"`
	Transport   string `json:"transport"`
	Cookie      string `json:"cookie"`
	ClientIP    string `json:"client_ip"`
}

// hookAnswer is the hook's 200 body.
type hookAnswer struct {
	Sub        *string `json:"sub"`
	Role       string  `json:"role"`
	Anonymous  bool    `json:"anonymous"`
	TTLSeconds *int    `json:"ttl_seconds"`
}

// hookVerdict is a decision of the hook for one (cookie, community).
type hookVerdict struct {
	status int           // 200, 401 or 403
	sub    string        // 200
	role   auth.Role     // 200
	anon   bool          // 200
	ttl    time.Duration // how long the verdict holds
}

// identity is the visitor an allow names, with its role in community.
func (v hookVerdict) identity(community string) *auth.Identity {
	return &auth.Identity{Subject: v.sub, Communities: map[string]auth.Role{community: v.role}, Anonymous: v.anon}
}

type hookEntry struct {
	v     hookVerdict
	until time.Time
}

// authHook asks the platform, caches its verdicts per (cookie, community)
// and makes one call for a burst of requests with the same key.
type authHook struct {
	url, apiKey string
	client      *http.Client
	now         func() time.Time
	observe     func(outcome string, d time.Duration)

	mu    sync.Mutex
	cache map[[32]byte]hookEntry
	group singleflight.Group
}

func newAuthHook(url, apiKey string, client *http.Client, now func() time.Time, observe func(string, time.Duration)) *authHook {
	if client == nil {
		client = &http.Client{Timeout: hookTimeout}
	}
	return &authHook{url: url, apiKey: apiKey, client: client, now: now, observe: observe, cache: make(map[[32]byte]hookEntry)}
}

// platformCookies returns the Cookie header of r without footfall's own
// cookies (the hook never sees their values), and whether anything is
// left.
func platformCookies(r *http.Request) (string, bool) {
	var kept []string
	for _, line := range r.Header.Values("Cookie") {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, _, _ := strings.Cut(part, "=")
			if strings.HasPrefix(strings.TrimSpace(name), hookCookiePrefix) {
				continue
			}
			kept = append(kept, part)
		}
	}
	return strings.Join(kept, "; "), len(kept) > 0
}

func hookKey(cookie, community string) [32]byte {
	return sha256.Sum256([]byte(community + "\x00" + cookie))
}

// decide returns the hook's verdict for cookie in community, from the cache
// or from one call shared by every concurrent request with the same key.
// A failure is not cached.
func (h *authHook) decide(ctx context.Context, req hookRequest) (hookVerdict, error) {
	key := hookKey(req.Cookie, req.CommunityID)
	now := h.now()
	h.mu.Lock()
	if e, ok := h.cache[key]; ok && now.Before(e.until) {
		h.mu.Unlock()
		return e.v, nil
	}
	h.mu.Unlock()
	// The call runs on its own context: a caller that gives up does not
	// fail the others waiting for the same verdict.
	ch := h.group.DoChan(string(key[:]), func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hookTimeout)
		defer cancel()
		v, err := h.call(cctx, req)
		if err != nil {
			return hookVerdict{}, err
		}
		h.store(key, v)
		return v, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return hookVerdict{}, res.Err
		}
		return res.Val.(hookVerdict), nil
	case <-ctx.Done():
		return hookVerdict{}, ctx.Err()
	}
}

func (h *authHook) store(key [32]byte, v hookVerdict) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.cache) >= hookCacheMax {
		for k, e := range h.cache {
			if !now.Before(e.until) {
				delete(h.cache, k)
			}
		}
		if len(h.cache) >= hookCacheMax {
			return // full of live verdicts: this one is asked again next time
		}
	}
	h.cache[key] = hookEntry{v: v, until: now.Add(v.ttl)}
}

// call asks the platform once.
func (h *authHook) call(ctx context.Context, req hookRequest) (v hookVerdict, err error) {
	start := time.Now()
	outcome := "error"
	defer func() {
		if h.observe != nil {
			h.observe(outcome, time.Since(start))
		}
	}()
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return v, fmt.Errorf("auth hook: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if h.apiKey != "" {
		hr.Header.Set("Authorization", "Bearer "+h.apiKey)
	}
	resp, err := h.client.Do(hr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			outcome = "timeout"
		}
		return v, fmt.Errorf("auth hook: %w", errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, hookMaxAnswer))
	if err != nil {
		return v, fmt.Errorf("auth hook: reading the answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		outcome = "unauthorized"
		return hookVerdict{status: http.StatusUnauthorized, ttl: hookRefusalTTL}, nil
	case http.StatusForbidden:
		outcome = "forbidden"
		return hookVerdict{status: http.StatusForbidden, ttl: hookRefusalTTL}, nil
	case http.StatusOK:
	default:
		return v, fmt.Errorf("auth hook: answered %d", resp.StatusCode)
	}
	var a hookAnswer
	// The whole body must be one JSON object: a decoder would stop after
	// the first value and take `{"sub":"42",...} trailing` as an allow.
	if err := json.Unmarshal(data, &a); err != nil {
		return v, fmt.Errorf("auth hook: the answer is not JSON: %w", err)
	}
	role := auth.Role(a.Role)
	switch {
	case a.Sub == nil || *a.Sub == "" || len(*a.Sub) > 256 || strings.IndexByte(*a.Sub, 0) >= 0:
		return v, errors.New("auth hook: the answer has no usable sub")
	case !role.Valid():
		return v, fmt.Errorf("auth hook: unknown role %q", a.Role)
	}
	ttl := hookDefaultTTL
	if a.TTLSeconds != nil {
		if *a.TTLSeconds < 1 || *a.TTLSeconds > int(hookMaxTTL/time.Second) {
			return v, fmt.Errorf("auth hook: ttl_seconds %d is not within 1 to 3600", *a.TTLSeconds)
		}
		ttl = time.Duration(*a.TTLSeconds) * time.Second
	}
	outcome = "allowed"
	return hookVerdict{status: http.StatusOK, sub: *a.Sub, role: role, anon: a.Anonymous, ttl: ttl}, nil
}

// hookGrant is what a connection admitted by the hook keeps to be asked
// about again when its verdict runs out.
type hookGrant struct {
	req  hookRequest
	next time.Time // when to ask again
}

// viaHook decides r through the auth hook, if one is set and r carries the
// platform's cookies. decided is false when the hook has no say (no hook,
// no cookies, or it answered 401: not signed in). An error is a hook
// failure (errHookUnavailable) or, for 403 and for a stream the verdict
// does not grant, an *auth.Error.
func (s *Server) viaHook(r *http.Request, clientIP, community string, stream streams.Stream, transport string) (ident *auth.Identity, grant *hookGrant, decided bool, err error) {
	if s.hook == nil {
		return nil, nil, false, nil
	}
	cookie, ok := platformCookies(r)
	if !ok {
		return nil, nil, false, nil
	}
	req := hookRequest{CommunityID: community, Stream: string(stream), Transport: transport, Cookie: cookie, ClientIP: clientIP}
	v, err := s.hook.decide(r.Context(), req)
	if err != nil {
		s.log.Warn("auth hook failed", "community", community, "err", err)
		return nil, nil, true, errHookUnavailable
	}
	switch v.status {
	case http.StatusUnauthorized:
		return nil, nil, false, nil
	case http.StatusForbidden:
		return nil, nil, true, &auth.Error{Code: auth.CodeForbidden, Reason: "the platform refused this visitor here"}
	}
	ident = v.identity(community)
	if err := ident.Permit(community, stream); err != nil {
		return nil, nil, true, err
	}
	return ident, &hookGrant{req: req, next: s.now().Add(v.ttl)}, true, nil
}

// hookRecheckConcurrency bounds the re-checks in flight.
const hookRecheckConcurrency = 32

// recheckHooked asks the hook again about the open streams it admitted
// whose verdict ran out: allowed, the stream lives on until the new
// verdict runs out; refused (401, 403, or a role that no longer grants the
// stream), it is closed with 4004; a failure keeps it open and asks again
// in 30 s. Verdicts are cached per (cookie, community), so the streams of
// one visitor cost one call. Run calls it every Timings.HookRecheck.
func (s *Server) recheckHooked(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	hooked := make([]*client, 0, len(s.hooked))
	for c := range s.hooked {
		hooked = append(hooked, c)
	}
	s.mu.Unlock()
	var due []*client
	for _, c := range hooked {
		c.mu.Lock()
		if !now.Before(c.hook.next) {
			due = append(due, c)
			c.hook.next = now.Add(hookRetryEvery) // not picked again meanwhile
		}
		c.mu.Unlock()
	}
	sem := make(chan struct{}, hookRecheckConcurrency)
	var wg sync.WaitGroup
	for _, c := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			s.recheckOne(ctx, c)
		})
	}
	wg.Wait()
}

func (s *Server) recheckOne(ctx context.Context, c *client) {
	c.mu.Lock()
	req, cur := c.hook.req, c.ident
	c.mu.Unlock()
	v, err := s.hook.decide(ctx, req)
	if err != nil {
		s.log.Warn("auth hook re-check failed; the stream stays open", "community", c.community, "conn", c.id, "err", err)
		return // asked again in hookRetryEvery
	}
	ident := v.identity(c.community)
	if v.status != http.StatusOK || v.sub != cur.Subject || v.anon != cur.Anonymous || !ident.Allows(c.community, c.stream) {
		c.closeWith(int(auth.CodeExpired), "the platform no longer admits this visitor")
		return
	}
	c.mu.Lock()
	c.hook.next = s.now().Add(v.ttl)
	c.mu.Unlock()
}
