package api

import (
	"errors"
	"net/http"

	"github.com/footfall/footfall/api/auth"
	"github.com/labstack/echo/v4"
)

// httpError is an error with everything a client sees: the HTTP status and
// the JSON body of docs/protocol.md, fine print. It is the one place where errors
// become statuses; anything else that reaches the error handler is a 500
// whose details stay in the log.
type httpError struct {
	Status  int    `json:"-"`
	Slug    string `json:"error"`
	Message string `json:"message"`
	Code    int    `json:"code,omitempty"`
	Field   string `json:"field,omitempty"`
	Index   *int   `json:"index,omitempty"`
}

func (e *httpError) Error() string { return e.Slug + ": " + e.Message }

func errNotFound(msg string) *httpError {
	return &httpError{Status: http.StatusNotFound, Slug: "not_found", Message: msg}
}

func errBadRequest(field, msg string) *httpError {
	return &httpError{Status: http.StatusBadRequest, Slug: "invalid_body", Field: field, Message: msg}
}

func errBadElement(index int, field, msg string) *httpError {
	return &httpError{Status: http.StatusBadRequest, Slug: "invalid_body", Field: field, Index: &index, Message: msg}
}

// authHTTPError maps an authentication outcome (docs/protocol.md, outcomes).
func authHTTPError(e *auth.Error) *httpError {
	status := http.StatusUnauthorized
	if e.Code == auth.CodeForbidden {
		status = http.StatusForbidden
	}
	return &httpError{Status: status, Slug: e.Code.Slug(), Message: e.Reason, Code: int(e.Code)}
}

// errorHandler is echo's HTTPErrorHandler: every error of every route
// leaves through it.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *httpError
	var ae *auth.Error
	var ee *echo.HTTPError
	switch {
	case errors.As(err, &he):
	case errors.As(err, &ae):
		he = authHTTPError(ae)
	case errors.As(err, &ee):
		he = &httpError{Status: ee.Code, Slug: slugForStatus(ee.Code), Message: http.StatusText(ee.Code)}
		if msg, ok := ee.Message.(string); ok && msg != "" {
			he.Message = msg
		}
	default:
		s.log.Error("internal error", "request_id", requestID(c), "path", c.Request().URL.Path, "err", err)
		he = &httpError{Status: http.StatusInternalServerError, Slug: "internal", Message: "internal server error"}
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(he.Status)
		return
	}
	_ = c.JSON(he.Status, he)
}

func slugForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "body_too_large"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusBadRequest:
		return "bad_request"
	}
	if status >= 500 {
		return "internal"
	}
	return "error"
}
