// Package healthcheck holds the probes behind each program's `healthcheck` subcommand, which a
// container runtime runs inside the program's own image (FROM scratch: no shell, no curl), e.g.
// `HEALTHCHECK CMD ["/mqbroker", "healthcheck"]`. A probe is one attempt, bounded by its context;
// Run turns it into one line of output and the exit code a runtime reads (0 healthy, 1 not).
//
// The probe of a pluggable component (gRPC over its unix socket) is in internal/pluggable, so that
// the broker's binary does not link gRPC.
package healthcheck

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// DefaultTimeout bounds one probe unless -timeout says otherwise; below Docker's default
// HEALTHCHECK --timeout of 30 s, so that the probe, not the runtime, reports the reason.
const DefaultTimeout = 5 * time.Second

// Probe is one health check: nil when healthy, else an error saying why not. what is printed
// after "healthy: ".
type Probe func(ctx context.Context) (what string, err error)

// Run runs probe once within timeout, writes "healthy: <what>" or "unhealthy: <reason>" as one
// line to w, and returns the process exit code: 0 healthy, 1 unhealthy.
func Run(w io.Writer, timeout time.Duration, probe Probe) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	what, err := probe(ctx)
	if err != nil {
		fmt.Fprintf(w, "unhealthy: %v\n", err)
		return 1
	}
	fmt.Fprintf(w, "healthy: %s\n", what)
	return 0
}

// Main parses the subcommand's arguments with fs (which gets -timeout added), builds the probe
// with newProbe after parsing, runs it, and returns the exit code: 2 for bad arguments.
func Main(fs *flag.FlagSet, args []string, stdout io.Writer, newProbe func() Probe) int {
	timeout := fs.Duration("timeout", DefaultTimeout, "how long the probe may take")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2
	}
	return Run(stdout, *timeout, newProbe())
}

// Loopback returns addr with an unspecified host (empty, 0.0.0.0, ::) replaced by 127.0.0.1: a
// probe run beside a server that listens on every interface dials it over loopback.
func Loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
