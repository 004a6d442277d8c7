package api

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/api/auth"
	"github.com/footfall/footfall/streams"
	"github.com/labstack/echo/v4"
)

// historyDefaultSpan is the range a history request covers when it gives
// no from: the last hour of minutes, day of hours, or 30 days.
var historyDefaultSpan = map[streams.Step]time.Duration{
	streams.StepMinute: time.Hour,
	streams.StepHour:   24 * time.Hour,
	streams.StepDay:    30 * 24 * time.Hour,
}

// historyPoint is one point of a history answer; the day fields only on
// day points.
type historyPoint struct {
	Time          string  `json:"time"`
	Peak          int     `json:"peak"`
	Average       float64 `json:"average"`
	Authenticated *int    `json:"authenticated_visitors,omitempty"`
	Anonymous     *int    `json:"anonymous_visitors,omitempty"`
	Total         *int    `json:"total_unique_visitors,omitempty"`
	PeakAt        *string `json:"peak_at,omitempty"`
}

type historyAnswer struct {
	CommunityID string         `json:"community_id"`
	Step        streams.Step   `json:"step"`
	Points      []historyPoint `json:"points"`
}

// historyAPI is the history route: the bus it reads, and who may read it
// (the service API key, or a dashboard credential that identify admits).
type historyAPI struct {
	bus      streams.Bus
	svc      *serviceAPI
	identify func(r *http.Request, h http.Header, clientIP string, cred auth.Credential, community string, stream streams.Stream, transport string) (identified, error)
	now      func() time.Time
}

// visitorHistory is GET /api/v1/communities/{id}/visitors/history
// (docs/protocol.md, history): a community's peaks and time-weighted
// averages per minute, hour or day, as JSON or (Accept: text/csv) CSV.
// Moderators and admins of the community may read it, and the platform
// with the service API key.
func (h *historyAPI) visitorHistory(c echo.Context) error {
	community, err := community(c)
	if err != nil {
		return err
	}
	r := c.Request()
	if !h.svc.isServiceKey(r) {
		if _, err := h.identify(r, c.Response().Header(), c.RealIP(), auth.Extract(r), community, streams.StreamDashboard, "rest"); err != nil {
			return err
		}
	}
	step, from, to, herr := parseHistoryQuery(c.QueryParams(), h.now())
	if herr != nil {
		return herr
	}
	points, err := h.bus.VisitorHistory(r.Context(), community, step, from, to)
	if errors.Is(err, streams.ErrHistoryRange) {
		return errBadQuery("from", err.Error())
	}
	if err != nil {
		return err
	}
	answer := historyAnswer{CommunityID: community, Step: step, Points: make([]historyPoint, len(points))}
	for i, p := range points {
		answer.Points[i] = toHistoryPoint(p, step)
	}
	c.Response().Header()["Cache-Control"] = noCache
	if wantsCSV(r.Header.Get("Accept")) {
		return c.Blob(http.StatusOK, "text/csv; charset=utf-8", historyCSV(answer))
	}
	return c.JSON(http.StatusOK, answer)
}

func errBadQuery(field, msg string) *httpError {
	return &httpError{Status: http.StatusBadRequest, Slug: "invalid_query", Field: field, Message: msg}
}

// parseHistoryQuery reads step (default hour), to (default now; a later
// one means now) and from (default: the step's default span before to).
func parseHistoryQuery(q map[string][]string, now time.Time) (streams.Step, time.Time, time.Time, *httpError) {
	get := func(name string) (string, bool) {
		v, ok := q[name]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	step := streams.StepHour
	if v, ok := get("step"); ok {
		st, ok := streams.ParseStep(v)
		if !ok {
			return "", time.Time{}, time.Time{}, errBadQuery("step", "step must be minute, hour or day")
		}
		step = st
	}
	to := now
	if v, ok := get("to"); ok {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return "", time.Time{}, time.Time{}, errBadQuery("to", "to must be an RFC 3339 time such as 2026-12-04T18:00:00Z")
		}
		to = t
	}
	if to.After(now) {
		to = now
	}
	from := to.Add(-historyDefaultSpan[step])
	if v, ok := get("from"); ok {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return "", time.Time{}, time.Time{}, errBadQuery("from", "from must be an RFC 3339 time such as 2026-12-03T18:00:00Z")
		}
		from = t
	}
	if from.After(to) {
		return "", time.Time{}, time.Time{}, errBadQuery("from", "from must not be after to (or now)")
	}
	keep := step.Retention()
	if oldest := now.Add(-keep); from.Before(oldest) {
		return "", time.Time{}, time.Time{}, errBadQuery("from", fmt.Sprintf("%s points are kept for %s: from must not be before %s",
			step, retentionText(keep), oldest.UTC().Truncate(time.Second).Format(time.RFC3339)))
	}
	return step, from, to, nil
}

func retentionText(d time.Duration) string {
	if d%(24*time.Hour) == 0 && d > 48*time.Hour {
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	}
	return strconv.Itoa(int(d/time.Hour)) + " hours"
}

func toHistoryPoint(p streams.Point, step streams.Step) historyPoint {
	hp := historyPoint{
		Time:    p.Time.UTC().Format(time.RFC3339),
		Peak:    p.Peak,
		Average: math.Round(p.Average*1000) / 1000,
	}
	if step == streams.StepDay {
		a, n, t := p.Today.Authenticated, p.Today.Anonymous, p.Today.Total()
		hp.Authenticated, hp.Anonymous, hp.Total = &a, &n, &t
		if !p.PeakAt.IsZero() {
			at := p.PeakAt.UTC().Truncate(time.Second).Format(time.RFC3339)
			hp.PeakAt = &at
		}
	}
	return hp
}

// wantsCSV reports whether an Accept header prefers text/csv to JSON: it
// names text/csv and no JSON type before it.
func wantsCSV(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch strings.ToLower(strings.TrimSpace(mt)) {
		case "text/csv":
			return true
		case "application/json", "*/*", "application/*":
			return false
		}
	}
	return false
}

// historyCSV renders answer's points with a header row; day points add
// their columns.
func historyCSV(answer historyAnswer) []byte {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	header := []string{"time", "peak", "average"}
	day := answer.Step == streams.StepDay
	if day {
		header = append(header, "authenticated_visitors", "anonymous_visitors", "total_unique_visitors", "peak_at")
	}
	_ = w.Write(header)
	for _, p := range answer.Points {
		row := []string{p.Time, strconv.Itoa(p.Peak), strconv.FormatFloat(p.Average, 'f', -1, 64)}
		if day {
			at := ""
			if p.PeakAt != nil {
				at = *p.PeakAt
			}
			row = append(row, strconv.Itoa(*p.Authenticated), strconv.Itoa(*p.Anonymous), strconv.Itoa(*p.Total), at)
		}
		_ = w.Write(row)
	}
	w.Flush()
	return buf.Bytes()
}
