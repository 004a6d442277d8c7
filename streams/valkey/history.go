package valkey

import (
	"context"
	"errors"
	"time"

	"github.com/footfall/footfall/streams"
)

// VisitorHistory implements streams.HistoryReader.
func (b *Bus) VisitorHistory(ctx context.Context, community string, step streams.Step, from, to time.Time) ([]streams.Point, error) {
	return nil, errors.New("visitor history: not built yet")
}
