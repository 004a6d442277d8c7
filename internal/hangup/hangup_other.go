//go:build !linux

package hangup

import (
	"errors"
	"syscall"
)

// Supported reports whether this platform has a Watcher.
const Supported = false

// Watcher is not available on this platform: New fails.
type Watcher struct{}

// New returns errors.ErrUnsupported.
func New() (*Watcher, error) { return nil, errors.ErrUnsupported }

// Watch fails: there is no Watcher on this platform.
func (*Watcher) Watch(syscall.Conn, func()) (func(), error) { return nil, errors.ErrUnsupported }

// Watching returns 0.
func (*Watcher) Watching() int { return 0 }

// Close does nothing.
func (*Watcher) Close() {}
