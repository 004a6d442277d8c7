package streams

import (
	"sync"
	"time"
)

// The node's alarms: one timer for every client's next due time (coalescing
// windows, keepalives, expiry), kept by the Hub in a heap.

// Alarm is a wake-up call that a subscriber books with its Hub: the time its
// next coalesced message is due, its next keepalive, its credential's
// expiry. A Hub serves all its alarms with one runtime timer and no parked
// goroutine, so that an idle connection costs no timer of its own.
type Alarm struct {
	fire func()
	at   time.Time
	idx  int // position in the Hub's heap; -1 when not booked
}

// NewAlarm returns an unbooked alarm that calls fire when it rings. fire
// runs on a goroutine of the Hub's timer and must not block: it should only
// record and hand work on (start a writer goroutine).
func NewAlarm(fire func()) *Alarm { return &Alarm{fire: fire, idx: -1} }

// alarms is a min-heap of booked alarms served by one time.AfterFunc timer.
// The timer's goroutine only exists while it rings, so a Hub with no alarm
// booked holds no goroutine.
type alarms struct {
	mu    sync.Mutex
	heap  []*Alarm
	timer *time.Timer
	armed time.Time // the time the timer is set for; zero when stopped
}

// SetAlarm books a to ring at at, replacing its previous time; a zero at
// cancels it. An alarm rings once per booking.
func (h *Hub) SetAlarm(a *Alarm, at time.Time) {
	s := &h.alarms
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
func (s *alarms) arm() {
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
func (s *alarms) ring() {
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

func (s *alarms) less(i, j int) bool { return s.heap[i].at.Before(s.heap[j].at) }

func (s *alarms) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.heap[i].idx = i
	s.heap[j].idx = j
}

func (s *alarms) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !s.less(j, i) {
			break
		}
		s.swap(i, j)
		j = i
	}
}

func (s *alarms) down(i int) bool {
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

func (s *alarms) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *alarms) remove(i int) {
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
