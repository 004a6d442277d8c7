package main

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted, an ascending slice; 0 when it is empty.
func percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	switch {
	case n == 0:
		return 0
	case p <= 0:
		return sorted[0]
	case p >= 100:
		return sorted[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// summary is the distribution of durations (nanoseconds).
type summary struct {
	N             int
	P50, P99, Max time.Duration
}

// summarize sorts ns in place and summarizes it.
func summarize(ns []int64) summary {
	slices.Sort(ns)
	s := summary{N: len(ns)}
	if len(ns) > 0 {
		s.P50 = time.Duration(percentile(ns, 50))
		s.P99 = time.Duration(percentile(ns, 99))
		s.Max = time.Duration(ns[len(ns)-1])
	}
	return s
}

// ms are the summary's p50, p99 and max in milliseconds, to 2 places.
func (s summary) ms() (p50, p99, maxMS float64) {
	return round(ms(s.P50), 2), round(ms(s.P99), 2), round(ms(s.Max), 2)
}

// extractInt finds key (for example `"t":`) in a raw JSON message and
// parses the integer after it, without decoding the message: the clients
// of the harness do as little work per message as possible.
func extractInt(msg, key []byte) (int64, bool) {
	i := bytes.Index(msg, key)
	if i < 0 {
		return 0, false
	}
	b := msg[i+len(key):]
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg, b = true, b[1:]
	}
	var v int64
	digits := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false // overflow
		}
		v = v*10 + d
		digits++
	}
	if digits == 0 {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// maxPerWindow returns the largest number of times (ascending
// nanoseconds) that fall in any window of the given width.
func maxPerWindow(times []int64, width time.Duration) int {
	best, lo := 0, 0
	for hi := range times {
		for times[hi]-times[lo] >= int64(width) {
			lo++
		}
		if n := hi - lo + 1; n > best {
			best = n
		}
	}
	return best
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianInto sets every figure that fields gives a pointer to (an *int,
// *int64 or *float64) in m to the median of that figure over rs; whole
// numbers are rounded. The other fields of m stay as they are.
func medianInto[T any](m *T, rs []T, fields func(*T) []any) {
	dst := fields(m)
	for i, p := range dst {
		xs := make([]float64, len(rs))
		for j := range rs {
			switch v := fields(&rs[j])[i].(type) {
			case *int:
				xs[j] = float64(*v)
			case *int64:
				xs[j] = float64(*v)
			case *float64:
				xs[j] = *v
			}
		}
		med := median(xs)
		switch v := p.(type) {
		case *int:
			*v = int(med + 0.5)
		case *int64:
			*v = int64(med + 0.5)
		case *float64:
			*v = med
		default:
			panic(fmt.Sprintf("medianInto: field %d is a %T", i, p))
		}
	}
}

// phaseAt is the pi-th phase of every run that has one.
func phaseAt[R, P any](rs []R, pi int, phases func(R) []P) []P {
	var ps []P
	for _, r := range rs {
		if ph := phases(r); pi < len(ph) {
			ps = append(ps, ph[pi])
		}
	}
	return ps
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a/b, 3)
}

// errCounts counts errors by message (cut to 160 bytes).
type errCounts map[string]int

func (e *errCounts) add(err error) {
	if *e == nil {
		*e = errCounts{}
	}
	msg := err.Error()
	if len(msg) > 160 {
		msg = msg[:160]
	}
	(*e)[msg]++
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round(x float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(x*p) / p
}
