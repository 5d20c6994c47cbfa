package broker

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

func (c *client) subscribeOpts(t testing.TB, o paho.SubscribeOptions, subID int) {
	t.Helper()
	s := &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{o}}
	if subID > 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &subID}
	}
	sa, err := c.Subscribe(ctxT(t), s)
	require.NoError(t, err)
	require.Less(t, sa.Reasons[0], byte(0x80))
}

// [MQTT-3.3.1-5] [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] [MQTT-3.3.1-6]: retained messages
// go to new subscriptions with RETAIN set, per Retain Handling; an empty payload clears them.
func TestRetainedAndRetainHandling(t *testing.T) {
	b := newBroker(t, nil)
	pub := dialClient(t, b, "pub")
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "r/a", QoS: 1, Retain: true, Payload: []byte("kept")})
	require.NoError(t, err)

	s0 := dialClient(t, b, "s0")
	s0.subscribeOpts(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 0}, 0)
	m := s0.next(t)
	require.True(t, m.Retain)
	require.Equal(t, "kept", string(m.Payload))
	s0.subscribeOpts(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 0}, 0)
	require.True(t, s0.next(t).Retain) // rh 0: every subscribe

	s1 := dialClient(t, b, "s1")
	s1.subscribeOpts(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 1}, 0)
	require.True(t, s1.next(t).Retain)
	s1.subscribeOpts(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 1}, 0)
	s1.none(t, b) // rh 1: only a new subscription

	s2 := dialClient(t, b, "s2")
	s2.subscribeOpts(t, paho.SubscribeOptions{Topic: "r/+", QoS: 1, RetainHandling: 2}, 0)
	s2.none(t, b) // rh 2: never

	_, err = pub.Publish(ctxT(t), &paho.Publish{Topic: "r/a", QoS: 1, Retain: true})
	require.NoError(t, err)
	s3 := dialClient(t, b, "s3")
	s3.subscribe(t, "r/+", 1)
	s3.none(t, b)
}

// [MQTT-3.3.1-12] [MQTT-3.3.1-13]: RETAIN is cleared on forwarding unless Retain As Published.
func TestRetainAsPublished(t *testing.T) {
	b := newBroker(t, nil)
	plain := dialClient(t, b, "plain")
	plain.subscribeOpts(t, paho.SubscribeOptions{Topic: "t", QoS: 1}, 0)
	rap := dialClient(t, b, "rap")
	rap.subscribeOpts(t, paho.SubscribeOptions{Topic: "t", QoS: 1, RetainAsPublished: true}, 0)
	pub := dialClient(t, b, "pub")
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Retain: true, Payload: []byte("x")})
	require.NoError(t, err)
	require.False(t, plain.next(t).Retain)
	require.True(t, rap.next(t).Retain)
}

// [MQTT-3.8.3-3]: No Local keeps a client's own publishes from it.
func TestNoLocal(t *testing.T) {
	b := newBroker(t, nil)
	c := dialClient(t, b, "self")
	c.subscribeOpts(t, paho.SubscribeOptions{Topic: "t", QoS: 1, NoLocal: true}, 0)
	other := dialClient(t, b, "other")
	c.publish(t, "t", 1, "mine")
	other.publish(t, "t", 1, "theirs")
	require.Equal(t, "theirs", string(c.next(t).Payload))
	c.none(t, b)
}

// [MQTT-3.3.4-3] [MQTT-3.3.4-5]: the subscription identifier of the matching subscription is sent.
func TestSubscriptionIdentifiers(t *testing.T) {
	b := newBroker(t, nil)
	c := dialClient(t, b, "c")
	c.subscribeOpts(t, paho.SubscribeOptions{Topic: "a/+", QoS: 1}, 7)
	c.subscribeOpts(t, paho.SubscribeOptions{Topic: "a/b", QoS: 1}, 9)
	dialClient(t, b, "pub").publish(t, "a/b", 1, "x")
	ids := map[int]bool{}
	for range 2 {
		m := c.next(t)
		require.NotNil(t, m.Properties.SubscriptionIdentifier)
		ids[*m.Properties.SubscriptionIdentifier] = true
	}
	require.Equal(t, map[int]bool{7: true, 9: true}, ids)
}

// [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-20]: request/response properties and
// user properties (in order) pass through unchanged.
func TestPropertiesPassThrough(t *testing.T) {
	b := newBroker(t, nil)
	c := dialClient(t, b, "c")
	c.subscribe(t, "req", 1)
	pf := byte(1)
	props := &paho.PublishProperties{
		ResponseTopic: "resp/1", CorrelationData: []byte{1, 2, 3}, ContentType: "application/json",
		PayloadFormat: &pf,
		User:          paho.UserProperties{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: "a", Value: "3"}},
	}
	_, err := dialClient(t, b, "pub").Publish(ctxT(t), &paho.Publish{Topic: "req", QoS: 1, Payload: []byte("{}"), Properties: props})
	require.NoError(t, err)
	m := c.next(t)
	require.Equal(t, "resp/1", m.Properties.ResponseTopic)
	require.Equal(t, []byte{1, 2, 3}, m.Properties.CorrelationData)
	require.Equal(t, "application/json", m.Properties.ContentType)
	require.Equal(t, byte(1), *m.Properties.PayloadFormat)
	require.Equal(t, props.User, m.Properties.User)
}

// [MQTT-3.3.2-5] [MQTT-3.3.2-6]: a queued message whose expiry passed is not sent; a sent one carries the
// remaining interval.
func TestMessageExpiry(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "sub")
	pub := dialClient(t, b, "pub")
	short, long := uint32(1), uint32(100)
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: &short}})
	require.NoError(t, err)
	_, err = pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: &long}})
	require.NoError(t, err)
	deadline := time.Now().Add(1100 * time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, waitFor, 50*time.Millisecond)
	sub2 := dialClient(t, b, "sub", withExpiry(60), resume())
	m := sub2.next(t)
	require.Equal(t, "long", string(m.Payload))
	require.NotNil(t, m.Properties.MessageExpiry)
	require.LessOrEqual(t, *m.Properties.MessageExpiry, uint32(99))
	sub2.none(t, b)
}

// An in-flight message whose expiry passed while the client was away is still resent on reconnect
// (it was already sent), with DUP and a remaining interval of 0 [MQTT-4.4.0-1] [MQTT-3.3.2-6].
func TestExpiredInflightIsResent(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "sub", true, 3600)
	r.subscribe(t, "t", 1)
	one := uint32(1)
	_, err := dialClient(t, b, "pub").Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("x"), Properties: &paho.PublishProperties{MessageExpiry: &one}})
	require.NoError(t, err)
	p := r.readPublish(t)
	require.Equal(t, uint32(1), *p.Properties.MessageExpiry)
	r.nc.Close() // not acknowledged
	deadline := time.Now().Add(1100 * time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, waitFor, 50*time.Millisecond)
	r2 := dialRaw(t, b)
	r2.connect(t, "sub", false, 3600)
	p2 := r2.readPublish(t)
	require.True(t, p2.Duplicate)
	require.Equal(t, p.PacketID, p2.PacketID)
	require.Equal(t, uint32(0), *p2.Properties.MessageExpiry)
}
