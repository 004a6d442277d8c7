// Command footfall-bench is footfall's load harness: it opens
// many WebSocket or SSE clients, publishes through the service API at a
// chosen rate and reports connect time, delivery, latency, server memory
// per connection and CPU, for footfall and for a bare gorilla/websocket
// baseline measured the same way.
//
//	footfall-bench run   --target footfall --clients 5000 --broadcasts 50 --rate 5
//	footfall-bench run   --compare --clients 5000 --server-cpu 0 --client-cpu 1 --repeat 3
//	footfall-bench churn --visitors 1000 --watchers 50
//	footfall-bench poll  --connections 50 --duration 10s
//	footfall-bench soak  --duration 10m
//	footfall-bench abuse --duration 15s
//
// Every subcommand takes --json. See BENCHMARKS.md for the method and the
// figures of this machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "footfall-bench:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "footfall-bench:", err)
		os.Exit(1)
	}
}

const usage = `footfall-bench: load harness for footfall

  footfall-bench run    fanout: N clients, M broadcasts, latency/delivery/RSS/CPU
  footfall-bench churn  N visitors join at once; how fast watchers converge
  footfall-bench poll   authenticated REST count polls vs /healthz throughput
  footfall-bench soak   bounded soak: churn, broadcasts, reconnects; RSS/threads/fds start vs end
  footfall-bench abuse  bursts, idle keep-alives, slowloris, bogus credentials, long-gap resumes vs one node

Run "footfall-bench <command> -h" for the flags of a command.
`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("a command is required")
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "churn":
		return cmdChurn(ctx, args[1:], stdout, stderr)
	case "poll":
		return cmdPoll(ctx, args[1:], stdout, stderr)
	case "soak":
		return cmdSoak(ctx, args[1:], stdout, stderr)
	case "abuse":
		return cmdAbuse(ctx, args[1:], stdout, stderr)
	case "baseline-server": // hidden: the bare baseline, started by --target baseline
		return cmdBaselineServer(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usagef("unknown command %q", args[0])
}

// pinEnv marks a harness process that already runs under taskset.
const pinEnv = "FOOTFALL_BENCH_PINNED"

// pinSelf re-executes the harness under `taskset -c cpu` so that every
// thread of the client side runs on that CPU (a Go process cannot pin all
// its threads itself). It returns only when no pinning is needed.
func pinSelf(cpu string) error {
	if cpu == "" || os.Getenv(pinEnv) == cpu {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	argv, err := underTaskset(cpu, "--client-cpu", append([]string{exe}, os.Args[1:]...))
	if err != nil {
		return err
	}
	return syscall.Exec(argv[0], argv, append(os.Environ(), pinEnv+"="+cpu))
}

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and checks
// that need descriptors fit (plus a margin).
func raiseFDLimit(need int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
		}
	}
	if uint64(need)+64 > lim.Cur {
		return lim.Cur, fmt.Errorf("open-file limit %d is too low for %d connections: raise it (ulimit -n %d, as root or in limits.conf); the server needs the same", lim.Cur, need, need+1024)
	}
	return lim.Cur, nil
}
