// Command pubsub-mqtt5 serves the pluggable Dapr pub/sub component "pubsub.mqttv5" on the unix
// socket <DAPR_COMPONENT_SOCKETS_FOLDER>/mqttv5.sock (default folder /tmp/dapr-components-sockets).
// On SIGINT/SIGTERM it stops taking messages, lets running handlers finish so their messages are
// acknowledged, disconnects keeping the MQTT session, and removes its socket.
//
// MQDAPR_PUBSUB_SERVER chooses the gRPC server: "own" (internal/pluggable/pubsubserver, free of
// components-go-sdk v0.3.0's ack race) or "sdk" (components-go-sdk); see pubsubserver.DefaultServer.
//
// MQDAPR_PROFILE=<prefix> writes a CPU profile (<prefix>.cpu) and the allocations (<prefix>.allocs)
// of the process's life, at exit (profiling under load; off by default).
//
// `pubsub-mqtt5 healthcheck` pings the component on that socket (gRPC Ping, as daprd does) and exits 0
// when it answers, 1 when not, with one line saying which: the image's HEALTHCHECK.
//
// MQDAPR_METRICS_ADDR=host:port serves Prometheus metrics at /metrics (off when unset; mqdapr's
// manifests use :9884).
package main

import (
	"os"
	"runtime/pprof"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkpubsub "github.com/dapr-sandbox/components-go-sdk/pubsub/v1"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"

	pubsubmqtt5 "github.com/mqdapr/mqdapr/components/pubsub-mqtt5"
	"github.com/mqdapr/mqdapr/internal/pluggable"
	"github.com/mqdapr/mqdapr/internal/pluggable/pubsubserver"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(pluggable.Healthcheck(os.Args[2:], os.Stdout, pubsubmqtt5.ComponentName, pluggable.PubSub))
	}
	log := pluggable.NewLogger("mqttv5-pubsub")
	if err := pluggable.PrepareSocket(log, pubsubmqtt5.ComponentName); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	own, err := pubsubserver.Own()
	if err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	stopProfile := startProfile(log, os.Getenv("MQDAPR_PROFILE"))
	var instances pluggable.Instances
	metrics := pubsubmqtt5.NewCollector()
	if err := pluggable.ServeMetrics(log, os.Stdout, metrics); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	newInstance := func() *pubsubmqtt5.PubSub {
		return pluggable.Track(&instances, metrics.Add(pubsubmqtt5.New(log)))
	}
	if own {
		err = pubsubserver.Run(pluggable.SocketPath(pubsubmqtt5.ComponentName), log, func() pubsub.PubSub { return newInstance() })
	} else {
		dapr.Register(pubsubmqtt5.ComponentName, dapr.WithPubSub(func() sdkpubsub.PubSub { return newInstance() }))
		err = dapr.Run()
	}
	stopProfile()
	pluggable.Finish(log, &instances, err)
}

// startProfile, with prefix set, records a CPU profile into <prefix>.cpu until the returned
// function is called, which also writes the allocations so far into <prefix>.allocs (go tool pprof
// reads both). Profiling under a real load (bench: BENCH_PROFILE_DIR) is what it is for.
func startProfile(log logger.Logger, prefix string) (stop func()) {
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + ".cpu")
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Errorf("MQDAPR_PROFILE %q: %v: not profiling", prefix, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		if a, err := os.Create(prefix + ".allocs"); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(a, 0)
			_ = a.Close()
		}
	}
}
