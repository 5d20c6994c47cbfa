package pubsubmqtt5

import (
	"context"
	"time"
)

// A publish through this component can race a Subscribe of the same component. daprd's gRPC
// client returns from Subscribe as soon as it has sent the topic on the PullMessages stream
// (dapr v1.16.0 pkg/components/pubsub/pluggable.go:159-212: pullMessages sends the topic at line
// 175 and returns at line 212, without waiting for an answer), before the component
// has even been called, let alone subscribed at the broker; so an app that subscribes and then
// publishes at once, and Dapr's pub/sub conformance suite run out of process ("multiple
// handlers"), can have its first messages discarded by the broker with PUBACK 0x10 "no matching
// subscribers". In process, Subscribe returns after the SUBACK and there is no race.
//
// So Publish notes how many Subscribe calls had ended before it sent; on 0x10 it waits (up to
// publishTimeout) for the Subscribe calls in progress, and sends the message once more if one
// ended meanwhile and the session now has a subscription matching the topic. 0x10 means that no
// subscriber got the message, so the second send makes no duplicate. What remains is the
// scheduling gap between the SDK receiving the stream and calling Subscribe: a 0x10 that comes
// back from the broker before that goroutine has run is not retried.

// beginSubscribe and endSubscribe bracket a Subscribe call.
func (r *registry) beginSubscribe() {
	r.mu.Lock()
	r.subscribing++
	r.mu.Unlock()
}

func (r *registry) endSubscribe() {
	r.mu.Lock()
	r.subscribing--
	r.subscribes.Add(1)
	r.notifyLocked()
	r.mu.Unlock()
}

// subscribesEnded is the number of Subscribe calls that have ended.
func (r *registry) subscribesEnded() uint64 { return r.subscribes.Load() }

// subscribedMeanwhile waits until no Subscribe call is in progress (at most timeout, or until ctx
// ends) and reports whether a Subscribe call ended after since and a subscription of the session
// matches topic.
func (r *registry) subscribedMeanwhile(ctx context.Context, timeout time.Duration, since uint64, topic string) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.subscribing > 0 {
		ch := r.changed
		hook := r.onPublishWait
		r.mu.Unlock()
		if hook != nil {
			hook()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			r.mu.Lock()
			return false
		}
		r.mu.Lock()
	}
	if r.subscribes.Load() == since {
		return false
	}
	for _, s := range r.subs {
		if s.mqttFilter != "" && topicMatches(s.topic, topic) {
			return true
		}
	}
	return false
}
