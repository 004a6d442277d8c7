package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/footfall/footfall/streams"
)

// configError is a bad or missing setting: footfall says so in one line and
// exits with code 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// config is every setting of the README's configuration table.
type config struct {
	Dev               bool
	Addr              string
	ValkeyURL         string
	JWTSecret         string
	JWTPublicKey      string
	JWTJWKSURL        string
	AuthHookURL       string
	JWTAudience       string
	JWTIssuer         string
	APIKey            string
	AllowedOrigins    []string
	PresenceTTL       time.Duration
	LeaveGrace        time.Duration
	PublicComms       []string
	DashboardInterval time.Duration
	Timezone          *time.Location
	LogFormat         string
	TLSCert, TLSKey   string
	ShutdownTimeout   time.Duration
	DrainSpread       time.Duration
	IdleTimeout       time.Duration
	TrustedProxies    []*net.IPNet
	ConnRatePerIP     float64
	MaxConnsPerIP     int
	RequestRatePerIP  float64
	MessageRate       float64
	MessageBurst      int
	MaxMessageBytes   int
	MaxFrameBytes     int
	MaxTokenBytes     int
	MaxTokenComms     int
	MaxBodyBytes      int
	MaxBatch          int
	Webhook           webhookConfig

	// DevIgnored names the variables --dev ignored because they were set
	// (credentials, the bus): run says so once.
	DevIgnored []string
	// secrets are the values that must never appear in output (see
	// redactor); filled from the settings marked secret.
	secrets []string
}

// minSecretBytes is the shortest HS256 secret or API key footfall starts
// with outside --dev: 32 bytes, the HMAC-SHA256 output size.
const minSecretBytes = 32

// maxIdleTimeout bounds how long an idle keep-alive HTTP connection stays
// open.
const maxIdleTimeout = 2 * time.Minute

// devAddr is where --dev listens unless an address is given: this machine
// only.
const devAddr = "127.0.0.1:8080"

// setting is one configuration item: a flag, its environment variable
// (FOOTFALL_ and the flag's name in upper case), its default and where its
// value goes.
type setting struct {
	flag, def, usage string
	// set parses a value into the config; its error names no value of a
	// secret setting.
	set func(v string) error
	// devDef replaces def under --dev.
	devDef string
	// devIgnores: --dev ignores the setting (it builds its own world: bus
	// and credentials).
	devIgnores bool
	// secret: the value never appears in output: it is no flag default and
	// is redacted from errors and logs (see secretSetting).
	secret bool
	// minBytes is the shortest accepted value of a secret, outside --dev.
	minBytes int
	// secretPart returns the secret inside a value that is not secret as a
	// whole (the password of a Valkey URL).
	secretPart func(v string) string
}

func (s setting) env() string { return envName(s.flag) }

// secretSetting marks s secret: never a flag default, never in output, and
// ignored by --dev (which makes its own credentials). A value shorter than
// minBytes is refused outside --dev (0: any length).
func secretSetting(s setting, minBytes int) setting {
	s.secret, s.devIgnores, s.minBytes = true, true, minBytes
	return s
}

// settings is the configuration table; each setting stores its value into
// c. To add a setting, add a line.
func (c *config) settings() []setting {
	return append([]setting{
		{flag: "addr", def: ":8080", devDef: devAddr, usage: "listen address (--dev: " + devAddr + ")", set: text(&c.Addr)},
		{flag: "valkey-url", usage: "Valkey URL (redis://, rediss://, valkey://, valkeys://) or comma-separated cluster seeds; empty = embedded in-memory bus", set: text(&c.ValkeyURL), devIgnores: true, secretPart: urlPassword},
		secretSetting(setting{flag: "jwt-secret", usage: "HS256 secret, at least 32 bytes", set: raw(&c.JWTSecret)}, minSecretBytes),
		{flag: "jwt-public-key", usage: "path to a PEM public key (RS256, ES256 or EdDSA)", set: text(&c.JWTPublicKey), devIgnores: true},
		{flag: "auth-hook-url", usage: "the platform's endpoint that decides requests carrying its own cookies and no footfall credential", set: text(&c.AuthHookURL), devIgnores: true, secretPart: urlPassword},
		{flag: "jwt-jwks-url", usage: "URL of a JWKS (RS256, ES256, EdDSA keys with kid) that signs tokens", set: text(&c.JWTJWKSURL), devIgnores: true, secretPart: urlPassword},
		{flag: "jwt-audience", usage: "required JWT audience, checked when set", set: text(&c.JWTAudience)},
		{flag: "jwt-issuer", usage: "required JWT issuer, checked when set", set: text(&c.JWTIssuer)},
		secretSetting(setting{flag: "api-key", usage: "bearer key of the service API, at least 32 bytes; empty disables it", set: raw(&c.APIKey)}, minSecretBytes),
		{flag: "allowed-origins", usage: "comma list of allowed Origins for WebSocket/SSE; * allows all; empty = same host", set: list(&c.AllowedOrigins)},
		{flag: "presence-ttl", def: "30s", usage: "how long a visitor stays present after its last sign of life", set: duration(&c.PresenceTTL, 0)},
		{flag: "leave-grace", def: "5s", usage: "how long a visitor whose last stream connection closed stays present (0s = leaves at once)", set: grace(&c.LeaveGrace)},
		{flag: "public-communities", usage: "* or comma list of community ids whose visitors stream and count admit guests (in --dev: * unless set)", set: communities(&c.PublicComms)},
		{flag: "dashboard-interval", def: "30s", usage: "periodic dashboard push", set: duration(&c.DashboardInterval, 0)},
		{flag: "timezone", def: "UTC", usage: "IANA zone that defines today", set: func(v string) (err error) {
			if c.Timezone, err = time.LoadLocation(v); err != nil {
				return fmt.Errorf("unknown time zone %q", v)
			}
			return nil
		}},
		{flag: "log-format", def: "json", usage: "json or text", set: func(v string) error {
			if v != "json" && v != "text" {
				return fmt.Errorf("must be json or text, not %q", v)
			}
			c.LogFormat = v
			return nil
		}},
		{flag: "tls-cert", usage: "PEM certificate: serve HTTPS/WSS directly", set: text(&c.TLSCert)},
		{flag: "tls-key", usage: "PEM private key for --tls-cert", set: text(&c.TLSKey)},
		{flag: "shutdown-timeout", def: "10s", usage: "how long a graceful shutdown may take", set: duration(&c.ShutdownTimeout, 0)},
		{flag: "drain-spread", usage: "at shutdown, how long the node takes to tell its streams to go, evenly (0s = all at once; less than the shutdown timeout; default: half of it, at most 5s)", set: drainSpread(&c.DrainSpread)},
		{flag: "idle-timeout", def: "2m", usage: "how long an idle keep-alive HTTP connection stays open (at most 2m)", set: duration(&c.IdleTimeout, maxIdleTimeout)},
		{flag: "trusted-proxies", usage: "comma list of proxy CIDRs whose X-Forwarded-For is believed; empty = none", set: cidrs(&c.TrustedProxies)},
		{flag: "conn-rate-per-ip", def: "20", usage: "new stream connections per client IP per second (burst twice that)", set: positiveFloat(&c.ConnRatePerIP)},
		{flag: "max-conns-per-ip", def: "200", usage: "open stream connections per client IP", set: positiveInt(&c.MaxConnsPerIP)},
		{flag: "request-rate-per-ip", def: "100", usage: "REST snapshot requests per client IP (IPv6: per /64) per second (burst twice that)", set: positiveFloat(&c.RequestRatePerIP)},
		{flag: "message-rate", def: "10", usage: "inbound WebSocket messages per connection per second", set: positiveFloat(&c.MessageRate)},
		{flag: "message-burst", def: "20", usage: "inbound WebSocket message burst per connection", set: positiveInt(&c.MessageBurst)},
		{flag: "max-message-bytes", def: "4096", usage: "largest client message; larger gets message_too_large", set: positiveInt(&c.MaxMessageBytes)},
		{flag: "max-frame-bytes", def: "65536", usage: "largest WebSocket frame; larger closes with 1009", set: positiveInt(&c.MaxFrameBytes)},
		{flag: "max-token-bytes", def: "8192", usage: "longest accepted JWT", set: positiveInt(&c.MaxTokenBytes)},
		{flag: "max-token-communities", def: "1000", usage: "most entries in a JWT's communities claim", set: positiveInt(&c.MaxTokenComms)},
		{flag: "max-body-bytes", def: "1048576", usage: "largest service-API request body", set: positiveInt(&c.MaxBodyBytes)},
		{flag: "max-batch", def: "1000", usage: "most events in one visitor-events batch", set: positiveInt(&c.MaxBatch)},
	}, c.webhookSettings()...)
}

// parseConfig reads flags over environment variables over defaults. Flag
// defaults are the static defaults only, never an environment value, so
// that usage text and flag errors cannot show a secret.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	table := c.settings()
	fs := flag.NewFlagSet("footfall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.Dev, "dev", false, "development mode: in-memory bus, fresh random JWT secret and API key printed once, POST /dev/token; ignores the credential and bus settings")
	flags := make([]*string, len(table))
	for i, s := range table {
		def := s.def
		if s.secret {
			def = ""
		}
		flags[i] = fs.String(s.flag, def, s.usage+" ("+s.env()+")")
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
		return config{}, configErrorf("unexpected argument %q (subcommands: token, healthcheck)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	for i, s := range table {
		v, explicit := s.def, true
		switch {
		case given[s.flag]:
			v = *flags[i]
		case getenv(s.env()) != "":
			v = getenv(s.env())
		default:
			explicit = false
		}
		switch {
		case c.Dev && s.devIgnores:
			if explicit {
				c.DevIgnored = append(c.DevIgnored, s.env())
			}
			v = s.def
		case c.Dev && !explicit && s.devDef != "":
			v = s.devDef
		}
		if s.secret && v != "" {
			c.secrets = append(c.secrets, v)
		}
		if s.secretPart != nil {
			if p := s.secretPart(v); p != "" {
				c.secrets = append(c.secrets, p)
			}
		}
		if s.secret && v != "" && len(v) < s.minBytes {
			return c, configErrorf("%s is shorter than %d bytes: use a random value of at least %d bytes (e.g. openssl rand -hex 32)", s.env(), s.minBytes, s.minBytes)
		}
		if err := s.set(v); err != nil {
			if s.secret {
				return c, configErrorf("%s is not valid", s.env())
			}
			return c, configErrorf("%s: %v", s.env(), err)
		}
	}

	if c.Addr == "" {
		return c, configErrorf("FOOTFALL_ADDR must not be empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, configErrorf("FOOTFALL_TLS_CERT and FOOTFALL_TLS_KEY go together: set both or neither")
	}
	if c.DrainSpread < 0 { // not set: half the shutdown timeout, at most 5 s
		c.DrainSpread = min(c.ShutdownTimeout/2, defaultDrainSpread)
	}
	if c.DrainSpread >= c.ShutdownTimeout {
		return c, configErrorf("FOOTFALL_DRAIN_SPREAD (%v) must be less than FOOTFALL_SHUTDOWN_TIMEOUT (%v): the streams must be told to go before the node stops", c.DrainSpread, c.ShutdownTimeout)
	}
	if c.MaxMessageBytes > c.MaxFrameBytes {
		return c, configErrorf("FOOTFALL_MAX_MESSAGE_BYTES (%d) must not exceed FOOTFALL_MAX_FRAME_BYTES (%d)", c.MaxMessageBytes, c.MaxFrameBytes)
	}
	if !strings.Contains(c.ValkeyURL, "://") && strings.Contains(c.ValkeyURL, "@") {
		// Cluster seeds are host:port; credentials there would be quoted
		// back in the dial error.
		return c, configErrorf("FOOTFALL_VALKEY_URL: cluster seeds are host:port without credentials; give a password in a redis:// or valkey:// URL")
	}
	if strings.Contains(c.ValkeyURL, "://") {
		// A URL that does not parse is named without its text: the error
		// of url.Parse quotes it, password included.
		if _, err := url.Parse(c.ValkeyURL); err != nil {
			return c, configErrorf("FOOTFALL_VALKEY_URL is not a valid URL (%s): check the escaping of its user name and password", redactURL(c.ValkeyURL))
		}
	}
	if !c.Dev && c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKSURL == "" {
		return c, configErrorf("no credentials configured: set FOOTFALL_JWT_SECRET, FOOTFALL_JWT_PUBLIC_KEY or FOOTFALL_JWT_JWKS_URL (or run with --dev)")
	}
	return c, nil
}

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

// urlUserinfo returns the bounds of the user information of a URL
// (scheme://userinfo@host...), or ok false. It does not parse the URL, so
// that it works on malformed ones too; the last @ ends the user
// information, as a password may hold an unescaped @.
func urlUserinfo(raw string) (start, end int, ok bool) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return 0, 0, false
	}
	j := strings.LastIndex(raw, "@")
	if j <= i+3 {
		return 0, 0, false
	}
	return i + 3, j, true
}

// urlPassword returns the password of a URL (or its whole user
// information when it has no colon, as redis://secret@host reads it):
// the secret part of FOOTFALL_VALKEY_URL.
func urlPassword(raw string) string {
	start, end, ok := urlUserinfo(raw)
	if !ok {
		return ""
	}
	info := raw[start:end]
	if _, pass, found := strings.Cut(info, ":"); found {
		return pass
	}
	return info
}

// redactURL replaces the password of a URL with ***.
func redactURL(raw string) string {
	start, end, ok := urlUserinfo(raw)
	if !ok {
		return raw
	}
	user, _, found := strings.Cut(raw[start:end], ":")
	if !found {
		return raw[:start] + "***" + raw[end:]
	}
	return raw[:start] + user + ":***" + raw[end:]
}

func readFile(name, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("%s: %v", name, err)
	}
	return b, nil
}

// redactor keeps secrets out of output: it replaces every secret value
// (and its JSON-escaped form, as a JSON log line would hold it) with
// [redacted] in log lines and error messages.
type redactor struct {
	olds [][]byte
}

var redactedMark = []byte("[redacted]")

func newRedactor(secrets []string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.olds = append(r.olds, []byte(s))
		if q, err := json.Marshal(s); err == nil {
			if esc := q[1 : len(q)-1]; string(esc) != s {
				r.olds = append(r.olds, esc)
			}
		}
	}
	return r
}

func (r *redactor) redact(p []byte) []byte {
	for _, old := range r.olds {
		if bytes.Contains(p, old) {
			p = bytes.ReplaceAll(p, old, redactedMark)
		}
	}
	return p
}

// writer returns w with secrets redacted from each write (a log line).
func (r *redactor) writer(w io.Writer) io.Writer {
	if len(r.olds) == 0 {
		return w
	}
	return redactingWriter{r: r, w: w}
}

type redactingWriter struct {
	r *redactor
	w io.Writer
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := rw.w.Write(rw.r.redact(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// err returns err with secrets redacted from its message; errors.Is and
// errors.As still see the original (a configError stays exit code 2).
func (r *redactor) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := string(r.redact([]byte(msg))); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
