// Command pubsub-mqtt5 serves the pluggable Dapr pub/sub component "pubsub.mqttv5" on the unix
// socket <DAPR_COMPONENT_SOCKETS_FOLDER>/mqttv5.sock (default folder /tmp/dapr-components-sockets).
// On SIGINT/SIGTERM it stops taking messages, lets running handlers finish so their messages are
// acknowledged, disconnects keeping the MQTT session, and removes its socket.
//
// `pubsub-mqtt5 healthcheck` pings the component on that socket (gRPC Ping, as daprd does) and exits 0
// when it answers, 1 when not, with one line saying which: the image's HEALTHCHECK.
//
// MQDAPR_METRICS_ADDR=host:port serves Prometheus metrics at /metrics (off when unset; mqdapr's
// manifests use :9884).
package main

import (
	"os"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkpubsub "github.com/dapr-sandbox/components-go-sdk/pubsub/v1"

	pubsubmqtt5 "github.com/mqdapr/mqdapr/components/pubsub-mqtt5"
	"github.com/mqdapr/mqdapr/internal/pluggable"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(pluggable.Healthcheck(os.Args[2:], os.Stdout, pubsubmqtt5.ComponentName, pluggable.PubSub))
	}
	log := pluggable.NewLogger("mqttv5-pubsub")
	if err := pluggable.CheckSocketFolder(pubsubmqtt5.ComponentName); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	var instances pluggable.Instances
	metrics := pubsubmqtt5.NewCollector()
	if err := pluggable.ServeMetrics(log, os.Stdout, metrics); err != nil {
		log.Errorf("not starting: %v", err)
		os.Exit(1)
	}
	dapr.Register(pubsubmqtt5.ComponentName, dapr.WithPubSub(func() sdkpubsub.PubSub {
		return pluggable.Track(&instances, metrics.Add(pubsubmqtt5.New(log)))
	}))
	pluggable.Finish(log, &instances, dapr.Run())
}
