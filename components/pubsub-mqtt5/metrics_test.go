package pubsubmqtt5

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// serveCollector serves c as a component process does (pluggable.ServeMetrics) and returns the
// /metrics URL.
func serveCollector(t *testing.T, c prometheus.Collector) string {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// /metrics, parsed by the Prometheus text parser, moves with real traffic through a real broker:
// messages delivered and acknowledged, a poison message's failed handler calls, its move to the
// dead-letter topic, every handler call timed, and a reconnection after the broker restarts.
func TestMetricsMoveWithTraffic(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	dlt := topic + "/dead"
	ps := New(testLog)
	coll := NewCollector()
	coll.Add(ps)
	url := serveCollector(t, coll)
	before := testutil.Scrape(t, url)
	require.EqualValues(t, 0, before.Value("mqdapr_pubsub_delivered_total"))
	require.EqualValues(t, 0, before.Value("mqdapr_pubsub_handler_duration_seconds"))

	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: props(b.URL(false), "metrics", "maxDeliveryAttempts", "2", "deadLetterTopic", dlt)}}))
	t.Cleanup(func() { _ = ps.Close() })
	dead := newCollector()
	consumer := newComponent(t, props(b.URL(false), "metrics-dead"))
	require.NoError(t, consumer.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: dlt}, dead.handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, m *pubsub.NewMessage) error {
		if string(m.Data) == "poison" {
			return errors.New("cannot parse reading")
		}
		return nil
	}))
	pub := newComponent(t, props(b.URL(false), "metrics-pub"))
	for _, d := range []string{"a", "b", "poison", "c", "d", "e"} {
		publish(t, pub, topic, d)
	}
	require.Equal(t, "poison", string(dead.next(t, 15*time.Second).Data))
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == 6 }, 15*time.Second, 10*time.Millisecond)

	m := testutil.Scrape(t, url)
	require.EqualValues(t, 6, m.Value("mqdapr_pubsub_received_total"))
	require.EqualValues(t, 5, m.Value("mqdapr_pubsub_delivered_total"))
	require.EqualValues(t, 6, m.Value("mqdapr_pubsub_acked_total"))
	require.EqualValues(t, 2, m.Value("mqdapr_pubsub_handler_failures_total"), "maxDeliveryAttempts 2")
	require.EqualValues(t, 1, m.Value("mqdapr_pubsub_dead_lettered_total"))
	require.EqualValues(t, 0, m.Value("mqdapr_pubsub_held_messages"))
	require.EqualValues(t, 0, m.Value("mqdapr_pubsub_handlers_in_flight"))
	require.GreaterOrEqual(t, m.Value("mqdapr_pubsub_handlers_in_flight_max"), 1.0)
	h := m.Histogram(t, "mqdapr_pubsub_handler_duration_seconds")
	require.EqualValues(t, 7, h.GetSampleCount(), "5 successes and 2 failures")
	require.Greater(t, h.GetSampleSum(), 0.0)
	require.EqualValues(t, 0, m.Value("mqdapr_pubsub_reconnects_total"))

	b.Stop()
	b.Start()
	require.Eventually(t, func() bool {
		return testutil.Scrape(t, url).Value("mqdapr_pubsub_reconnects_total") == 1
	}, 30*time.Second, 50*time.Millisecond, "the reconnection after the broker restart is counted")
}
