// Command state-kv serves the pluggable Dapr state store "state.mqttkv" on the unix socket
// <DAPR_COMPONENT_SOCKETS_FOLDER>/mqttkv.sock (default folder /tmp/dapr-components-sockets). It
// needs an MQTT v5 broker with the Azure IoT Operations key-value store (mqdapr's broker, or AIO's).
// On SIGINT/SIGTERM it disconnects and removes its socket.
package main

import (
	"os"
	"sync"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkstate "github.com/dapr-sandbox/components-go-sdk/state/v1"
	"github.com/dapr/kit/logger"

	statekv "github.com/mqdapr/mqdapr/components/state-kv"
)

func main() {
	log := logger.NewLogger("mqttkv-state")
	if lvl := os.Getenv("MQDAPR_LOG_LEVEL"); lvl != "" {
		log.SetOutputLevel(logger.LogLevel(lvl))
	}

	// The SDK keeps one instance per Component name; remember them to close them on shutdown.
	var mu sync.Mutex
	var instances []*statekv.Pluggable
	dapr.Register(statekv.ComponentName, dapr.WithStateStore(func() sdkstate.Store {
		s := statekv.NewPluggable(log)
		mu.Lock()
		instances = append(instances, s)
		mu.Unlock()
		return s
	}))
	err := dapr.Run()

	mu.Lock()
	for _, s := range instances {
		_ = s.Close()
	}
	mu.Unlock()
	if err != nil {
		log.Errorf("component server stopped: %v", err)
		os.Exit(1)
	}
}
