package memory

import "time"

// outboxPresence queues the webhook events of a change of c's present
// count from old to n at now. Callers hold c.mu.
func (b *Bus) outboxPresence(c *community, old, n int, now time.Time) {}
