// Package alarm is the node's alarm wheel: one timer for every connection's
// next due time (coalescing windows, keepalives, expiry, an SSE session's
// parking), kept in a heap.
package alarm

import (
	"sync"
	"time"
)

// Alarm is a wake-up call that a connection books with its Wheel: the time
// its next coalesced message is due, its next keepalive, its credential's
// expiry. A Wheel serves all its alarms with one runtime timer and no parked
// goroutine, so that an idle connection costs no timer of its own.
type Alarm struct {
	fire func()
	at   time.Time
	idx  int // position in the Wheel's heap; -1 when not booked
}

// New returns an unbooked alarm that calls fire when it rings. fire runs on
// a goroutine of the Wheel's timer and must not block: it should only
// record and hand work on (start a writer goroutine).
func New(fire func()) *Alarm { return &Alarm{fire: fire, idx: -1} }

// Wheel is a min-heap of booked alarms served by one time.AfterFunc timer.
// The timer's goroutine only exists while it rings, so a Wheel with no alarm
// booked holds no goroutine. The zero Wheel is ready to use.
type Wheel struct {
	mu    sync.Mutex
	heap  []*Alarm
	timer *time.Timer
	armed time.Time // the time the timer is set for; zero when stopped
}

// Set books a to ring at at, replacing its previous time; a zero at
// cancels it. An alarm rings once per booking.
func (s *Wheel) Set(a *Alarm, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case at.IsZero():
		if a.idx >= 0 {
			s.remove(a.idx)
		}
	case a.idx >= 0:
		a.at = at
		s.fix(a.idx)
	default:
		a.at = at
		a.idx = len(s.heap)
		s.heap = append(s.heap, a)
		s.up(a.idx)
	}
	s.arm()
}

// arm sets the timer for the earliest alarm. Callers hold s.mu.
func (s *Wheel) arm() {
	if len(s.heap) == 0 {
		if !s.armed.IsZero() {
			s.timer.Stop()
			s.armed = time.Time{}
		}
		return
	}
	next := s.heap[0].at
	if next.Equal(s.armed) {
		return
	}
	s.armed = next
	d := time.Until(next)
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.ring)
		return
	}
	s.timer.Reset(d)
}

// ring calls every alarm that is due, outside the lock (an alarm's fire may
// book it again).
func (s *Wheel) ring() {
	now := time.Now()
	var due []*Alarm
	s.mu.Lock()
	s.armed = time.Time{}
	for len(s.heap) > 0 && !s.heap[0].at.After(now) {
		a := s.heap[0]
		s.remove(0)
		due = append(due, a)
	}
	s.arm()
	s.mu.Unlock()
	for _, a := range due {
		a.fire()
	}
}

func (s *Wheel) less(i, j int) bool { return s.heap[i].at.Before(s.heap[j].at) }

func (s *Wheel) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.heap[i].idx = i
	s.heap[j].idx = j
}

func (s *Wheel) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		j = i
	}
}

func (s *Wheel) down(i int) bool {
	start := i
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && s.less(r, l) {
			j = r
		}
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		i = j
	}
	return i > start
}

func (s *Wheel) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *Wheel) remove(i int) {
	n := len(s.heap) - 1
	a := s.heap[i]
	if i != n {
		s.swap(i, n)
	}
	s.heap[n] = nil
	s.heap = s.heap[:n]
	if i != n {
		s.fix(i)
	}
	a.idx = -1
}
