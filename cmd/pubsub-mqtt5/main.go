// Command pubsub-mqtt5 serves the pluggable Dapr pub/sub component "pubsub.mqttv5" on the unix
// socket <DAPR_COMPONENT_SOCKETS_FOLDER>/mqttv5.sock (default folder /tmp/dapr-components-sockets).
// On SIGINT/SIGTERM it stops taking messages, lets running handlers finish so their messages are
// acknowledged, disconnects keeping the MQTT session, and removes its socket.
package main

import (
	"os"
	"sync"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkpubsub "github.com/dapr-sandbox/components-go-sdk/pubsub/v1"
	"github.com/dapr/kit/logger"

	pubsubmqtt5 "github.com/mqdapr/mqdapr/components/pubsub-mqtt5"
)

func main() {
	log := logger.NewLogger("mqttv5-pubsub")
	if lvl := os.Getenv("MQDAPR_LOG_LEVEL"); lvl != "" {
		log.SetOutputLevel(logger.LogLevel(lvl))
	}

	// The SDK keeps one instance per Component name; remember them to close them on shutdown.
	var mu sync.Mutex
	var instances []*pubsubmqtt5.PubSub
	dapr.Register(pubsubmqtt5.ComponentName, dapr.WithPubSub(func() sdkpubsub.PubSub {
		p := pubsubmqtt5.New(log)
		mu.Lock()
		instances = append(instances, p)
		mu.Unlock()
		return p
	}))
	err := dapr.Run()

	mu.Lock()
	for _, p := range instances {
		_ = p.Close()
	}
	mu.Unlock()
	if err != nil {
		log.Errorf("component server stopped: %v", err)
		os.Exit(1)
	}
}
