package main

// The IANA time zone database, embedded (about 450 KB): the container image
// (distroless, or any empty root) may have no /usr/share/zoneinfo, and
// FOOTFALL_TIMEZONE must still name any zone. time.LoadLocation uses the
// system's database when there is one and this copy otherwise.
// TestImageWorld (image_test.go) runs the binary in a root without zoneinfo.
import _ "time/tzdata"
