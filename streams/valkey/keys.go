package valkey

import (
	"strconv"
	"time"

	"github.com/footfall/footfall/streams"
)

// Key names of the global keys.
const (
	keyTTLIndex = "ff:ttl"
	keyLeases   = "ff:leases"
	chanRevoked = "ff:revoked"
)

// common returns the leading arguments of every community script (see
// scripts.go) for the time now.
func (b *Bus) common(now time.Time) []string {
	mid := streams.Midnight(now, b.opts.Location)
	next := streams.Midnight(mid.Add(36*time.Hour), b.opts.Location)
	return []string{
		strconv.FormatInt(now.UnixMilli(), 10),
		strconv.FormatInt(mid.UnixMilli(), 10),
		streams.Day(now, b.opts.Location),
		strconv.FormatInt(next.Add(dayGrace).UnixMilli(), 10),
		strconv.FormatInt(now.Unix(), 10),
		newEpoch(),
	}
}

func metaKey(community string) string      { return "ff:{" + community + "}:m" }
func eventChannel(community string) string { return "ff:{" + community + "}:e" }
func ttlKey(community string) string       { return "ff:{" + community + "}:t" }
func leaseKey(lease string) string         { return "ff:lease:" + lease }
func leaseCommsKey(lease string) string    { return "ff:lease:" + lease + ":c" }
func sessionKey(id string) string          { return "ff:sess:" + id }
