package pubsubmqtt5

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Close lets a running handler finish and acknowledges its message, so it is not redelivered to
// the next instance; messages not yet started stay with the broker and are.
func TestGracefulCloseAcksFinishedHandlers(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	p := props(b.URL(false), "r1", "receiveMaximum", "1", "shutdownTimeout", "10s")
	ps := New(testLog)
	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: p}}))
	started := make(chan string, 10)
	finish := make(chan struct{})
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, m *pubsub.NewMessage) error {
		started <- string(m.Data)
		<-finish
		return nil
	}))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, "first")
	publish(t, pub, topic, "second")
	assert.Equal(t, "first", <-started)

	disp := ps.disp
	closed := make(chan error)
	go func() { closed <- ps.Close() }()
	require.Eventually(t, func() bool { // Close began and waits for the running handler
		select {
		case <-disp.stopped():
			return true
		default:
			return false
		}
	}, 5*time.Second, 5*time.Millisecond)
	close(finish)
	require.NoError(t, <-closed)
	assert.Equal(t, uint64(1), ps.stats.Acked.Load(), "the finished message was acknowledged before disconnecting")
	assert.Empty(t, started, "no new handler call after Close began")

	again := newComponent(t, p)
	c := newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	assert.Equal(t, "second", string(c.next(t, 10*time.Second).Data), "the unstarted message stays with the broker")
	c.none(t, 300*time.Millisecond)
}

// Concurrent publishers across a broker restart: every publish the component reported as done is
// delivered; failures are reported to the caller (who retries, as daprd's resiliency does).
func TestConcurrentPublishAcrossBrokerRestart(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	subP := props(b.URL(false), "sub", "ordering", "none", "receiveMaximum", "64")
	sub := newComponent(t, subP)
	var mu sync.Mutex
	received := map[string]bool{}
	require.NoError(t, sub.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, m *pubsub.NewMessage) error {
		mu.Lock()
		received[string(m.Data)] = true
		mu.Unlock()
		return nil
	}))
	pub := newComponent(t, props(b.URL(false), "publisher", "publishTimeout", "20s"))

	const workers, each = 8, 40
	var acked sync.Map
	var failures atomic.Int32
	var wg sync.WaitGroup
	half := make(chan struct{})
	var sent atomic.Int32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					err := pub.Publish(ctx, &pubsub.PublishRequest{Topic: topic, Data: []byte(id)})
					cancel()
					if err == nil {
						acked.Store(id, true)
						break
					}
					if !errors.Is(err, ErrPublishFailed) {
						t.Errorf("publish %s: %v", id, err)
						return
					}
					failures.Add(1)
				}
				if sent.Add(1) == workers*each/2 {
					close(half)
				}
			}
		}()
	}
	<-half
	b.Stop()
	b.Start()
	wg.Wait()

	n := 0
	acked.Range(func(any, any) bool { n++; return true })
	require.Equal(t, workers*each, n)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) == workers*each
	}, 30*time.Second, 20*time.Millisecond, "every acknowledged publish is delivered")
	t.Logf("publishes retried after a broker-side failure: %d", failures.Load())
}
