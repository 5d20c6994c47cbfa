package pubsubmqtt5

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/pubsub"
)

// BenchmarkPublishQoS1 measures a publish that returns after the broker's PUBACK (Mosquitto on
// loopback), one at a time and from 16 concurrent callers.
//
//	go test -run '^$' -bench BenchmarkPublishQoS1 -benchtime 5000x ./components/pubsub-mqtt5
func BenchmarkPublishQoS1(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", par), func(b *testing.B) {
			br := startBrokerB(b)
			ps := newComponentB(b, props(br.URL(false), "bench-pub", "noMatchingSubscribers", "accept")) // nobody subscribes
			payload := make([]byte, 64)
			req := func() *pubsub.PublishRequest {
				return &pubsub.PublishRequest{Topic: "bench/publish", Data: payload}
			}
			b.SetParallelism(par)
			b.ReportAllocs()
			b.ResetTimer()
			if par == 1 {
				for range b.N {
					if err := ps.Publish(context.Background(), req()); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := ps.Publish(context.Background(), req()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkReceiveAck measures the receive → handler → in-order ack path: b.N messages already
// queued in the broker session are drained by a handler that returns at once.
//
//	go test -run '^$' -bench BenchmarkReceiveAck -benchtime 20000x ./components/pubsub-mqtt5
func BenchmarkReceiveAck(b *testing.B) {
	for _, ordering := range []string{OrderingTopic, OrderingNone} {
		b.Run("ordering="+ordering, func(b *testing.B) {
			br := startBrokerB(b)
			topic := "bench/receive/" + ordering
			p := props(br.URL(false), "bench-sub", "receiveMaximum", "64", "ordering", ordering)
			// Create the session and its subscription, then go away so messages queue.
			sub := newComponentB(b, p)
			ctx, cancel := context.WithCancel(context.Background())
			if err := sub.Subscribe(ctx, pubsub.SubscribeRequest{Topic: topic}, func(context.Context, *pubsub.NewMessage) error { return nil }); err != nil {
				b.Fatal(err)
			}
			cancel()
			_ = sub.Close()
			pub := newComponentB(b, props(br.URL(false), "bench-pub"))
			payload := make([]byte, 64)
			for range b.N {
				if err := pub.Publish(context.Background(), &pubsub.PublishRequest{Topic: topic, Data: payload}); err != nil {
					b.Fatal(err)
				}
			}
			var got atomic.Int64
			done := make(chan struct{})
			n := int64(b.N)
			b.ResetTimer()
			again := newComponentB(b, p)
			if err := again.Subscribe(context.Background(), pubsub.SubscribeRequest{Topic: topic}, func(context.Context, *pubsub.NewMessage) error {
				if got.Add(1) == n {
					close(done)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				b.Fatalf("received %d of %d", got.Load(), n)
			}
			for again.stats.Acked.Load() < uint64(n) {
				time.Sleep(time.Millisecond) // the last acks leave on paho's 10 ms flush
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
