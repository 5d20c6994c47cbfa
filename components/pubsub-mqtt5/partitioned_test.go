package pubsubmqtt5

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// delivery is one successful handler call of a partitioned subscription.
type delivery struct {
	part        int
	topic, data string
}

// partitions subscribes ps to the K partitions of filter (only those in open, all when open is
// nil) and records every delivery, in the order the handlers were called.
type partitions struct {
	mu      sync.Mutex
	got     []delivery
	cancels []context.CancelFunc
	ch      chan delivery
}

func subscribePartitions(t *testing.T, ps *PubSub, filter string, k int, open ...int) *partitions {
	t.Helper()
	r := &partitions{ch: make(chan delivery, 10000)}
	if open == nil {
		for i := range k {
			open = append(open, i)
		}
	}
	for _, i := range open {
		ctx, cancel := context.WithCancel(t.Context())
		r.cancels = append(r.cancels, cancel)
		require.NoError(t, ps.Subscribe(ctx, pubsub.SubscribeRequest{Topic: partition.Topic(filter, i, k)}, func(_ context.Context, m *pubsub.NewMessage) error {
			assert.Equal(t, partition.Topic(filter, i, k), m.Topic, "a partition's messages carry its Dapr topic")
			d := delivery{part: i, topic: m.Metadata[mdTopic], data: string(m.Data)}
			r.mu.Lock()
			r.got = append(r.got, d)
			r.mu.Unlock()
			r.ch <- d
			return nil
		}))
	}
	return r
}

// wait returns the next n deliveries or fails after timeout.
func (r *partitions) wait(t *testing.T, n int, timeout time.Duration) []delivery {
	t.Helper()
	deadline := time.After(timeout)
	var out []delivery
	for len(out) < n {
		select {
		case d := <-r.ch:
			out = append(out, d)
		case <-deadline:
			t.Fatalf("%d of %d messages delivered within %s", len(out), n, timeout)
		}
	}
	return out
}

// closeAll closes every partition stream, as a daprd shutting down does.
func (r *partitions) closeAll() {
	for _, c := range r.cancels {
		c()
	}
}

// topicsPerPartition returns n topics under base for each of the k partitions (by partition.Of).
func topicsPerPartition(base string, k, n int) map[int][]string {
	out := map[int][]string{}
	for i := 0; len(out) < k || minLen(out) < n; i++ {
		tp := fmt.Sprintf("%s/dev-%d", base, i)
		p := partition.Of(tp, k)
		if len(out[p]) < n {
			out[p] = append(out[p], tp)
		}
	}
	return out
}

func minLen(m map[int][]string) int {
	n := -1
	for _, v := range m {
		if n < 0 || len(v) < n {
			n = len(v)
		}
	}
	return n
}

// One MQTT subscription spread over 4 partition streams: every message is delivered exactly once,
// each topic's messages all reach its partition (partition.Of of the topic), in publish order,
// and every message is acknowledged.
func TestPartitionedSubscriptionByTopicKeepsOrderPerTopic(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1", "receiveMaximum", "32"))
	base := uniqueTopic(t)
	r := subscribePartitions(t, ps, base+"/+", 4)
	pub := newComponent(t, props(b.URL(false), "publisher"))

	var topics []string
	for _, ts := range topicsPerPartition(base, 4, 2) {
		topics = append(topics, ts...)
	}
	const perTopic = 25
	for n := range perTopic {
		for _, tp := range topics {
			publish(t, pub, tp, fmt.Sprint(n))
		}
	}
	got := r.wait(t, perTopic*len(topics), 30*time.Second)
	next := map[string]int{}
	parts := map[int]bool{}
	for _, d := range got {
		assert.Equal(t, partition.Of(d.topic, 4), d.part, "%s goes to its partition", d.topic)
		assert.Equal(t, fmt.Sprint(next[d.topic]), d.data, "order on %s", d.topic)
		next[d.topic]++
		parts[d.part] = true
	}
	assert.Len(t, parts, 4, "every partition handled messages")
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == uint64(perTopic*len(topics)) }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(perTopic*len(topics)), ps.stats.Delivered.Load(), "each message once")
}

// With ordering key from a payload field, the messages of one key reach one partition in publish
// order whatever their topics; messages without the field are ordered by topic.
func TestPartitionedSubscriptionByPayloadKey(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1", "ordering", "key", "orderingKeyFrom", "payload:data.deviceId"))
	base := uniqueTopic(t)
	r := subscribePartitions(t, ps, base+"/#", 4)
	pub := newComponent(t, props(b.URL(false), "publisher"))

	keys := []string{"d1", "d2", "d3", "d4", "d5", "d6"}
	const perKey = 20
	for n := range perKey {
		for i, k := range keys {
			body, _ := json.Marshal(map[string]any{"data": map[string]any{"deviceId": k, "seq": n}})
			publish(t, pub, fmt.Sprintf("%s/t%d", base, (n+i)%3), string(body)) // one key over three topics
		}
	}
	publish(t, pub, base+"/raw", "not json")
	got := r.wait(t, perKey*len(keys)+1, 30*time.Second)
	next := map[string]int{}
	for _, d := range got {
		if d.data == "not json" {
			assert.Equal(t, partition.Of(base+"/raw", 4), d.part, "no key: the topic is the key")
			continue
		}
		var v struct {
			Data struct {
				DeviceID string `json:"deviceId"`
				Seq      int    `json:"seq"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal([]byte(d.data), &v))
		k := v.Data.DeviceID
		assert.Equal(t, partition.Of(k, 4), d.part, "key %s goes to its partition", k)
		assert.Equal(t, next[k], v.Data.Seq, "order of key %s across topics", k)
		next[k]++
	}
}

// The ordering key can come from a user property.
func TestOrderingKeyFromUserProperty(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1", "ordering", "key", "orderingKeyFrom", "property:device"))
	base := uniqueTopic(t)
	r := subscribePartitions(t, ps, base+"/#", 4)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	for n := range 10 {
		publish(t, pub, fmt.Sprintf("%s/t%d", base, n), fmt.Sprint(n), "device", "dev-7")
	}
	for i, d := range r.wait(t, 10, 30*time.Second) {
		assert.Equal(t, partition.Of("dev-7", 4), d.part)
		assert.Equal(t, fmt.Sprint(i), d.data, "one key, one order across ten topics")
	}
}

// When the app subscribes to only some partitions, the messages of the missing ones go to the open
// ones after unsubscribeGrace (nothing lost or stuck) and keep their order, and an error names
// the missing partition; once it opens, its topics go back to it.
func TestMissingPartitionMessagesGoToOpenPartitions(t *testing.T) {
	b := startBroker(t)
	var logs testutil.SyncBuffer
	log := logger.NewLogger("mqttv5-partition-test")
	log.SetOutput(&logs)
	ps := New(log)
	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: props(b.URL(false), "r1", "unsubscribeGrace", "200ms")}}))
	t.Cleanup(func() { _ = ps.Close() })
	base := uniqueTopic(t)
	byPart := topicsPerPartition(base, 4, 1)
	orphan := byPart[3][0] // its home partition 3 is not subscribed
	r := subscribePartitions(t, ps, base+"/+", 4, 0, 1, 2)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	for n := range 10 {
		publish(t, pub, orphan, fmt.Sprint(n))
	}
	for i, d := range r.wait(t, 10, 30*time.Second) {
		assert.NotEqual(t, 3, d.part)
		assert.Equal(t, fmt.Sprint(i), d.data, "order kept while redirected")
	}
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == 10 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "1 of its 4 partitions have had no stream for 200ms; subscribe the app to "+partition.Topic(base+"/+", 3, 4))
	}, 10*time.Second, 5*time.Millisecond, "an error names the missing partition: %s", logs.String())

	late := subscribePartitions(t, ps, base+"/+", 4, 3)
	publish(t, pub, orphan, "home")
	d := late.wait(t, 1, 30*time.Second)[0]
	assert.Equal(t, delivery{part: 3, topic: orphan, data: "home"}, d)
}

// Subscribing to a filter with another partition count than its open partitions is refused with
// an error saying what is accepted; once those streams closed (daprd restarted with an app using
// another K), the new count takes over and the messages that waited meanwhile are delivered.
func TestPartitionCountChange(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	base := uniqueTopic(t)
	filter := base + "/+"
	four := subscribePartitions(t, ps, filter, 4)
	for _, topic := range []string{partition.Topic(filter, 0, 2), filter} {
		err := ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, newCollector().handler)
		require.ErrorIs(t, err, ErrInvalidTopic, topic)
		assert.Contains(t, err.Error(), "every Dapr subscription of one filter must use the same partition count")
		assert.Contains(t, err.Error(), "already has 4 partitions, 4 of them open")
	}

	plain := base + "/plain/+"
	plainCtx, closePlain := context.WithCancel(t.Context())
	require.NoError(t, ps.Subscribe(plainCtx, pubsub.SubscribeRequest{Topic: plain}, newCollector().handler))
	err := ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: partition.Topic(plain, 0, 2)}, newCollector().handler)
	require.ErrorIs(t, err, ErrInvalidTopic)
	assert.Contains(t, err.Error(), fmt.Sprintf("already has a plain subscription (%q)", plain))

	closePlain()
	four.closeAll()
	require.Eventually(t, func() bool {
		ps.subs.mu.Lock()
		defer ps.subs.mu.Unlock()
		return ps.subs.openStreamsLocked() == 0
	}, 10*time.Second, 5*time.Millisecond)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	var topics []string
	for _, ts := range topicsPerPartition(base, 4, 1) {
		topics = append(topics, ts...)
	}
	for _, tp := range topics {
		publish(t, pub, tp, "waited") // held: no stream is open
	}
	require.Eventually(t, func() bool { return ps.stats.Held.Load() > 0 }, 10*time.Second, 5*time.Millisecond)
	two := subscribePartitions(t, ps, filter, 2)
	seen := map[string]bool{}
	for _, d := range two.wait(t, len(topics), 30*time.Second) {
		assert.Equal(t, partition.Of(d.topic, 2), d.part, "the new count decides")
		seen[d.topic] = true
	}
	assert.Len(t, seen, len(topics))
	four.mu.Lock()
	assert.Empty(t, four.got, "nothing reached a closed stream")
	four.mu.Unlock()
}

// A partition whose stream closes while the others stay open (daprd reopening it) gets its
// messages held, not moved: once it reopens within unsubscribeGrace they reach it, in order.
func TestClosedPartitionMessagesWaitForItsStream(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1", "unsubscribeGrace", "1h"))
	base := uniqueTopic(t)
	home3 := topicsPerPartition(base, 4, 1)[3][0]
	r := subscribePartitions(t, ps, base+"/+", 4)
	r.cancels[3]()
	require.Eventually(t, func() bool {
		ps.subs.mu.Lock()
		defer ps.subs.mu.Unlock()
		return len(ps.subs.subs[base+"/+"].missing()) == 1
	}, 10*time.Second, 5*time.Millisecond)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	for n := range 5 {
		publish(t, pub, home3, fmt.Sprint(n))
	}
	require.Eventually(t, func() bool { return ps.stats.Held.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the first is held, the rest wait behind it in its lane")

	again := subscribePartitions(t, ps, base+"/+", 4, 3)
	for i, d := range again.wait(t, 5, 30*time.Second) {
		assert.Equal(t, delivery{part: 3, topic: home3, data: fmt.Sprint(i)}, d)
	}
	r.mu.Lock()
	assert.Empty(t, r.got, "nothing went to the other partitions")
	r.mu.Unlock()
}
