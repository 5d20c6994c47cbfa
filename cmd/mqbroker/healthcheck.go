package main

import (
	"context"
	"flag"
	"io"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/healthcheck"
)

// healthcheckMain is `mqbroker healthcheck`: one MQTT v5 CONNECT/CONNACK with the broker at -addr
// (an unspecified host such as 0.0.0.0 means loopback), one line on stdout, exit 0 when it serves,
// 1 when not, 2 for bad arguments. The image's HEALTHCHECK runs it (scratch has no shell).
func healthcheckMain(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("mqbroker healthcheck", flag.ContinueOnError)
	addr := fs.String("addr", broker.NewDefaultOptions().Addr, "the broker's MQTT listen address (plain TCP)")
	return healthcheck.Main(fs, args, stdout, func() healthcheck.Probe {
		a := healthcheck.Loopback(*addr)
		return func(ctx context.Context) (string, error) { return healthcheck.MQTT(ctx, a) }
	})
}
