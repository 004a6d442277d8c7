package alarm

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkAlarms measures booking and moving one alarm among N booked
// ones, as each connection does when its next coalesced message or
// keepalive falls due.
func BenchmarkAlarms(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var h Wheel
			far := time.Now().Add(time.Hour)
			as := make([]*Alarm, n)
			for i := range as {
				as[i] = New(func() {})
				h.Set(as[i], far.Add(time.Duration(i)*time.Millisecond))
			}
			b.ResetTimer()
			for i := range b.N {
				a := as[i%n]
				h.Set(a, far.Add(time.Duration(i%997)*time.Microsecond))
			}
			b.StopTimer()
			for _, a := range as {
				h.Set(a, time.Time{})
			}
		})
	}
}
