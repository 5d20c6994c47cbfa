package main

import (
	"context"
	"flag"
	"io"

	"github.com/mqdapr/mqdapr/internal/healthcheck"
)

// healthcheckMain is `app healthcheck`: one GET of the app's /healthz (at HEALTH_ADDR, as the app
// serves it, an unspecified host meaning loopback; -url overrides), one line on stdout, exit 0 on
// 200, 1 otherwise (503 while shutting down), 2 for bad arguments. The image's HEALTHCHECK runs it.
func healthcheckMain(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("app healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://"+healthcheck.Loopback(env("HEALTH_ADDR", defaultHealthAddr))+"/healthz", "the app's health URL")
	return healthcheck.Main(fs, args, stdout, func() healthcheck.Probe {
		return func(ctx context.Context) (string, error) { return healthcheck.HTTP(ctx, *url) }
	})
}
