package pubsubmqtt5

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openStreams counts the subscriptions of ps with an open stream.
func openStreams(ps *PubSub) int {
	_, subs, _, _, err := ps.state()
	if err != nil {
		return -1
	}
	subs.mu.Lock()
	defer subs.mu.Unlock()
	return subs.openStreamsLocked()
}

// daprd restarts and comes back with fewer subscriptions: the one it no longer opens is removed
// from the session after unsubscribeGrace, the message held for it is released (no dead-letter
// topic: acknowledged and counted), and the acknowledgements behind it flow again.
func TestSubscriptionDroppedAcrossDaprdRestartIsRemoved(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	a, bt := base+"/a", base+"/b"
	ps := newComponent(t, props(b.URL(false), "r1", "unsubscribeGrace", "1s", "receiveMaximum", "2"))
	ctxA, closeA := context.WithCancel(t.Context())
	ctxB, closeB := context.WithCancel(t.Context())
	require.NoError(t, ps.Subscribe(ctxA, pubsub.SubscribeRequest{Topic: a}, newCollector().handler))
	require.NoError(t, ps.Subscribe(ctxB, pubsub.SubscribeRequest{Topic: bt}, newCollector().handler))
	closeA()
	closeB() // daprd goes away
	require.Eventually(t, func() bool { return openStreams(ps) == 0 }, 10*time.Second, 5*time.Millisecond)
	closed := time.Now()

	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, a, "for-a")
	require.Eventually(t, func() bool { return ps.stats.Held.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	// daprd stays away longer than the grace (the behaviour under test), then subscribes to b only.
	time.Sleep(time.Until(closed.Add(2 * time.Second)))
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: bt}, c.handler))
	const n = 6 // more than receiveMaximum
	for i := range n {
		publish(t, pub, bt, fmt.Sprint(i))
	}
	for i := range n {
		assert.Equal(t, fmt.Sprint(i), string(c.next(t, 15*time.Second).Data))
	}
	require.Eventually(t, func() bool { return ps.stats.Unsubscribed.Load() == 1 }, 15*time.Second, 10*time.Millisecond,
		"the message held for the dropped subscription is released")
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == ps.stats.Received.Load() }, 10*time.Second, 10*time.Millisecond)

	strict := newComponent(t, props(b.URL(false), "strict"))
	err := strict.Publish(t.Context(), &pubsub.PublishRequest{Topic: a, Data: []byte("x")})
	assert.ErrorIs(t, err, ErrNoSubscribers, "the dropped filter is no longer in the broker session")
}

// daprd restarting reopens its streams one after another: a stream reopened later than
// unsubscribeGrace after it closed, but within the grace after the first stream came back, keeps
// its subscription and the message held for it. The grace is measured continuously, not as one
// snapshot taken when the stream closed.
func TestStreamReopenedLateAcrossDaprdRestartKeepsHeldMessage(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	a, bt := base+"/a", base+"/b"
	const grace = 4 * time.Second
	ps := newComponent(t, props(b.URL(false), "r1", "unsubscribeGrace", grace.String()))
	ctxA, closeA := context.WithCancel(t.Context())
	ctxB, closeB := context.WithCancel(t.Context())
	require.NoError(t, ps.Subscribe(ctxA, pubsub.SubscribeRequest{Topic: a}, newCollector().handler))
	require.NoError(t, ps.Subscribe(ctxB, pubsub.SubscribeRequest{Topic: bt}, newCollector().handler))
	closeA()
	closeB()
	require.Eventually(t, func() bool { return openStreams(ps) == 0 }, 10*time.Second, 5*time.Millisecond)
	closed := time.Now()

	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, a, "for-a")
	require.Eventually(t, func() bool { return ps.stats.Held.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	// The timing is the behaviour under test: b comes back at grace/2, a at 5/4 grace (past its
	// own close + grace, before b's return + grace).
	time.Sleep(time.Until(closed.Add(grace / 2)))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: bt}, newCollector().handler))
	time.Sleep(time.Until(closed.Add(grace * 5 / 4)))
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: a}, c.handler))
	assert.Equal(t, "for-a", string(c.next(t, 10*time.Second).Data))
	assert.Equal(t, uint64(0), ps.stats.Unsubscribed.Load())
}

// A component killed with kill -9 leaves two subscriptions in its persistent session; restarted,
// the app subscribes to one. The other is known from the component's record (stateDir): after
// unsubscribeGrace it is UNSUBSCRIBEd and the message held for it released, so nothing stalls.
func TestStaleSubscriptionAfterKill9IsRemoved(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	x, y := base+"/x", base+"/y"
	expect, kill9 := startHelper(t, "HELPER_URL="+b.URL(false), "HELPER_REPLICA=restarted", "HELPER_TOPIC="+x, "HELPER_TOPIC2="+y)
	expect("READY")
	kill9()

	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, x, "for-x") // held by the session for the dead component
	publish(t, pub, y, "for-y")

	again := newComponent(t, props(b.URL(false), "restarted", "unsubscribeGrace", "1s"))
	c := newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: y}, c.handler))
	assert.Equal(t, "for-y", string(c.next(t, 15*time.Second).Data))
	require.Eventually(t, func() bool { return again.stats.Unsubscribed.Load() == 1 }, 15*time.Second, 10*time.Millisecond,
		"the message for the filter the app no longer subscribes to is released")
	require.Eventually(t, func() bool { return again.stats.Acked.Load() == again.stats.Received.Load() }, 10*time.Second, 10*time.Millisecond)

	strict := newComponent(t, props(b.URL(false), "strict"))
	err := strict.Publish(t.Context(), &pubsub.PublishRequest{Topic: x, Data: []byte("again")})
	assert.ErrorIs(t, err, ErrNoSubscribers, "the stale filter is no longer in the broker session")
	publish(t, pub, y, "more")
	assert.Equal(t, "more", string(c.next(t, 10*time.Second).Data))
}

// Without the record (its file lost), the stale filter's messages carry a subscription identifier
// nobody knows: they are still released after unsubscribeGrace, so nothing stalls, but the filter
// stays in the session and later messages for it are released one by one.
func TestStaleSubscriptionWithoutRecordReleasesMessages(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	x, y := base+"/x", base+"/y"
	expect, kill9 := startHelper(t, "HELPER_URL="+b.URL(false), "HELPER_REPLICA=forgetful", "HELPER_TOPIC="+x, "HELPER_TOPIC2="+y)
	expect("READY")
	kill9()
	rec := filepath.Join(os.Getenv("XDG_STATE_HOME"), "mqdapr", "pubsub", url.PathEscape("app-forgetful-ps")+".json")
	assert.FileExists(t, rec, "the helper recorded its filters")
	_ = os.Remove(rec)

	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, x, "for-x")
	publish(t, pub, y, "for-y")

	again := newComponent(t, props(b.URL(false), "forgetful", "unsubscribeGrace", "1s"))
	c := newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: y}, c.handler))
	assert.Equal(t, "for-y", string(c.next(t, 15*time.Second).Data))
	require.Eventually(t, func() bool { return again.stats.Unsubscribed.Load() == 1 }, 15*time.Second, 10*time.Millisecond)

	publish(t, pub, x, "again") // still in the session: accepted, then released
	require.Eventually(t, func() bool { return again.stats.Unsubscribed.Load() == 2 }, 15*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return again.stats.Acked.Load() == again.stats.Received.Load() }, 10*time.Second, 10*time.Millisecond)
}

// A subscription the app drops while the broker is unreachable is removed from the registry at
// once (its messages are released), and the UNSUBSCRIBE that could not be sent then is sent after
// the reconnection: the filter does not linger in the session.
func TestUnsubscribeWhileDisconnectedIsSentAfterReconnect(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	a, bt := base+"/a", base+"/b"
	ps := newComponent(t, props(b.URL(false), "r1", "unsubscribeGrace", "1s"))
	ctxA, closeA := context.WithCancel(t.Context())
	require.NoError(t, ps.Subscribe(ctxA, pubsub.SubscribeRequest{Topic: a}, newCollector().handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: bt}, newCollector().handler))

	b.Stop()
	require.Eventually(t, func() bool { return !ps.conn.Connected() }, 10*time.Second, 5*time.Millisecond)
	closeA()
	subs := ps.subs
	require.Eventually(t, func() bool {
		subs.mu.Lock()
		defer subs.mu.Unlock()
		_, removed := subs.removed[a]
		return removed
	}, 10*time.Second, 10*time.Millisecond, "the dropped subscription is removed while the broker is down")
	b.Start()

	strict := newComponent(t, props(b.URL(false), "strict"))
	require.Eventually(t, func() bool {
		err := strict.Publish(t.Context(), &pubsub.PublishRequest{Topic: a, Data: []byte("x")})
		return errors.Is(err, ErrNoSubscribers)
	}, 20*time.Second, 50*time.Millisecond, "the filter is UNSUBSCRIBEd once the broker is back")
}

// With a dead-letter topic, the messages held for a subscription the app dropped go there (with
// the filter they were for) instead of being acknowledged undelivered.
func TestDroppedSubscriptionMessagesGoToDeadLetterTopic(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	a, bt, dlt := base+"/a", base+"/b", base+"/dead"
	dead := newCollector()
	consumer := newComponent(t, props(b.URL(false), "dead-letter-consumer"))
	require.NoError(t, consumer.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: dlt}, dead.handler))

	ps := newComponent(t, props(b.URL(false), "r1", "unsubscribeGrace", "3s", "deadLetterTopic", dlt))
	ctxA, closeA := context.WithCancel(t.Context())
	require.NoError(t, ps.Subscribe(ctxA, pubsub.SubscribeRequest{Topic: a}, newCollector().handler))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: bt}, newCollector().handler))
	closeA()
	require.Eventually(t, func() bool { return openStreams(ps) == 1 }, 10*time.Second, 5*time.Millisecond)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, a, "for-a") // held, then released to the dead-letter topic

	m := dead.next(t, 15*time.Second)
	assert.Equal(t, "for-a", string(m.Data))
	assert.Equal(t, a, m.Metadata["mqdapr-original-topic"])
	assert.Equal(t, a, m.Metadata["mqdapr-subscription"])
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(0), ps.stats.Unsubscribed.Load())
}
