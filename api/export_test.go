package api

import "time"

// SetKeepaliveForTest shortens the WebSocket keepalive and write wait for
// a test; the returned function restores them. Tests that use it must not
// run in parallel with others.
func SetKeepaliveForTest(ping, write time.Duration) (restore func()) {
	oldPing, oldWrite := pingEvery, writeWait
	pingEvery, writeWait = ping, write
	return func() { pingEvery, writeWait = oldPing, oldWrite }
}
