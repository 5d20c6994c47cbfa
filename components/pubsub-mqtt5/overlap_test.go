package pubsubmqtt5

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/brokertest"
)

// startMochi runs mochi-mqtt/server v2.7.9 in process on a loopback port: a third-party MQTT v5
// broker that sends one copy of a message carrying the subscription identifiers of every
// overlapping subscription [MQTT-3.3.4-3] (server.go, publishToClient).
func startMochi(t *testing.T, hooks ...mochi.Hook) (*mochi.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	for _, h := range hooks {
		require.NoError(t, srv.AddHook(h, nil))
	}
	require.NoError(t, srv.AddListener(listeners.NewNet("t", ln)))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	return srv, "mqtt://" + ln.Addr().String()
}

// overlapping subscribes one component to three overlapping filters and publishes one message
// matching all three: every subscription gets it exactly once (one of them after two failed
// handler calls), and it is acknowledged once all of them have processed it. It returns the
// number of copies the broker sent for the three messages.
func overlapping(t *testing.T, url string) uint64 {
	ps := newComponent(t, props(url, "r1"))
	base := uniqueTopic(t)
	wide, mid, exact := newCollector(), newCollector(), newCollector()
	var exactCalls atomic.Int32
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/#"}, wide.handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/+/t"}, mid.handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/a/t"}, func(ctx context.Context, m *pubsub.NewMessage) error {
		if exactCalls.Add(1) <= 2 {
			return errors.New("not yet")
		}
		return exact.handler(ctx, m)
	}))
	pub := newComponent(t, props(url, "publisher"))
	publish(t, pub, base+"/a/t", "one")
	for _, c := range []*collector{wide, mid, exact} {
		assert.Equal(t, "one", string(c.next(t, 10*time.Second).Data))
	}
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == ps.stats.Received.Load() }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(3), ps.stats.Delivered.Load())
	assert.Equal(t, uint64(2), ps.stats.HandlerErrors.Load())

	publish(t, pub, base+"/b/t", "two") // matches the first two only
	assert.Equal(t, "two", string(wide.next(t, 10*time.Second).Data))
	assert.Equal(t, "two", string(mid.next(t, 10*time.Second).Data))
	publish(t, pub, base+"/a/t", "marker")
	for _, c := range []*collector{wide, mid, exact} {
		assert.Equal(t, "marker", string(c.next(t, 10*time.Second).Data), "no copy twice, none to a filter that does not match")
	}
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == ps.stats.Received.Load() }, 10*time.Second, 5*time.Millisecond)
	t.Logf("copies received from the broker: %d for 3 messages", ps.stats.Received.Load())
	return ps.stats.Received.Load()
}

// mochi sends one copy with every identifier: paho keeps the last, the component reads them all.
func TestOverlappingSubscriptionsOneCopyManyIdentifiers(t *testing.T) {
	_, url := startMochi(t)
	require.Equal(t, uint64(3), overlapping(t, url))
}

// Against the suite's broker (Mosquitto, or the embedded one) the same holds, whether it sends
// one copy or one per subscription.
func TestOverlappingSubscriptions(t *testing.T) {
	overlapping(t, startBroker(t).URL(false))
}

// mqbroker with -overlap-delivery single sends one copy carrying every matching identifier
// [MQTT-3.3.4-3] (3 copies for the 3 messages), per-subscription (its default) one copy per
// subscription [MQTT-3.3.4-4] (3 + 2 + 3): the component delivers the same either way.
func TestOverlappingSubscriptionsEmbeddedBothModes(t *testing.T) {
	for _, c := range []struct {
		mode   broker.Overlap
		copies uint64
	}{{broker.OverlapSingle, 3}, {broker.OverlapPerSubscription, 8}} {
		t.Run(string(c.mode), func(t *testing.T) {
			e := brokertest.StartWith(t, func(o *broker.Options) { o.OverlapDelivery = c.mode })
			require.Equal(t, c.copies, overlapping(t, e.URL(false)))
		})
	}
}

// Ack after every handler: the one copy the broker sends for three overlapping subscriptions
// (OverlapSingle) stays unacknowledged in the broker while any of the three handlers runs, and is
// acknowledged once all three have returned.
func TestOverlappingSingleCopyAckWaitsForEveryHandler(t *testing.T) {
	e := brokertest.StartWith(t, func(o *broker.Options) { o.OverlapDelivery = broker.OverlapSingle })
	ps := newComponent(t, props(e.URL(false), "r1"))
	base := uniqueTopic(t)
	wide, mid := newCollector(), newCollector()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var exact atomic.Int32
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/#"}, wide.handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/+/t"}, mid.handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/a/t"}, func(ctx context.Context, _ *pubsub.NewMessage) error {
		exact.Add(1)
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	publish(t, newComponent(t, props(e.URL(false), "publisher")), base+"/a/t", "one")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking handler was not called")
	}
	// The handler is blocked: whatever the other two did, nothing may have been acknowledged.
	require.Equal(t, int64(1), e.Broker().Stats().Queued, "one copy, unacknowledged")
	require.Equal(t, uint64(0), ps.stats.Acked.Load())
	close(release)
	for _, c := range []*collector{wide, mid} {
		assert.Equal(t, "one", string(c.next(t, 10*time.Second).Data))
	}
	require.Eventually(t, func() bool { return e.Broker().Stats().Queued == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(1), ps.stats.Received.Load())
	assert.Equal(t, uint64(1), ps.stats.Acked.Load())
	assert.Equal(t, int32(1), exact.Load())
}

// kill -9 while a single copy naming two subscriptions is being handled: it was not acknowledged
// (the broker still holds it), and after the restart both subscriptions get it.
func TestOverlappingSingleCopySurvivesKill9(t *testing.T) {
	e := brokertest.StartWith(t, func(o *broker.Options) { o.OverlapDelivery = broker.OverlapSingle })
	base := uniqueTopic(t)
	expect, kill9 := startHelper(t, "HELPER_URL="+e.URL(false), "HELPER_REPLICA=victim", "HELPER_TOPIC="+base+"/#", "HELPER_TOPIC2="+base+"/+/t")
	expect("READY")
	publish(t, newComponent(t, props(e.URL(false), "publisher")), base+"/a/t", "reading-9")
	assert.Contains(t, expect("GOT"), "reading-9") // one of the two handlers holds it
	require.Equal(t, int64(1), e.Broker().Stats().Queued, "one copy, unacknowledged")
	kill9()

	again := newComponent(t, props(e.URL(false), "victim"))
	wide, mid := newCollector(), newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/#"}, wide.handler))
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/+/t"}, mid.handler))
	assert.Equal(t, "reading-9", string(wide.next(t, 15*time.Second).Data))
	assert.Equal(t, "reading-9", string(mid.next(t, 15*time.Second).Data))
	require.Eventually(t, func() bool { return e.Broker().Stats().Queued == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(1), again.stats.Received.Load(), "one copy, redelivered once")
}
