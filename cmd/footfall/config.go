package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// configError is a bad or missing setting: footfall says so in one line and
// exits with code 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// config is every setting of CONTRACT section 1.
type config struct {
	Dev               bool
	Addr              string
	ValkeyURL         string
	JWTSecret         string
	JWTPublicKey      string
	JWTAudience       string
	JWTIssuer         string
	APIKey            string
	AllowedOrigins    []string
	PresenceTTL       time.Duration
	DashboardInterval time.Duration
	Timezone          *time.Location
	LogFormat         string
	TLSCert, TLSKey   string
	ShutdownTimeout   time.Duration
	TrustedProxies    []*net.IPNet
	ConnRatePerIP     float64
	MaxConnsPerIP     int
	MessageRate       float64
	MessageBurst      int
	MaxMessageBytes   int
	MaxFrameBytes     int
	MaxTokenBytes     int
	MaxTokenComms     int
	MaxBodyBytes      int
	MaxBatch          int
}

// setting is one configuration item: a flag and its environment variable.
type setting struct {
	flag, env, def, usage string
}

var settings = []setting{
	{"addr", "FOOTFALL_ADDR", ":8080", "listen address"},
	{"valkey-url", "FOOTFALL_VALKEY_URL", "", "Valkey URL (redis://, rediss://, valkey://, valkeys://) or comma-separated cluster seeds; empty = embedded in-memory bus"},
	{"jwt-secret", "FOOTFALL_JWT_SECRET", "", "HS256 secret"},
	{"jwt-public-key", "FOOTFALL_JWT_PUBLIC_KEY", "", "path to a PEM public key (RS256, ES256 or EdDSA)"},
	{"jwt-audience", "FOOTFALL_JWT_AUDIENCE", "", "required JWT audience, checked when set"},
	{"jwt-issuer", "FOOTFALL_JWT_ISSUER", "", "required JWT issuer, checked when set"},
	{"api-key", "FOOTFALL_API_KEY", "", "bearer key of the service API; empty disables it"},
	{"allowed-origins", "FOOTFALL_ALLOWED_ORIGINS", "", "comma list of allowed Origins for WebSocket/SSE; * allows all; empty = same host"},
	{"presence-ttl", "FOOTFALL_PRESENCE_TTL", "30s", "how long a visitor stays present after its last sign of life"},
	{"dashboard-interval", "FOOTFALL_DASHBOARD_INTERVAL", "30s", "periodic dashboard push"},
	{"timezone", "FOOTFALL_TIMEZONE", "UTC", "IANA zone that defines today"},
	{"log-format", "FOOTFALL_LOG_FORMAT", "json", "json or text"},
	{"tls-cert", "FOOTFALL_TLS_CERT", "", "PEM certificate: serve HTTPS/WSS directly"},
	{"tls-key", "FOOTFALL_TLS_KEY", "", "PEM private key for --tls-cert"},
	{"shutdown-timeout", "FOOTFALL_SHUTDOWN_TIMEOUT", "10s", "how long a graceful shutdown may take"},
	{"trusted-proxies", "FOOTFALL_TRUSTED_PROXIES", "", "comma list of proxy CIDRs whose X-Forwarded-For is believed; empty = none"},
	{"conn-rate-per-ip", "FOOTFALL_CONN_RATE_PER_IP", "20", "new stream connections per client IP per second (burst twice that)"},
	{"max-conns-per-ip", "FOOTFALL_MAX_CONNS_PER_IP", "200", "open stream connections per client IP"},
	{"message-rate", "FOOTFALL_MESSAGE_RATE", "10", "inbound WebSocket messages per connection per second"},
	{"message-burst", "FOOTFALL_MESSAGE_BURST", "20", "inbound WebSocket message burst per connection"},
	{"max-message-bytes", "FOOTFALL_MAX_MESSAGE_BYTES", "4096", "largest client message; larger gets message_too_large"},
	{"max-frame-bytes", "FOOTFALL_MAX_FRAME_BYTES", "65536", "largest WebSocket frame; larger closes with 1009"},
	{"max-token-bytes", "FOOTFALL_MAX_TOKEN_BYTES", "8192", "longest accepted JWT"},
	{"max-token-communities", "FOOTFALL_MAX_TOKEN_COMMUNITIES", "1000", "most entries in a JWT's communities claim"},
	{"max-body-bytes", "FOOTFALL_MAX_BODY_BYTES", "1048576", "largest service-API request body"},
	{"max-batch", "FOOTFALL_MAX_BATCH", "1000", "most events in one visitor-events batch"},
}

// parseConfig reads flags over environment variables over defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("footfall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "development mode: in-memory bus, random JWT secret and API key printed once, POST /dev/token")
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		values[s.flag] = fs.String(s.flag, def, s.usage+" ("+s.env+")")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: footfall [flags]\n       footfall token --sub ID [--community ID=ROLE]... [--ttl 1h] [--admin]\n\nflags (each also an environment variable):\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, configErrorf("%v", err)
	}
	if fs.NArg() > 0 {
		return config{}, configErrorf("unexpected argument %q (subcommands: token)", fs.Arg(0))
	}
	get := func(name string) string { return strings.TrimSpace(*values[name]) }
	c := config{
		Dev:          *dev,
		Addr:         get("addr"),
		ValkeyURL:    get("valkey-url"),
		JWTSecret:    *values["jwt-secret"],
		JWTPublicKey: get("jwt-public-key"),
		JWTAudience:  get("jwt-audience"),
		JWTIssuer:    get("jwt-issuer"),
		APIKey:       *values["api-key"],
		LogFormat:    get("log-format"),
		TLSCert:      get("tls-cert"),
		TLSKey:       get("tls-key"),
	}
	for _, o := range strings.Split(get("allowed-origins"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	var err error
	if c.PresenceTTL, err = positiveDuration("presence-ttl", get("presence-ttl")); err != nil {
		return c, err
	}
	if c.DashboardInterval, err = positiveDuration("dashboard-interval", get("dashboard-interval")); err != nil {
		return c, err
	}
	if c.ShutdownTimeout, err = positiveDuration("shutdown-timeout", get("shutdown-timeout")); err != nil {
		return c, err
	}
	if c.Timezone, err = time.LoadLocation(get("timezone")); err != nil {
		return c, configErrorf("FOOTFALL_TIMEZONE: unknown time zone %q", get("timezone"))
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return c, configErrorf("FOOTFALL_LOG_FORMAT must be json or text, not %q", c.LogFormat)
	}
	if c.Addr == "" {
		return c, configErrorf("FOOTFALL_ADDR must not be empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, configErrorf("FOOTFALL_TLS_CERT and FOOTFALL_TLS_KEY go together: set both or neither")
	}
	for _, p := range strings.Split(get("trusted-proxies"), ",") {
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
			return c, configErrorf("FOOTFALL_TRUSTED_PROXIES: %q is not an IP or CIDR", p)
		}
		c.TrustedProxies = append(c.TrustedProxies, n)
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{"max-conns-per-ip", &c.MaxConnsPerIP}, {"message-burst", &c.MessageBurst},
		{"max-message-bytes", &c.MaxMessageBytes}, {"max-frame-bytes", &c.MaxFrameBytes},
		{"max-token-bytes", &c.MaxTokenBytes}, {"max-token-communities", &c.MaxTokenComms},
		{"max-body-bytes", &c.MaxBodyBytes}, {"max-batch", &c.MaxBatch},
	}
	for _, it := range ints {
		v, err := strconv.Atoi(get(it.name))
		if err != nil || v <= 0 {
			return c, configErrorf("%s must be a positive integer, not %q", envName(it.name), get(it.name))
		}
		*it.dst = v
	}
	floats := []struct {
		name string
		dst  *float64
	}{{"conn-rate-per-ip", &c.ConnRatePerIP}, {"message-rate", &c.MessageRate}}
	for _, it := range floats {
		v, err := strconv.ParseFloat(get(it.name), 64)
		if err != nil || v <= 0 {
			return c, configErrorf("%s must be a positive number, not %q", envName(it.name), get(it.name))
		}
		*it.dst = v
	}
	if c.MaxMessageBytes > c.MaxFrameBytes {
		return c, configErrorf("FOOTFALL_MAX_MESSAGE_BYTES (%d) must not exceed FOOTFALL_MAX_FRAME_BYTES (%d)", c.MaxMessageBytes, c.MaxFrameBytes)
	}
	if !c.Dev && c.JWTSecret == "" && c.JWTPublicKey == "" {
		return c, configErrorf("no credentials configured: set FOOTFALL_JWT_SECRET or FOOTFALL_JWT_PUBLIC_KEY (or run with --dev)")
	}
	return c, nil
}

func positiveDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, configErrorf("%s must be a positive duration such as 30s, not %q", envName(name), v)
	}
	return d, nil
}

// envName is the environment variable of a flag.
func envName(flag string) string {
	return "FOOTFALL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func readFile(name, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("%s: %v", name, err)
	}
	return b, nil
}
