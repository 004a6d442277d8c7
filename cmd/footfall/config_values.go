package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/streams"
)

// The setters of the configuration table (config.settings): each parses
// one value and stores it.

// text stores a value with the spaces around it trimmed.
func text(dst *string) func(string) error {
	return func(v string) error { *dst = strings.TrimSpace(v); return nil }
}

// raw stores a value as given (secrets: every byte counts).
func raw(dst *string) func(string) error {
	return func(v string) error { *dst = v; return nil }
}

// list stores a comma list, without empty entries.
func list(dst *[]string) func(string) error {
	return func(v string) error {
		*dst = nil
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				*dst = append(*dst, o)
			}
		}
		return nil
	}
}

// duration stores a positive duration, at most limit (0: no limit).
func duration(dst *time.Duration, limit time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return fmt.Errorf("must be a positive duration such as 30s, not %q", v)
		}
		if limit > 0 && d > limit {
			return fmt.Errorf("must be at most %v, not %q", limit, v)
		}
		*dst = d
		return nil
	}
}

// defaultDrainSpread is the longest drain spread footfall picks itself.
const defaultDrainSpread = 5 * time.Second

// drainSpread stores a duration of zero or more; unset, it stays -1 and
// parseConfig derives it from the shutdown timeout.
func drainSpread(dst *time.Duration) func(string) error {
	*dst = -1
	set := grace(dst)
	return func(v string) error {
		if strings.TrimSpace(v) == "" {
			return nil
		}
		return set(v)
	}
}

// grace stores a duration of zero or more, at most an hour.
func grace(dst *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 || d > time.Hour {
			return fmt.Errorf("must be a duration from 0s to 1h such as 5s, not %q", v)
		}
		*dst = d
		return nil
	}
}

// communities stores "*" or a comma list of valid community ids.
func communities(dst *[]string) func(string) error {
	return func(v string) error {
		*dst = nil
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if p != "*" {
				id, ok := streams.NormalizeCommunityID(p)
				if !ok {
					return fmt.Errorf("must be * or community ids ([0-9a-fA-F-]+), not %q", p)
				}
				p = id
			}
			*dst = append(*dst, p)
		}
		return nil
	}
}

func positiveInt(dst *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 {
			return fmt.Errorf("must be a positive integer, not %q", v)
		}
		*dst = n
		return nil
	}
}

func positiveFloat(dst *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("must be a positive number, not %q", v)
		}
		*dst = f
		return nil
	}
}

// cidrs stores a comma list of IPs (one address each) and CIDRs.
func cidrs(dst *[]*net.IPNet) func(string) error {
	return func(v string) error {
		*dst = nil
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if !strings.Contains(p, "/") {
				if ip := net.ParseIP(p); ip != nil && ip.To4() != nil {
					p += "/32"
				} else {
					p += "/128"
				}
			}
			_, n, err := net.ParseCIDR(p)
			if err != nil {
				return fmt.Errorf("%q is not an IP or CIDR", p)
			}
			*dst = append(*dst, n)
		}
		return nil
	}
}

// envName is the environment variable of a flag.
func envName(flag string) string {
	return "FOOTFALL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}
