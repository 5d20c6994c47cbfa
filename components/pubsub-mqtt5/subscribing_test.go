package pubsubmqtt5

import (
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A publish that the broker discards (PUBACK 0x10) while the same component is subscribing to a
// matching filter is sent again once the SUBSCRIBE is acknowledged, in both noMatchingSubscribers
// modes, and delivered once. daprd's gRPC client returns from Subscribe before the component has
// subscribed (subscribing.go); without this, Dapr's pub/sub conformance suite run out of process
// lost the first messages of "multiple handlers" (tests/conformance). Here the SUBSCRIBE is held
// back (the registry's session lock) until the publish is seen waiting, so the 0x10 is certain.
func TestPublishRacingSubscribe(t *testing.T) {
	for _, mode := range []string{NoSubscribersAccept, "fail"} {
		t.Run(mode, func(t *testing.T) {
			b := startBroker(t)
			topic := uniqueTopic(t)
			ps := newComponent(t, props(b.URL(false), "racer", "noMatchingSubscribers", mode))
			_, subs, _, _, err := ps.state()
			require.NoError(t, err)
			waiting := make(chan struct{})
			var once sync.Once
			subs.mu.Lock()
			subs.onPublishWait = func() { once.Do(func() { close(waiting) }) }
			subs.mu.Unlock()

			subs.session.Lock()
			locked := true
			defer func() {
				if locked {
					subs.session.Unlock()
				}
			}()
			c := newCollector()
			subscribed := make(chan error, 1)
			go func() {
				subscribed <- ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler)
			}()
			require.Eventually(t, func() bool {
				subs.mu.Lock()
				defer subs.mu.Unlock()
				return subs.subscribing == 1
			}, 10*time.Second, time.Millisecond, "Subscribe did not start")
			published := make(chan error, 1)
			go func() {
				published <- ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: []byte("first")})
			}()
			select {
			case <-waiting:
			case err := <-published:
				t.Fatalf("the publish returned (error %v) while the subscription was not in place: its message was discarded", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the publish neither returned nor waited for the Subscribe in progress")
			}
			subs.session.Unlock()
			locked = false
			require.NoError(t, <-subscribed)
			require.NoError(t, <-published, "sent again once subscribed: accepted in either mode")
			assert.Equal(t, "first", string(c.next(t, 10*time.Second).Data))
			c.none(t, 300*time.Millisecond)
		})
	}
}
