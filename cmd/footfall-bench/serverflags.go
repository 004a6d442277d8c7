package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// The flags every subcommand shares (which server to measure, where to
// pin it and the harness, how quiet the machine must be) and the steps
// every subcommand takes with them: prepare the harness, wait for a quiet
// machine, start a fresh server, measure, stop it, print the report.

// serverFlags are the flags that say which server to measure.
type serverFlags struct {
	target      string
	serverCPU   string
	clientCPU   string
	footfallBin string
	apiKey      string
	secret      string
	audience    string
	issuer      string
	serverPID   int
	serverEnv   multiFlag
	publishTo   string
	quiet       time.Duration
	quietMax    time.Duration
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (sf *serverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.target, "target", kindFootfall, "footfall (build and start it in --dev mode), baseline (the bare gorilla/websocket server), or the URL of a running footfall (with --api-key and --secret)")
	fs.StringVar(&sf.serverCPU, "server-cpu", "", "pin a started server to this CPU list (taskset -c)")
	fs.StringVar(&sf.clientCPU, "client-cpu", "", "pin the harness itself to this CPU list (re-executes under taskset -c)")
	fs.StringVar(&sf.footfallBin, "footfall-bin", "", "use this footfall binary instead of building ./cmd/footfall")
	fs.StringVar(&sf.apiKey, "api-key", os.Getenv("FOOTFALL_API_KEY"), "service API key of a --target URL")
	fs.StringVar(&sf.secret, "secret", os.Getenv("FOOTFALL_JWT_SECRET"), "HS256 secret of a --target URL (to mint client tokens)")
	fs.StringVar(&sf.audience, "jwt-audience", "", "aud of minted tokens (--target URL)")
	fs.StringVar(&sf.issuer, "jwt-issuer", "", "iss of minted tokens (--target URL)")
	fs.IntVar(&sf.serverPID, "server-pid", 0, "pid of a --target URL server, for its RSS and CPU (optional)")
	fs.StringVar(&sf.publishTo, "publish-to", "", "send the service-API publishes to this footfall URL (another node on the same Valkey, same --server-env FOOTFALL_API_KEY) instead of the measured one: cross-node delivery")
	fs.Var(&sf.serverEnv, "server-env", "KEY=VALUE for a started footfall (repeatable), e.g. FOOTFALL_PRESENCE_TTL=60s")
	fs.DurationVar(&sf.quiet, "quiet", 0, "before each run, wait until the machine has been quiet (under 10% busy) this long; 0: don't wait")
	fs.DurationVar(&sf.quietMax, "quiet-max", 10*time.Minute, "wait for --quiet at most this long, then run anyway")
}

// waitQuiet waits until the whole machine has been under 10% busy for
// sf.quiet (other work on a shared machine skews every figure), at most
// sf.quietMax.
func (sf *serverFlags) waitQuiet(ctx context.Context, progress io.Writer) error {
	if sf.quiet <= 0 {
		return nil
	}
	start := time.Now()
	quietSince := time.Now()
	prev, ok := readMachineCPU()
	if !ok {
		return nil
	}
	for {
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
		cur, _ := readMachineCPU()
		if frac := cur.busyFraction(prev); frac > 0.10 {
			quietSince = time.Now()
		}
		prev = cur
		if time.Since(quietSince) >= sf.quiet {
			return nil
		}
		if time.Since(start) > sf.quietMax {
			fmt.Fprintf(progress, "machine not quiet after %s; running anyway\n", sf.quietMax)
			return nil
		}
	}
}

// start starts (or connects to) the server kind names. bin is a footfall
// binary (built once by the caller) for kindFootfall.
func (sf *serverFlags) start(ctx context.Context, kind, bin string) (*target, error) {
	if sf.publishTo != "" && kind != kindBaseline {
		u, err := url.Parse(sf.publishTo)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usagef("--publish-to must be an http(s) URL, not %q", sf.publishTo)
		}
		t, err := sf.startKind(ctx, kind, bin)
		if t != nil {
			t.publishBase = strings.TrimRight(u.String(), "/")
		}
		return t, err
	}
	return sf.startKind(ctx, kind, bin)
}

func (sf *serverFlags) startKind(ctx context.Context, kind, bin string) (*target, error) {
	switch kind {
	case kindFootfall:
		return startFootfall(ctx, bin, sf.serverCPU, sf.serverEnv)
	case kindBaseline:
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return startProcess(ctx, kindBaseline, exe, []string{"baseline-server", "--addr", "127.0.0.1:0"}, sf.serverCPU, nil)
	}
	u, err := url.Parse(sf.target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--target must be footfall, baseline or an http(s) URL, not %q", sf.target)
	}
	if sf.apiKey == "" || sf.secret == "" {
		return nil, usagef("--target URL needs --api-key and --secret (or FOOTFALL_API_KEY and FOOTFALL_JWT_SECRET)")
	}
	return &target{
		kind: kindURL, base: strings.TrimRight(u.String(), "/"), pid: sf.serverPID,
		apiKey: sf.apiKey, secret: []byte(sf.secret), aud: sf.audience, iss: sf.issuer,
	}, nil
}

// prepare readies the harness for a command: it pins the harness to
// --client-cpu, raises its open-file limit to hold fds connections, and
// returns the footfall binary to start (--footfall-bin, or one built now
// into a temporary directory that cleanup removes).
func (sf *serverFlags) prepare(ctx context.Context, kind string, fds int, stderr io.Writer) (bin string, cleanup func(), err error) {
	cleanup = func() {}
	if err := pinSelf(sf.clientCPU); err != nil {
		return "", cleanup, err
	}
	if _, err := raiseFDLimit(fds); err != nil {
		return "", cleanup, err
	}
	bin = sf.footfallBin
	if kind == kindFootfall && bin == "" {
		b, dir, err := buildFootfall(ctx, stderr)
		if err != nil {
			return "", cleanup, err
		}
		return b, func() { os.RemoveAll(dir) }, nil
	}
	return bin, cleanup, nil
}

// kindOf maps --target to a kind.
func kindOf(t string) string {
	switch t {
	case kindFootfall, kindBaseline:
		return t
	}
	return kindURL
}

// newCommand is the flag set of a subcommand, with the server flags.
func newCommand(name string, stderr io.Writer) (*flag.FlagSet, *serverFlags) {
	fs := flag.NewFlagSet("footfall-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sf := &serverFlags{}
	sf.register(fs)
	return fs, sf
}

// withEnv is sf with kv added to the environment of a started footfall.
func (sf *serverFlags) withEnv(kv ...string) *serverFlags {
	c := *sf
	c.serverEnv = append(slices.Clone(sf.serverEnv), kv...)
	return &c
}

// onFresh waits for a quiet machine, starts a fresh server of kind,
// measures it and stops it.
func onFresh[R any](ctx context.Context, sf *serverFlags, kind, bin string, progress io.Writer, measure func(*target) (R, error)) (R, error) {
	var zero R
	if err := sf.waitQuiet(ctx, progress); err != nil {
		return zero, err
	}
	tg, err := sf.start(ctx, kind, bin)
	if err != nil {
		return zero, err
	}
	defer tg.stop()
	return measure(tg)
}

// emit prints a report: as JSON, or as text.
func emit[T any](w io.Writer, asJSON bool, v T, text func(io.Writer, T)) error {
	if asJSON {
		return writeJSON(w, v)
	}
	text(w, v)
	return nil
}
