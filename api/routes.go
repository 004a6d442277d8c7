package api

import (
	"net/http"
	"time"

	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// maxBodyBytes caps every request body (CONTRACT section 6: 1 MiB).
const maxBodyBytes = 1 << 20

// routes lists the node's whole HTTP surface.
func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		TargetHeader: echo.HeaderXRequestID,
	}))
	e.Use(s.accessLog)
	e.Use(s.recoverPanics)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)

	// Streams (CONTRACT section 5). Origins are checked before the upgrade.
	e.GET("/ws/communities/:id/visitors/", s.serveWS(streams.StreamVisitors), s.checkOrigin)
	e.GET("/ws/communities/:id/visitor-dashboard/", s.serveWS(streams.StreamDashboard), s.checkOrigin)

	e.GET("/sse/communities/:id/visitors/", s.serveSSE(streams.StreamVisitors), s.checkOrigin)
	e.GET("/sse/communities/:id/visitor-dashboard/", s.serveSSE(streams.StreamDashboard), s.checkOrigin)

	// REST snapshots (CONTRACT section 5), with the streams' credentials.
	e.GET("/api/v1/communities/:id/visitors/count", s.restCount)
	e.GET("/api/v1/communities/:id/visitor-dashboard", s.restDashboard)

	// Service API (CONTRACT section 6).
	svc := e.Group("/api/v1", s.requireAPIKey, bodyLimit)
	svc.POST("/communities/:id/visitor-events", s.visitorEvents)
	svc.POST("/communities/:id/metrics", s.metrics)
	svc.POST("/communities/:id/conversions", s.conversions)
	svc.POST("/communities/:id/broadcast", s.broadcast)
	svc.POST("/sessions", s.createSession)
	svc.DELETE("/sessions/:session_id", s.deleteSession)

	if s.opts.Dev {
		e.POST("/dev/token", s.devToken, bodyLimit)
		e.GET("/dev/info", s.devInfo)
	}
	if s.opts.Web != nil {
		e.GET("/*", echo.WrapHandler(http.FileServerFS(s.opts.Web)))
	}
	return e
}

// bodyLimit refuses bodies over maxBodyBytes with 413.
func bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > maxBodyBytes {
			return &httpError{Status: http.StatusRequestEntityTooLarge, Slug: "body_too_large", Message: "request body over 1 MiB"}
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, maxBodyBytes)
		return next(c)
	}
}

func (s *Server) checkOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.origins.check(c.Request()) {
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
		s.log.Info("request",
			"request_id", requestID(c),
			"method", r.Method,
			"path", r.URL.Path,
			"status", c.Response().Status,
			"duration_ms", time.Since(start).Milliseconds(),
			"remote", c.RealIP(),
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

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}
