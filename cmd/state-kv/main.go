// Command state-kv serves the pluggable Dapr state store "state.mqttkv" on the unix socket
// <DAPR_COMPONENT_SOCKETS_FOLDER>/mqttkv.sock (default folder /tmp/dapr-components-sockets). It
// needs an MQTT v5 broker with the Azure IoT Operations key-value store (mqdapr's broker, or AIO's).
// On SIGINT/SIGTERM it disconnects and removes its socket.
//
// `state-kv healthcheck` pings the component on that socket (gRPC Ping, as daprd does) and exits 0
// when it answers, 1 when not, with one line saying which: the image's HEALTHCHECK.
//
// MQDAPR_METRICS_ADDR=host:port serves Prometheus metrics at /metrics (off when unset; mqdapr's
// manifests use :9885).
package main

import (
	"os"
	"runtime/debug"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkstate "github.com/dapr-sandbox/components-go-sdk/state/v1"

	statekv "github.com/mqdapr/mqdapr/components/state-kv"
	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// defaultGCPercent is the GOGC the process runs with unless GOGC is set.
const defaultGCPercent = 400

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(pluggable.Healthcheck(os.Args[2:], os.Stdout, statekv.ComponentName, pluggable.StateStore))
	}
	if os.Getenv("GOGC") == "" {
		// Every request leaves some 20–30 kB of garbage (most of it paho's decoding of the
		// response and the PUBACK, the rest gRPC's) on a live heap of a few MB, so with the default
		// GOGC=100 the collector ran every ~200 requests and took a large share of the CPU per
		// request (components/state-kv/DESIGN.md, "Cost per request"). 400 trades ~15 MB of RSS
		// for that; GOGC in the environment still decides.
		debug.SetGCPercent(defaultGCPercent)
	}
	log := pluggable.NewLogger("mqttkv-state")
	if err := pluggable.PrepareSocket(log, statekv.ComponentName); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	stopProfiles := pluggable.StartProfiles(log)
	var instances pluggable.Instances
	metrics := statekv.NewCollector()
	if err := pluggable.ServeMetrics(log, os.Stdout, metrics); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	dapr.Register(statekv.ComponentName, dapr.WithStateStore(func() sdkstate.Store {
		return pluggable.Track(&instances, metrics.Add(statekv.NewPluggable(log)))
	}))
	err := dapr.Run()
	stopProfiles()
	pluggable.Finish(log, &instances, err)
}
