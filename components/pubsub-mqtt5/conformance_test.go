package pubsubmqtt5

import (
	"testing"
	"time"

	conformance "github.com/dapr/components-contrib/tests/conformance/pubsub"
	"github.com/stretchr/testify/require"
)

// TestConformance runs Dapr's pub/sub conformance suite in process against the component and a
// real broker. The suite's subscriber fails the first two messages and every fifth one and still
// expects every message: the in-process redelivery after a handler error is what passes it.
// Bulk publish/subscribe are not advertised, so those operations are not listed.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite skipped in -short mode")
	}
	b := startBroker(t)
	// The suite publishes to a topic whose subscribers it stopped and expects success: Dapr's
	// contract for brokers that keep messages without subscribers. MQTT discards them (PUBACK 0x10),
	// so the suite runs with noMatchingSubscribers "accept" (the default, "fail", is tested in
	// TestPublishNoMatchingSubscribers).
	p := props(b.URL(false), "conformance", "noMatchingSubscribers", "accept")
	cfg, err := conformance.NewTestConfig(ComponentName, nil, map[string]any{
		"maxReadDuration":       30 * time.Second,
		"waitDurationToPublish": 500 * time.Millisecond,
		"messageCount":          20,
	})
	require.NoError(t, err)
	conformance.ConformanceTests(t, p, New(testLog), cfg)
	if m, ok := b.(interface{ Log() string }); ok && t.Failed() {
		t.Log(m.Log())
	}
}
