package memory

import "time"

// ---------------------------------------------------------------------------
// Reaper

// reap is the reaper goroutine. It exits when Close closes b.stop.
func (b *Bus) reap() {
	t := time.NewTicker(b.opts.ReapInterval)
	defer t.Stop()
	var comms []*community
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		comms = comms[:0]
		b.mu.RLock()
		for _, c := range b.comms {
			comms = append(comms, c)
		}
		b.mu.RUnlock()
		for _, c := range comms {
			c.mu.Lock()
			b.settle(c, b.now())
			c.mu.Unlock()
		}
		clear(comms)
		b.pruneSessions(b.now())
	}
}
