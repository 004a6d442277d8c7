package memory

import (
	"context"
	"errors"
	"time"

	"github.com/footfall/footfall/streams"
)

// recordHistory records c's present count after a change at now in c's
// history buckets. Callers hold c.mu.
func (b *Bus) recordHistory(c *community, old, n int, now time.Time) {}

// VisitorHistory implements streams.HistoryReader.
func (b *Bus) VisitorHistory(ctx context.Context, community string, step streams.Step, from, to time.Time) ([]streams.Point, error) {
	return nil, errors.New("visitor history: not built yet")
}
