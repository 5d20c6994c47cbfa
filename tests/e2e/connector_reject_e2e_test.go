package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/devstack"
)

// noMatchingKey is pubsub.mqttv5's setting for what a publish answered PUBACK 0x10 does.
const noMatchingKey = "noMatchingSubscribers"

// The app's reject path (invalid telemetry to connector/rejected, through daprd and
// pubsub.mqttv5): while nothing subscribes to the reject topic the broker answers 0x10 and
// discards the publish, so the rejected message must not be acked; it is redelivered until a
// consumer subscribes, and only then acked, counted as rejected and found at the consumer.
func TestConnectorRejectIsKeptUntilTheRejectTopicHasASubscriber(t *testing.T) {
	s := newStack(t)
	lake := filepath.Join(s.dir, "lake")
	r := s.newReplica("replica-1", map[string]string{noMatchingKey: "fail"}).withState()
	c := &connectorReplica{replica: r, lake: lake}
	r.startComponents()
	c.startApp()
	r.startDaprd("connector", c.appPort, "grpc")

	// 10 readings of one device, the 5th and 10th invalid (unknown unit).
	s.devices(t, "devsim-1", "-count", "10", "-devices", "1", "-invalid-every", "5", "-seq-start", "1")
	require.Eventually(t, func() bool { return c.counters()["failed"] >= 4 }, 90*time.Second, 50*time.Millisecond,
		"the reject publish fails while nothing subscribes to connector/rejected (redelivered, not acked)")
	assert.Zero(t, c.counters()["rejected"], "no message counted as rejected before its dead letter was accepted")

	// A consumer of the reject topic with a persistent session (make run's dead-letter sink).
	file, ready := filepath.Join(s.dir, "rejected.jsonl"), filepath.Join(s.dir, "sink.ready")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- devstack.RunSink(ctx, devstack.SinkOptions{BrokerURL: s.mqttURL(), ClientID: "test", Topics: []string{"connector/rejected"}, File: file, Ready: ready})
	}()
	t.Cleanup(func() { cancel(); <-done })

	require.Eventually(t, func() bool { return c.counters()["rejected"] == 2 }, 90*time.Second, 50*time.Millisecond,
		"both invalid readings are rejected once the reject topic has a subscriber")
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(b), `"topic":"connector/rejected"`), "the consumer got both rejects:\n%s", b)
	assertExactlyOnce(t, waitRows(t, lake, 8, 60*time.Second), 8)
	assert.True(t, logContains(c.app.log, "rejected message NOT dead-lettered"), "the app logged the failed reject as an error")
}
