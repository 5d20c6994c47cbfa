package pubsubmqtt5

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A dead-letter publish that the broker answers with PUBACK 0x10 (nobody subscribes to the
// dead-letter topic: the broker discarded it) is not a success: the original stays unacknowledged
// and the dead-letter publish is retried, counted, until a subscriber exists; only then is the
// original acknowledged.
func TestDeadLetterWithoutSubscriberKeepsOriginal(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	dlt := topic + "/dead"
	ps := newComponent(t, props(b.URL(false), "r1", "maxDeliveryAttempts", "2", "deadLetterTopic", dlt))
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(context.Context, *pubsub.NewMessage) error {
		return errors.New("cannot parse reading")
	}))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, "poison")

	require.Eventually(t, func() bool { return ps.stats.DeadLetterFailures.Load() >= 2 }, 10*time.Second, 10*time.Millisecond,
		"the dead-letter publish answered 0x10 is retried")
	assert.Equal(t, uint64(0), ps.stats.DeadLettered.Load())
	assert.Equal(t, uint64(0), ps.stats.Acked.Load(), "the original is not acknowledged while the dead letter exists nowhere")

	dead := newCollector()
	consumer := newComponent(t, props(b.URL(false), "dead-letter-consumer"))
	require.NoError(t, consumer.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: dlt}, dead.handler))
	m := dead.next(t, 15*time.Second)
	assert.Equal(t, "poison", string(m.Data))
	assert.Equal(t, topic, m.Metadata["mqdapr-original-topic"])
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the original is acknowledged once the dead letter was accepted with 0x00")
	assert.Equal(t, uint64(1), ps.stats.DeadLettered.Load())
}

// Publish on PUBACK 0x10: an error by default (retriable: daprd's dead-lettering is an ordinary
// publish), success with noMatchingSubscribers "accept", and success for a retained message (the
// broker keeps it) either way.
func TestPublishNoMatchingSubscribers(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)

	strict := newComponent(t, props(b.URL(false), "strict"))
	err := strict.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: []byte("x")})
	require.ErrorIs(t, err, ErrNoSubscribers)
	assert.Contains(t, err.Error(), topic)
	publish(t, strict, topic+"/config", "retained", "retain", "true")

	lax := newComponent(t, props(b.URL(false), "lax", "noMatchingSubscribers", "accept"))
	publish(t, lax, topic, "y")

	c := newCollector()
	require.NoError(t, strict.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	publish(t, strict, topic, "z")
	assert.Equal(t, "z", string(c.next(t, 10*time.Second).Data), "with a subscriber the same publish succeeds")
}
