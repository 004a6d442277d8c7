package streams_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/footfall/footfall/streams"
)

// reference is docs/protocol.md, credentials's pattern as a regular expression, with
// footfall's length cap: what NormalizeCommunityID must accept.
var reference = regexp.MustCompile(`^[0-9a-fA-F-]+$`)

func check(t *testing.T, id string) {
	t.Helper()
	got, ok := streams.NormalizeCommunityID(id)
	want := id != "" && len(id) <= streams.MaxCommunityIDLen && reference.MatchString(id)
	if ok != want {
		t.Fatalf("NormalizeCommunityID(%q) ok = %v; want %v", id, ok, want)
	}
	if ok && got != strings.ToLower(id) {
		t.Fatalf("NormalizeCommunityID(%q) = %q; want %q", id, got, strings.ToLower(id))
	}
	if !ok && got != "" {
		t.Fatalf("NormalizeCommunityID(%q) = %q for an invalid id; want \"\"", id, got)
	}
}

func TestNormalizeCommunityID(t *testing.T) {
	for _, id := range []string{
		"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000", "-", "0", "abcdef", "ABCDEF",
		"", "g", "123e4567 e89b", "../x", "ünï", "12\n34", "%41", strings.Repeat("a", 64), strings.Repeat("a", 65),
	} {
		check(t, id)
	}
}

// FuzzNormalizeCommunityID holds the hand-written check to the pattern.
func FuzzNormalizeCommunityID(f *testing.F) {
	for _, s := range []string{"123e4567-e89b-12d3-a456-426614174000", "ABC-def", "xyz", "", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) { check(t, id) })
}
