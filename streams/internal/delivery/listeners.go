package delivery

import (
	"slices"
	"sync"
	"sync/atomic"
)

// List is a copy-on-write list of listeners, the registry both buses keep
// per community (their subscriptions) and per bus (revocation and
// reconnection hooks). The delivery goroutine reads it with Load, without
// a lock; Add and Remove copy it under a mutex of its own, so they never
// wait for a handler. Its zero value is an empty list.
type List[L comparable] struct {
	mu sync.Mutex
	p  atomic.Pointer[[]L]
}

// Load returns the listeners as they are now. The slice is never changed
// in place: the caller may range over it while others Add and Remove.
func (l *List[L]) Load() []L {
	if p := l.p.Load(); p != nil {
		return *p
	}
	return nil
}

// Add appends x.
func (l *List[L]) Add(x L) {
	l.mu.Lock()
	defer l.mu.Unlock()
	xs := append(slices.Clone(l.Load()), x)
	l.p.Store(&xs)
}

// Remove drops every occurrence of x.
func (l *List[L]) Remove(x L) {
	l.mu.Lock()
	defer l.mu.Unlock()
	xs := slices.DeleteFunc(slices.Clone(l.Load()), func(y L) bool { return y == x })
	l.p.Store(&xs)
}

// hook is one registered handler. Its calls are serialized, and End waits
// for a running one, so that once a cancel function returns the handler is
// not called again (a handler must therefore not cancel itself).
type hook[T any] struct {
	h    func(T)
	mu   sync.Mutex // held while h runs
	done bool
}

// Call calls the handler with v unless the hook has ended.
func (k *hook[T]) Call(v T) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.done {
		k.h(v)
	}
}

// End stops the hook, waiting for a running call of its handler.
func (k *hook[T]) End() {
	k.mu.Lock()
	k.done = true
	k.mu.Unlock()
}

// Hooks is a List of Hooks: the handlers of one kind of notice (an event
// of a community, a revoked session, a reconnection). Its zero value is
// empty and ready.
type Hooks[T any] struct {
	list List[*hook[T]]
}

// Add registers h and returns its cancel function, which is idempotent and
// returns once h is not called again (it waits for a running call).
func (hs *Hooks[T]) Add(h func(T)) (cancel func()) {
	k := &hook[T]{h: h}
	hs.list.Add(k)
	var once sync.Once
	return func() {
		once.Do(func() {
			hs.list.Remove(k)
			k.End()
		})
	}
}

// Call calls every registered handler with v, in registration order. Only
// the delivery goroutine calls it, so each handler sees the notices in the
// order they were queued.
func (hs *Hooks[T]) Call(v T) {
	for _, k := range hs.list.Load() {
		k.Call(v)
	}
}
