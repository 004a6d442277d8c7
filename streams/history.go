package streams

import (
	"context"
	"errors"
	"time"
)

// Step is the resolution of visitor history (docs/protocol.md, history).
type Step string

// The three resolutions, and how long each keeps its points.
const (
	StepMinute Step = "minute"
	StepHour   Step = "hour"
	StepDay    Step = "day"

	RetainMinutes = 48 * time.Hour
	RetainHours   = 90 * 24 * time.Hour
	RetainDays    = 400 * 24 * time.Hour
)

// ParseStep returns the Step named s.
func ParseStep(s string) (Step, bool) {
	switch Step(s) {
	case StepMinute, StepHour, StepDay:
		return Step(s), true
	}
	return "", false
}

// Point is one bucket of a community's visitor history: the peak and the
// time-weighted average of its present count over the bucket (so far, for
// the current bucket).
type Point struct {
	// Time is the bucket's start.
	Time    time.Time
	Peak    int
	Average float64
	// Day points only: the day's distinct visitors and when its peak was
	// first reached.
	Today  Today
	PeakAt time.Time
}

// ErrHistoryRange: from is after to, or the range asks for more points
// than a step keeps.
var ErrHistoryRange = errors.New("history range out of bounds")

// HistoryReader reads a community's visitor history. Both buses record it
// at every change of the present count, cluster-wide and exactly once.
type HistoryReader interface {
	// VisitorHistory returns the buckets of step from the one holding from
	// to the one holding to (or now, if earlier), oldest first.
	VisitorHistory(ctx context.Context, community string, step Step, from, to time.Time) ([]Point, error)
}
