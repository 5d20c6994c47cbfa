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
// handler calls), and it is acknowledged once all of them have processed it.
func overlapping(t *testing.T, url string) {
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
	t.Logf("copies received from the broker: %d for 3 messages", ps.stats.Received.Load())
}

// mochi sends one copy with every identifier: paho keeps the last, the component reads them all.
func TestOverlappingSubscriptionsOneCopyManyIdentifiers(t *testing.T) {
	_, url := startMochi(t)
	overlapping(t, url)
}

// Against the suite's broker (Mosquitto, or the embedded one) the same holds, whether it sends
// one copy or one per subscription.
func TestOverlappingSubscriptions(t *testing.T) {
	overlapping(t, startBroker(t).URL(false))
}
