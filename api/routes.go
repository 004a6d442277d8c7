package api

import (
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/openapi"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// routes lists the node's whole HTTP surface.
func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = s.limits.ipExtractor()
	e.Use(dropUnsafeRequestID)
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		TargetHeader: echo.HeaderXRequestID,
	}))
	e.Use(s.accessLog)
	e.Use(s.recoverPanics)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", s.metrics.handler())

	// Streams (docs/protocol.md, streams). Origins are checked before the upgrade.
	e.GET("/ws/communities/:id/visitors/", s.serveWS(streams.StreamVisitors), s.checkOrigin, s.limitConnections)
	e.GET("/ws/communities/:id/visitor-dashboard/", s.serveWS(streams.StreamDashboard), s.checkOrigin, s.limitConnections)

	// SSE and REST snapshots answer CORS (api/cors.go): pages on other
	// origins use them as the browser client's fallbacks.
	e.GET("/sse/communities/:id/visitors/", s.serveSSE(streams.StreamVisitors), s.cors, s.checkOrigin, s.limitConnections)
	e.GET("/sse/communities/:id/visitor-dashboard/", s.serveSSE(streams.StreamDashboard), s.cors, s.checkOrigin, s.limitConnections)

	// REST snapshots (docs/protocol.md, streams), with the streams' credentials.
	e.GET("/api/v1/communities/:id/visitors/count", s.restCount, s.cors, s.limitRequests)
	e.GET("/api/v1/communities/:id/visitor-dashboard", s.restDashboard, s.cors, s.limitRequests)
	// Visitor history (docs/protocol.md, history): dashboard credentials or
	// the service API key.
	e.GET("/api/v1/communities/:id/visitors/history", s.history.visitorHistory, s.cors, s.limitRequests)

	for _, p := range []string{
		"/sse/communities/:id/visitors/", "/sse/communities/:id/visitor-dashboard/",
		"/api/v1/communities/:id/visitors/count", "/api/v1/communities/:id/visitor-dashboard",
		"/api/v1/communities/:id/visitors/history",
	} {
		e.OPTIONS(p, s.preflight)
	}

	// Service API (docs/protocol.md, service API). Route by route rather than an echo
	// Group: a group's middleware would answer 401 for unknown paths too.
	svc := []echo.MiddlewareFunc{s.svc.requireAPIKey, s.bodyLimit}
	e.POST("/api/v1/communities/:id/visitor-events", s.svc.visitorEvents, svc...)
	e.POST("/api/v1/communities/:id/metrics", s.svc.postMetric, svc...)
	e.POST("/api/v1/communities/:id/conversions", s.svc.conversions, svc...)
	e.POST("/api/v1/communities/:id/broadcast", s.svc.broadcast, svc...)
	e.GET("/api/v1/communities/:id/stats", s.stats, svc...)
	e.POST("/api/v1/sessions", s.svc.createSession, svc...)
	e.DELETE("/api/v1/sessions/:session_id", s.svc.deleteSession, svc...)

	// The published contract.
	e.GET("/openapi.yaml", yamlDocument(openapi.OpenAPI()))
	e.GET("/asyncapi.yaml", yamlDocument(openapi.AsyncAPI()))

	if s.opts.Dev {
		e.POST("/dev/token", s.devToken, s.bodyLimit)
		e.GET("/dev/info", s.devInfo)
	}
	if s.opts.Web != nil {
		e.GET("/*", s.staticFiles(s.opts.Web))
	}
	return e
}

// bodyLimit refuses bodies over Limits.MaxBodyBytes with 413.
func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.limits.MaxBodyBytes {
			return errBodyTooLarge(s.limits.MaxBodyBytes)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.limits.MaxBodyBytes)
		return next(c)
	}
}

func errBodyTooLarge(max int64) *httpError {
	return &httpError{Status: http.StatusRequestEntityTooLarge, Slug: "body_too_large", Message: "request body over " + strconv.FormatInt(max, 10) + " bytes"}
}

func (s *Server) checkOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.origins.check(c.Request()) {
			s.metrics.refusedWith(transportOf(c.Request().URL.Path), http.StatusForbidden)
			return &httpError{Status: http.StatusForbidden, Slug: "origin_not_allowed", Message: "origin not allowed"}
		}
		return next(c)
	}
}

// accessLog logs one line per request. It logs the path only, never the
// query string: ?token= carries credentials.
func (s *Server) accessLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r := c.Request()
		if !s.log.Enabled(r.Context(), slog.LevelInfo) {
			return nil
		}
		// LogAttrs with typed attributes: no value is boxed, and the line
		// costs one encoding and one write.
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("request_id", requestID(c)),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", c.Response().Status),
			slog.Int64("duration_ms", time.Since(start).Milliseconds()),
			slog.String("remote", c.RealIP()),
		)
		return nil
	}
}

// recoverPanics turns a panic in a handler into a 500 (or, once a
// connection is upgraded, the end of that connection only).
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic in handler", "request_id", requestID(c), "path", c.Request().URL.Path, "panic", p)
				err = &httpError{Status: http.StatusInternalServerError, Slug: "internal", Message: "internal server error"}
			}
		}()
		return next(c)
	}
}

// maxRequestIDBytes is the longest X-Request-ID taken from a client.
const maxRequestIDBytes = 64

// dropUnsafeRequestID removes a client's X-Request-ID unless it is at most
// maxRequestIDBytes of [A-Za-z0-9._-], so that the RequestID middleware
// after it makes a fresh one: the id is logged with every line of the
// request, and a client must not choose what goes into the logs.
func dropUnsafeRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		if rid := h.Get(echo.HeaderXRequestID); rid != "" && !safeRequestID(rid) {
			h.Del(echo.HeaderXRequestID)
		}
		return next(c)
	}
}

func safeRequestID(id string) bool {
	if len(id) > maxRequestIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '.', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// transportOf names the transport of a stream route.
func transportOf(path string) string {
	if strings.HasPrefix(path, "/sse/") {
		return "sse"
	}
	return "websocket"
}

func yamlDocument(doc []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", doc)
	}
}

// staticFiles serves the embedded web assets; a path that is not one of
// them gets the JSON 404 of every other unknown route.
func (s *Server) staticFiles(fsys fs.FS) echo.HandlerFunc {
	files := http.FileServerFS(fsys)
	return func(c echo.Context) error {
		name := strings.TrimPrefix(path.Clean(c.Request().URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		if st, err := fs.Stat(fsys, name); err != nil || st.IsDir() {
			return errNotFound("no such route")
		}
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	}
}

// Routes lists the node's routes as "METHOD /path/{param}", for the test
// that holds them equal to the OpenAPI document.
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.echo.Routes() {
		if strings.HasSuffix(r.Path, "/*") {
			if r.Path == "/*" && r.Method == http.MethodGet {
				out = append(out, "GET /")
			}
			continue
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ":") {
				parts[i] = "{" + p[1:] + "}"
			}
		}
		out = append(out, r.Method+" "+strings.Join(parts, "/"))
	}
	return out
}
