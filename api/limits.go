package api

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// Limits are the node's protections against abuse. Zero fields take the
// defaults (DefaultLimits), which are the contract's figures where it gives
// them.
type Limits struct {
	// ConnRatePerIP bounds new stream connections per client IP per second
	// (burst: twice as many); over it: HTTP 429 before any upgrade.
	ConnRatePerIP float64
	// MaxConnsPerIP bounds the open stream connections of one client IP.
	MaxConnsPerIP int
	// RequestRatePerIP bounds REST snapshot requests per client IP per
	// second (burst: twice as many); over it: HTTP 429.
	RequestRatePerIP float64
	// MessageRate and MessageBurst bound inbound WebSocket messages per
	// connection (docs/protocol.md, fine print: 10 a second, burst 20).
	MessageRate  float64
	MessageBurst int
	// MaxMessageBytes: larger client messages get message_too_large
	// (4 KiB); MaxFrameBytes: larger frames close the connection with 1009
	// (64 KiB).
	MaxMessageBytes int
	MaxFrameBytes   int
	// MaxBodyBytes caps request bodies (1 MiB, 413 above); MaxBatch caps a
	// visitor-events batch (1,000).
	MaxBodyBytes int64
	MaxBatch     int
	// TrustedProxies lists the proxies (CIDRs) whose X-Forwarded-For is
	// believed; empty: the client IP is the TCP peer's, whatever headers say.
	TrustedProxies []*net.IPNet
}

// DefaultLimits are the limits a node runs with unless configured.
var DefaultLimits = Limits{
	ConnRatePerIP:    20,
	MaxConnsPerIP:    200,
	RequestRatePerIP: 100,
	MessageRate:      10,
	MessageBurst:     20,
	MaxMessageBytes:  4 << 10,
	MaxFrameBytes:    64 << 10,
	MaxBodyBytes:     1 << 20,
	MaxBatch:         1000,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.ConnRatePerIP <= 0 {
		l.ConnRatePerIP = d.ConnRatePerIP
	}
	if l.MaxConnsPerIP <= 0 {
		l.MaxConnsPerIP = d.MaxConnsPerIP
	}
	if l.RequestRatePerIP <= 0 {
		l.RequestRatePerIP = d.RequestRatePerIP
	}
	if l.MessageRate <= 0 {
		l.MessageRate = d.MessageRate
	}
	if l.MessageBurst <= 0 {
		l.MessageBurst = d.MessageBurst
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.MaxFrameBytes <= 0 {
		l.MaxFrameBytes = d.MaxFrameBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MaxBatch <= 0 {
		l.MaxBatch = d.MaxBatch
	}
	return l
}

// ipExtractor returns echo's client-IP rule: the TCP peer, or with trusted
// proxies the first untrusted address of X-Forwarded-For. echo's own
// default trusts private and loopback ranges; footfall trusts only what
// the operator listed.
func (l Limits) ipExtractor() echo.IPExtractor {
	if len(l.TrustedProxies) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range l.TrustedProxies {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// addrKey is the per-address limits' key of a client IP: the address
// itself for IPv4 (an IPv4-mapped IPv6 address included), its /64 for
// IPv6, since one subscriber usually holds a whole /64 and a key per /128
// would give a single client billions of addresses. Anything else (never
// from echo's extractors) is its own key.
func addrKey(ip string) string {
	if strings.IndexByte(ip, ':') < 0 {
		return ip // IPv4: no parse, no allocation
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a.Is4In6() {
		return a.Unmap().String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// maxTrackedAddrs is how many client addresses ipLimits keeps without an
// open connection before it forgets some (see ipLimits.evict).
const maxTrackedAddrs = 65536

// ipLimits tracks stream connections and REST requests per client address
// (addrKey). Its table is bounded: an address with no open connection
// whose buckets have refilled is the same as an unknown one and is
// dropped (prune); when the table is full anyway, some addresses with no
// open connection are dropped (evict), which forgives their recent rate,
// never their open connections. Addresses with open connections are never
// dropped: they are bounded by the node's open connections.
type ipLimits struct {
	rate     rate.Limit
	burst    int
	reqRate  rate.Limit
	reqBurst int
	max      int
	// refill is how long a drained bucket takes to fill again: an address
	// unseen for that long with no open connection is forgotten.
	refill time.Duration
	cap    int

	mu  sync.Mutex
	ips map[string]*ipState
}

type ipState struct {
	lim    *rate.Limiter // new stream connections
	reqLim *rate.Limiter // REST requests; nil until the first one
	open   int
	seen   time.Time
}

func newIPLimits(l Limits) *ipLimits {
	p := &ipLimits{
		rate: rate.Limit(l.ConnRatePerIP), burst: max(int(2*l.ConnRatePerIP), 1),
		reqRate: rate.Limit(l.RequestRatePerIP), reqBurst: max(int(2*l.RequestRatePerIP), 1),
		max: l.MaxConnsPerIP, cap: maxTrackedAddrs,
		ips: make(map[string]*ipState),
	}
	p.refill = max(refillTime(p.rate, p.burst), refillTime(p.reqRate, p.reqBurst))
	return p
}

func refillTime(r rate.Limit, burst int) time.Duration {
	return time.Duration(float64(burst)/float64(r)*float64(time.Second)) + time.Second
}

// state returns the entry of key, made (and the table bounded) if needed.
// Call with p.mu held.
func (p *ipLimits) state(key string, now time.Time) *ipState {
	st := p.ips[key]
	if st == nil {
		if len(p.ips) >= p.cap {
			p.evict(now)
		}
		st = &ipState{lim: rate.NewLimiter(p.rate, p.burst)}
		p.ips[key] = st
	}
	st.seen = now
	return st
}

// evict makes room in a full table: it drops the addresses whose buckets
// have refilled, then, if that freed less than a quarter of it, any
// addresses without an open connection (map order: arbitrary) down to
// three quarters. So a full table costs one pass per quarter of its size
// in new addresses. Call with p.mu held.
func (p *ipLimits) evict(now time.Time) {
	p.pruneLocked(now)
	low := p.cap * 3 / 4
	for key, st := range p.ips {
		if len(p.ips) <= low {
			break
		}
		if st.open == 0 {
			delete(p.ips, key)
		}
	}
}

// acquire admits one new connection from the address key, or says why not.
func (p *ipLimits) acquire(key string, now time.Time) (ok bool, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state(key, now)
	if st.open >= p.max {
		return false, "too many open connections from this address (at most " + strconv.Itoa(p.max) + ")"
	}
	if !st.lim.AllowN(now, 1) {
		return false, "too many new connections from this address; retry in a second"
	}
	st.open++
	return true, ""
}

func (p *ipLimits) release(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.ips[key]; st != nil && st.open > 0 {
		st.open--
	}
}

// allowRequest admits one REST request from the address key.
func (p *ipLimits) allowRequest(key string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state(key, now)
	if st.reqLim == nil {
		st.reqLim = rate.NewLimiter(p.reqRate, p.reqBurst)
	}
	return st.reqLim.AllowN(now, 1)
}

// tracked is the number of addresses in the table.
func (p *ipLimits) tracked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ips)
}

// prune forgets the addresses with no open connection whose buckets have
// refilled.
func (p *ipLimits) prune(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pruneLocked(now)
}

func (p *ipLimits) pruneLocked(now time.Time) {
	for key, st := range p.ips {
		if st.open == 0 && now.Sub(st.seen) >= p.refill {
			delete(p.ips, key)
		}
	}
}

// limitConnections is the stream routes' middleware: per-address
// connection rate and open connections, refused with 429 before the
// upgrade.
func (s *Server) limitConnections(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key := addrKey(c.RealIP())
		if ok, reason := s.ipLimits.acquire(key, time.Now()); !ok {
			s.metrics.refusedWith(transportOf(c.Request().URL.Path), http.StatusTooManyRequests)
			c.Response().Header().Set("Retry-After", "1")
			return &httpError{Status: http.StatusTooManyRequests, Slug: "rate_limited", Message: reason}
		}
		c.Set(connSlotKey, func() { s.ipLimits.release(key) })
		// The slot is released on every way out that did not hand it to a
		// connection, a panic included: recoverPanics, further out, turns
		// the panic into a 500 after this has run.
		defer func() {
			if release, _ := c.Get(connSlotKey).(func()); release != nil {
				c.Set(connSlotKey, nil)
				release()
			}
		}()
		return next(c)
	}
}

// limitRequests is the REST snapshot routes' middleware: per-address
// request rate, refused with 429.
func (s *Server) limitRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.ipLimits.allowRequest(addrKey(c.RealIP()), time.Now()) {
			c.Response().Header().Set("Retry-After", "1")
			return &httpError{Status: http.StatusTooManyRequests, Slug: "rate_limited", Message: "too many requests from this address; retry in a second"}
		}
		return next(c)
	}
}

// connSlotKey is the echo context key under which limitConnections leaves
// the release of the request's open-connection slot. A handler that keeps
// the connection after it returns (a hijacked stream) takes the release
// with takeConnSlot and calls it when the connection ends.
const connSlotKey = "footfall.connSlot"

// takeConnSlot takes over the release of c's open-connection slot; it
// returns a no-op when there is none.
func takeConnSlot(c echo.Context) func() {
	release, _ := c.Get(connSlotKey).(func())
	if release == nil {
		return func() {}
	}
	c.Set(connSlotKey, nil)
	return release
}
