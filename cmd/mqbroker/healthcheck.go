package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"syscall"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/healthcheck"
)

// healthcheckMain is `mqbroker healthcheck`: one probe, one line on stdout, exit 0 when the broker
// serves, 1 when not, 2 for bad arguments. The image's HEALTHCHECK runs it (scratch has no shell).
//
// With -metrics-addr (the broker's own -metrics-addr value; an unspecified host such as 0.0.0.0
// means loopback) the probe is a GET of /readyz there: no MQTT connection, so a broker with a
// password file logs no "authentication refused" per probe. When nothing listens there
// (connection refused: the broker runs without -metrics-addr) it falls back to the MQTT probe.
// Without -metrics-addr, the probe is one MQTT v5 CONNECT/CONNACK at -addr, healthy also when the
// broker refuses it for its lack of credentials.
func healthcheckMain(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("mqbroker healthcheck", flag.ContinueOnError)
	addr := fs.String("addr", broker.NewDefaultOptions().Addr, "the broker's MQTT listen address (plain TCP)")
	metricsAddr := fs.String("metrics-addr", "", "the broker's -metrics-addr: probe GET /readyz there instead of an MQTT CONNECT (the MQTT probe when nothing listens there)")
	return healthcheck.Main(fs, args, stdout, func() healthcheck.Probe {
		mqtt := healthcheck.Loopback(*addr)
		mqttProbe := func(ctx context.Context) (string, error) { return healthcheck.MQTT(ctx, mqtt) }
		if *metricsAddr == "" {
			return mqttProbe
		}
		url := "http://" + healthcheck.Loopback(*metricsAddr) + "/readyz"
		return func(ctx context.Context) (string, error) {
			what, err := healthcheck.HTTP(ctx, url)
			if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
				if what, err = mqttProbe(ctx); err == nil {
					what += " (nothing listens at " + url + ")"
				}
			}
			return what, err
		}
	})
}
