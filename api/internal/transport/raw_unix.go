//go:build unix

package transport

import (
	"errors"
	"syscall"
)

// rawWriteSupported says whether footfall may use the socket itself: try
// WebSocket frames without blocking (WS.SendNow) and wait for
// input in a shallow stack (waitConnReadable).
const rawWriteSupported = true

// rawWriteFD makes one write(2) on a non-blocking socket.
func rawWriteFD(fd uintptr, b []byte) (int, error) {
	return syscall.Write(int(fd), b)
}

// rawWouldBlock reports whether a raw write failed only because the socket
// is full (or was interrupted): the writer goroutine then waits for it.
func rawWouldBlock(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR)
}

// rawReadable is a syscall.RawConn.Read callback: true (done) when the
// socket has input, an end of file or an error to report, false (wait for
// input) when a peek finds nothing yet.
func rawReadable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return !rawWouldBlock(err)
}
