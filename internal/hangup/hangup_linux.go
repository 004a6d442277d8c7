//go:build linux

package hangup

import (
	"errors"
	"sync"
	"syscall"
)

// Supported reports whether this platform has a Watcher (Linux: epoll).
const Supported = true

// Watcher notices when the peers of many connections send something or go
// away: one epoll set and one goroutine for all of them, instead of one
// goroutine blocked in a read per connection. Its connections stay with
// the runtime's network poller for everything else.
type Watcher struct {
	epfd  int
	wakeR int // the read end of a pipe that Close writes to
	wakeW int
	done  chan struct{}

	mu     sync.Mutex
	conns  map[int32]*entry
	gen    uint32
	closed bool
}

// entry is one watched connection. gen tells its registration from an
// earlier one of the same descriptor number.
type entry struct {
	rc   syscall.RawConn
	fd   int32
	gen  uint32
	gone func()
	// dropped counts the bytes of input read and dropped; past MaxInput
	// the peer counts as gone.
	dropped int
}

// events is what a connection is watched for: input, the peer's FIN, or
// an error; one event at a time, re-armed after it was handled.
const events = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// New starts a Watcher. Close it to stop its goroutine.
func New() (*Watcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	// The pipe is registered with generation 0, which no connection gets.
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, err
	}
	w := &Watcher{epfd: epfd, wakeR: p[0], wakeW: p[1], done: make(chan struct{}), conns: map[int32]*entry{}}
	go w.run()
	return w, nil
}

// Watch calls gone (on the Watcher's goroutine: it must not block) once
// the peer of conn closes or resets the connection. Input the peer sends
// meanwhile is read and dropped; a peer that sends more than MaxInput is
// reported gone too, so that it cannot keep the Watcher busy. Call the returned unwatch before closing
// conn; gone may still run once, shortly after unwatch, so it must be safe
// to call late.
func (w *Watcher) Watch(conn syscall.Conn, gone func()) (unwatch func(), err error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := int32(-1)
	if err := rc.Control(func(d uintptr) { fd = int32(d) }); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	w.gen++
	if w.gen == 0 {
		w.gen = 1
	}
	e := &entry{rc: rc, fd: fd, gen: w.gen, gone: gone}
	if err := syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), e.event()); err != nil {
		return nil, err
	}
	w.conns[fd] = e
	return func() { w.unwatch(e) }, nil
}

func (e *entry) event() *syscall.EpollEvent {
	return &syscall.EpollEvent{Events: events, Fd: e.fd, Pad: int32(e.gen)}
}

func (w *Watcher) unwatch(e *entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns[e.fd] == e {
		delete(w.conns, e.fd)
		_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(e.fd), nil)
	}
}

// Watching returns the number of connections watched.
func (w *Watcher) Watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// Close stops the Watcher; connections still watched are no longer.
func (w *Watcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	w.mu.Unlock()
	_, _ = syscall.Write(w.wakeW, []byte{1})
	<-w.done
	w.mu.Lock()
	w.conns = nil
	w.mu.Unlock()
	syscall.Close(w.epfd)
	syscall.Close(w.wakeR)
	syscall.Close(w.wakeW)
}

// run is the Watcher's goroutine: it waits in epoll_wait (a blocking
// system call, on a thread of its own) until Close writes to the pipe.
func (w *Watcher) run() {
	defer close(w.done)
	evs := make([]syscall.EpollEvent, 128)
	var gone []func()
	for {
		n, err := syscall.EpollWait(w.epfd, evs, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return // EBADF and the like: nothing left to wait for
		}
		gone = gone[:0]
		w.mu.Lock()
		for _, ev := range evs[:n] {
			if ev.Pad == 0 && ev.Fd == int32(w.wakeR) {
				w.mu.Unlock()
				return
			}
			e := w.conns[ev.Fd]
			if e == nil || e.gen != uint32(ev.Pad) {
				continue // unwatched since
			}
			if e.ended() {
				delete(w.conns, e.fd)
				_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(e.fd), nil)
				gone = append(gone, e.gone)
				continue
			}
			// Input without an end: dropped; watch again.
			_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_MOD, int(e.fd), e.event())
		}
		w.mu.Unlock()
		for i, f := range gone {
			f()
			gone[i] = nil
		}
	}
}

// ended reads what the peer sent without blocking and reports whether the
// connection has ended (end of file, an error, or closed on this side).
func (e *entry) ended() bool {
	ended := false
	err := e.rc.Control(func(fd uintptr) {
		var b [256]byte
		for range 16 { // a peer that keeps sending gets the next turn
			n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_DONTWAIT)
			switch {
			case n > 0:
				e.dropped += n
				if e.dropped > MaxInput {
					ended = true
					return
				}
				continue
			case err == nil: // n == 0: the peer's FIN
				ended = true
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
			default:
				ended = true
			}
			return
		}
	})
	return ended || err != nil
}
