package conformance

import (
	"testing"
	"time"

	conformance "github.com/dapr/components-contrib/tests/conformance/pubsub"
	daprpubsub "github.com/dapr/dapr/pkg/components/pubsub"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// TestPubSubConformance runs Dapr's pub/sub conformance suite against the pubsub-mqtt5 process,
// through daprd's gRPC client over the unix socket, on both brokers. Every sub-test of the suite
// runs and must pass; in-order checking is on (the suite's default).
//
// The configuration is the in-process run's (components/pubsub-mqtt5/conformance_test.go), which
// is the suite's default or stricter: 20 messages instead of 10, 30 s to read them instead of 60,
// and 500 ms instead of 5 s between subscribing and the first publish. Like in process, the
// operations list is empty: the component advertises neither bulk publish nor bulk subscribe, and
// the suite's remaining sub-tests (init, ping, subscribe, publish, verify read, multiple handlers,
// stop subscribers) are the ones the protocol carries.
func TestPubSubConformance(t *testing.T) {
	brokers := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"embedded", startEmbeddedBroker},
		{"mosquitto", func(t *testing.T) string { return testutil.StartMosquitto(t, testutil.MosquittoOptions{}).URL(false) }},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			url := b.url(t)
			socket, _ := startComponent(t, "pubsub-mqtt5", "mqttv5")
			ps := daprpubsub.NewGRPCPubSub(testLog, socket)
			// The metadata daprd would pass, plus the in-process run's: the suite publishes to a
			// topic whose subscribers it stopped and expects success (Dapr's contract for brokers
			// that keep messages without subscribers); MQTT discards them (PUBACK 0x10), so
			// noMatchingSubscribers is "accept", as in process (the default, "fail", is tested in
			// components/pubsub-mqtt5 TestPublishNoMatchingSubscribers).
			props := map[string]string{
				"url":                   url,
				"consumerID":            "app",
				"clientID":              "conformance-" + b.name,
				"connectTimeout":        "5s",
				"retryInitialInterval":  "20ms",
				"retryMaxInterval":      "200ms",
				"noMatchingSubscribers": "accept",
			}
			cfg, err := conformance.NewTestConfig("mqttv5", nil, map[string]any{
				"maxReadDuration":       30 * time.Second,
				"waitDurationToPublish": 500 * time.Millisecond,
				"messageCount":          20,
			})
			require.NoError(t, err)
			require.True(t, cfg.CheckInOrderProcessing, "in-order checking is the suite's default and stays on")
			conformance.ConformanceTests(t, props, ps, cfg)
		})
	}
}
