// Package hangup notices when the peers of many silent connections go
// away, without a goroutine per connection.
//
// footfall's SSE clients send nothing after their request, yet the node
// must learn at once when one leaves (its visitor leaves the community's
// count). A goroutine blocked in a read per connection does that, but on an
// idle node that goroutine is a large part of what a connection costs. On
// Linux a Watcher registers the connections with one epoll set of its own
// (the runtime's network poller keeps them too) and waits on it with one
// goroutine. Elsewhere New returns ErrUnsupported and callers keep their
// reader goroutine.
package hangup

import "errors"

// ErrClosed is returned by Watch after Close.
var ErrClosed = errors.New("hangup: watcher closed")

// MaxInput is how much a watched peer may send (read and dropped) before
// it counts as gone: an SSE client sends nothing after its request, and a
// peer that keeps sending must not keep the Watcher's goroutine busy.
const MaxInput = 64 << 10
