package broker

import (
	"context"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// echoService answers publishes on kv/# on their response topic, keeping the correlation data.
type echoService struct{}

func (echoService) Match(topic string) bool { return strings.HasPrefix(topic, "kv/") }

func (echoService) Handle(ctx context.Context, _ string, msg *Message, pub Publisher) error {
	if string(msg.Payload) == "fail" {
		return &ReasonError{Code: CodeImplementationSpecificError, Reason: "refused"}
	}
	return pub.Publish(ctx, &Message{Topic: msg.ResponseTopic, QoS: 1, Payload: append([]byte("ok:"), msg.Payload...), CorrelationData: msg.CorrelationData})
}

// A Service consumes matching publishes inside the broker: the publisher is acknowledged after
// Handle, with the code of its error; replies are routed like client publishes.
func TestService(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Services = []Service{echoService{}} })
	spy := dialClient(t, b, "spy")
	spy.subscribe(t, "kv/#", 1)
	c := dialClient(t, b, "c")
	c.subscribe(t, "reply/c", 1)
	r, err := c.Publish(ctxT(t), &paho.Publish{Topic: "kv/set", QoS: 1, Payload: []byte("v"),
		Properties: &paho.PublishProperties{ResponseTopic: "reply/c", CorrelationData: []byte("42")}})
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, r.ReasonCode)
	m := c.next(t)
	require.Equal(t, "ok:v", string(m.Payload))
	require.Equal(t, []byte("42"), m.Properties.CorrelationData)

	r, err = c.Publish(ctxT(t), &paho.Publish{Topic: "kv/set", QoS: 2, Payload: []byte("q2"),
		Properties: &paho.PublishProperties{ResponseTopic: "reply/c"}})
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, r.ReasonCode)
	require.Equal(t, "ok:q2", string(c.next(t).Payload))

	r, _ = c.Publish(ctxT(t), &paho.Publish{Topic: "kv/set", QoS: 1, Payload: []byte("fail")})
	require.Equal(t, CodeImplementationSpecificError, r.ReasonCode)
	spy.none(t, b) // consumed by the service, not routed
}

// Publish (the services' Publisher) checks what it is given.
func TestPublishValidates(t *testing.T) {
	b := newBroker(t, nil)
	require.ErrorIs(t, b.Publish(ctxT(t), &Message{Topic: "a/+"}), ErrInvalidTopic)
	require.ErrorIs(t, b.Publish(ctxT(t), &Message{Topic: "a", QoS: 3}), ErrInvalidQoS)
	require.NoError(t, b.Publish(ctxT(t), &Message{Topic: "a", QoS: 1}))
}

// A will may not name a topic a Service consumes: it would reach the Service from a client that is
// gone, or reach subscribers as if the broker had sent it (the key-value store's notifications).
func TestWillOnServiceTopicRefused(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Services = []Service{echoService{}} })
	w := dialClient(t, b, "watcher")
	w.subscribe(t, "kv/#", 1)
	r := dialRaw(t, b)
	r.write(t, willConnect("forger", "kv/notify", "forged", nil))
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, packets.CONNACK, ack.Type)
	require.Equal(t, CodeNotAuthorized, ack.Content.(*packets.Connack).ReasonCode)
	require.Nil(t, r.read(t), "connection not closed after CONNACK 0x87")
	waitOffline(t, b, "forger")
	w.none(t, b) // the will was not published
}
