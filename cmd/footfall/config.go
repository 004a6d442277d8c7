package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
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

	if err := c.check(); err != nil {
		return c, err
	}
	return c, nil
}

func readFile(name, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("%s: %v", name, err)
	}
	return b, nil
}

// check refuses settings that are each valid but do not go together, and
// a node with no way to verify credentials. It completes the drain spread,
// which depends on the shutdown timeout.
func (c *config) check() error {
	if c.Addr == "" {
		return configErrorf("FOOTFALL_ADDR must not be empty")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return configErrorf("FOOTFALL_TLS_CERT and FOOTFALL_TLS_KEY go together: set both or neither")
	}
	if c.DrainSpread < 0 { // not set: half the shutdown timeout, at most 5 s
		c.DrainSpread = min(c.ShutdownTimeout/2, defaultDrainSpread)
	}
	if c.DrainSpread >= c.ShutdownTimeout {
		return configErrorf("FOOTFALL_DRAIN_SPREAD (%v) must be less than FOOTFALL_SHUTDOWN_TIMEOUT (%v): the streams must be told to go before the node stops", c.DrainSpread, c.ShutdownTimeout)
	}
	if c.MaxMessageBytes > c.MaxFrameBytes {
		return configErrorf("FOOTFALL_MAX_MESSAGE_BYTES (%d) must not exceed FOOTFALL_MAX_FRAME_BYTES (%d)", c.MaxMessageBytes, c.MaxFrameBytes)
	}
	if !strings.Contains(c.ValkeyURL, "://") && strings.Contains(c.ValkeyURL, "@") {
		// Cluster seeds are host:port; credentials there would be quoted
		// back in the dial error.
		return configErrorf("FOOTFALL_VALKEY_URL: cluster seeds are host:port without credentials; give a password in a redis:// or valkey:// URL")
	}
	if strings.Contains(c.ValkeyURL, "://") {
		// A URL that does not parse is named without its text: the error
		// of url.Parse quotes it, password included.
		if _, err := url.Parse(c.ValkeyURL); err != nil {
			return configErrorf("FOOTFALL_VALKEY_URL is not a valid URL (%s): check the escaping of its user name and password", redactURL(c.ValkeyURL))
		}
	}
	if !c.Dev && c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKSURL == "" {
		return configErrorf("no credentials configured: set FOOTFALL_JWT_SECRET, FOOTFALL_JWT_PUBLIC_KEY or FOOTFALL_JWT_JWKS_URL (or run with --dev)")
	}
	return nil
}
