package api

import (
	"net"
	"net/http"
	"strconv"
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
	// MessageRate and MessageBurst bound inbound WebSocket messages per
	// connection (CONTRACT section 7: 10 a second, burst 20).
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
	ConnRatePerIP:   20,
	MaxConnsPerIP:   200,
	MessageRate:     10,
	MessageBurst:    20,
	MaxMessageBytes: 4 << 10,
	MaxFrameBytes:   64 << 10,
	MaxBodyBytes:    1 << 20,
	MaxBatch:        1000,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.ConnRatePerIP <= 0 {
		l.ConnRatePerIP = d.ConnRatePerIP
	}
	if l.MaxConnsPerIP <= 0 {
		l.MaxConnsPerIP = d.MaxConnsPerIP
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

// ipLimits tracks stream connections per client IP.
type ipLimits struct {
	rate  rate.Limit
	burst int
	max   int

	mu  sync.Mutex
	ips map[string]*ipState
}

type ipState struct {
	lim  *rate.Limiter
	open int
	seen time.Time
}

func newIPLimits(l Limits) *ipLimits {
	return &ipLimits{rate: rate.Limit(l.ConnRatePerIP), burst: int(2 * l.ConnRatePerIP), max: l.MaxConnsPerIP, ips: make(map[string]*ipState)}
}

// acquire admits one new connection from ip, or says why not.
func (p *ipLimits) acquire(ip string, now time.Time) (ok bool, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.ips[ip]
	if st == nil {
		st = &ipState{lim: rate.NewLimiter(p.rate, max(p.burst, 1))}
		p.ips[ip] = st
	}
	st.seen = now
	if st.open >= p.max {
		return false, "too many open connections from this address (at most " + strconv.Itoa(p.max) + ")"
	}
	if !st.lim.AllowN(now, 1) {
		return false, "too many new connections from this address; retry in a second"
	}
	st.open++
	return true, ""
}

func (p *ipLimits) release(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.ips[ip]; st != nil && st.open > 0 {
		st.open--
	}
}

// prune forgets addresses with no open connection, idle for a minute.
func (p *ipLimits) prune(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ip, st := range p.ips {
		if st.open == 0 && now.Sub(st.seen) > time.Minute {
			delete(p.ips, ip)
		}
	}
}

// limitConnections is the stream routes' middleware: per-IP connection
// rate and open connections, refused with 429 before the upgrade.
func (s *Server) limitConnections(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ip := c.RealIP()
		if ok, reason := s.ipLimits.acquire(ip, time.Now()); !ok {
			s.metrics.refusedWith(transportOf(c.Request().URL.Path), http.StatusTooManyRequests)
			c.Response().Header().Set("Retry-After", "1")
			return &httpError{Status: http.StatusTooManyRequests, Slug: "rate_limited", Message: reason}
		}
		c.Set(connSlotKey, func() { s.ipLimits.release(ip) })
		err := next(c)
		if release, _ := c.Get(connSlotKey).(func()); release != nil {
			release() // the handler did not keep the connection
		}
		return err
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
