package delivery

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// A list read before an Add or Remove keeps what it held: the delivery
// goroutine may be ranging over it.
func TestListCopyOnWrite(t *testing.T) {
	var l List[int]
	if got := l.Load(); got != nil {
		t.Fatalf("zero List loads %v; want nil", got)
	}
	l.Add(1)
	l.Add(2)
	before := l.Load()
	l.Add(3)
	l.Remove(1)
	if !slices.Equal(before, []int{1, 2}) {
		t.Errorf("a slice loaded earlier changed to %v; want [1 2]", before)
	}
	if got := l.Load(); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("Load() = %v after Add(3), Remove(1); want [2 3]", got)
	}
	l.Remove(7) // absent: nothing happens
	if got := l.Load(); !slices.Equal(got, []int{2, 3}) {
		t.Errorf("Load() = %v after removing an absent item; want [2 3]", got)
	}
}

// Hooks are called in registration order; a cancelled one is not called
// again, and cancel is idempotent.
func TestHooksCallAndCancel(t *testing.T) {
	var hs Hooks[string]
	var got []string
	c1 := hs.Add(func(v string) { got = append(got, "1:"+v) })
	c2 := hs.Add(func(v string) { got = append(got, "2:"+v) })
	hs.Call("a")
	c1()
	c1()
	hs.Call("b")
	c2()
	hs.Call("c")
	if want := []string{"1:a", "2:a", "2:b"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v; want %v", got, want)
	}
}

// Cancel waits for a running call of its handler; once it returns the
// handler is not called again.
func TestHooksCancelWaitsForHandler(t *testing.T) {
	var hs Hooks[int]
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	calls := 0
	cancel := hs.Add(func(int) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			close(entered)
			<-release
		}
	})
	go hs.Call(1)
	<-entered
	cancelled := make(chan struct{})
	go func() { cancel(); close(cancelled) }()
	select {
	case <-cancelled:
		t.Fatal("cancel returned while the handler was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not return after the handler did")
	}
	hs.Call(2)
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("handler called %d times; want 1 (none after cancel)", calls)
	}
}
