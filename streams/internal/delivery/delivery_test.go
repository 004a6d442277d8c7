package delivery

import (
	"testing"
	"time"
)

// Items pushed from a handler, and before Run starts, come out in order;
// Run returns once stop is closed.
func TestQueueOrderAndStop(t *testing.T) {
	q := New[int]()
	q.Push(0)
	stop := make(chan struct{})
	got := make(chan int, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.Run(stop, func(i int) {
			if i < 50 {
				q.Push(i + 1) // a handler may push: it never blocks
			}
			got <- i
		})
	}()
	for want := 0; want <= 50; want++ {
		select {
		case i := <-got:
			if i != want {
				t.Fatalf("item %d came out as %d", want, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("item %d not delivered", want)
		}
	}
	if n := q.Len(); n != 0 {
		t.Fatalf("Len() = %d after everything was handled; want 0", n)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after stop")
	}
}
