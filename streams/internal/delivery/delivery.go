// Package delivery is what the memory and Valkey buses share to deliver:
// the queue between a bus's publishers (or valkey-go's receive callbacks)
// and the bus's one delivery goroutine (Queue), and the registries of the
// handlers that goroutine calls (List, Hooks).
//
// Why one goroutine and a queue rather than delivering on the publisher's
// goroutine: a handler may call back into the bus (Publish, Touch, even
// Subscribe). Delivering from the publisher would need a per-community
// delivery lock held across handler calls to keep Seq order, and a handler
// publishing to its own community would then wait on itself. With the
// queue, publishers only append (under whatever lock fixes their order)
// and never wait for handlers; the delivery goroutine holds no bus lock
// while a handler runs. Unbounded, because a publisher must never block or
// lose an event of a presence change it already made, and a receive
// callback must never block; handlers do not block by contract, and Len
// (a bus's Pending) is the length to watch.
package delivery

import "sync"

// Queue is an unbounded FIFO of T with one consumer (Run). Its zero value
// is not ready: use New.
type Queue[T any] struct {
	mu    sync.Mutex
	items []T
	wake  chan struct{} // capacity 1: "items is not empty"
}

// New returns an empty queue.
func New[T any]() *Queue[T] { return &Queue[T]{wake: make(chan struct{}, 1)} }

// Push appends it; it never blocks.
func (q *Queue[T]) Push(it T) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Len is the number of items waiting.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// take swaps out the queued items, handing back spare as the next buffer.
func (q *Queue[T]) take(spare []T) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = spare[:0]
	return items
}

// Run calls handle for every item, in order, until stop is closed (it
// checks between items). It is the delivery goroutine's whole loop.
func (q *Queue[T]) Run(stop <-chan struct{}, handle func(T)) {
	var batch []T
	var zero T
	for {
		select {
		case <-stop:
			return
		case <-q.wake:
		}
		batch = q.take(batch)
		for i, it := range batch {
			select {
			case <-stop:
				return
			default:
			}
			handle(it)
			batch[i] = zero // let the item's event go
		}
	}
}
