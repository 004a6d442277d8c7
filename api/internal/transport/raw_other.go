//go:build !unix

package transport

// rawWriteSupported is false where footfall does not write to sockets
// itself: every frame goes through the writer goroutine.
const rawWriteSupported = false

func rawWriteFD(uintptr, []byte) (int, error) { return 0, nil }

func rawWouldBlock(error) bool { return false }

func rawReadable(uintptr) bool { return true }
