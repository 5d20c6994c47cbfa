package pubsubmqtt5

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPublishSubscribeCarriesProperties(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	topic := uniqueTopic(t)
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))

	ct := "application/json"
	require.NoError(t, ps.Publish(t.Context(), &pubsub.PublishRequest{
		Topic: topic, Data: []byte(`{"t":21.5}`), ContentType: &ct,
		Metadata: map[string]string{
			"traceparent":     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"site":            "plant-7",
			"ttlInSeconds":    "3600",
			"responseTopic":   "replies/r1",
			"correlationData": "AQID",
			"rawPayload":      "true",
		},
	}))
	m := c.next(t, 10*time.Second)
	assert.Equal(t, `{"t":21.5}`, string(m.Data))
	assert.Equal(t, topic, m.Topic)
	require.NotNil(t, m.ContentType)
	assert.Equal(t, ct, *m.ContentType)
	assert.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", m.Metadata["traceparent"])
	assert.Equal(t, "plant-7", m.Metadata["site"])
	assert.Equal(t, "replies/r1", m.Metadata[mdInRespTopic])
	assert.Equal(t, "AQID", m.Metadata[mdInCorrData])
	assert.Equal(t, "1", m.Metadata[mdQoS])
	assert.NotContains(t, m.Metadata, "rawPayload", "daprd's own key is not forwarded")
	assert.NotContains(t, m.Metadata, mdRetained)
	assert.NotEmpty(t, m.Metadata[mdMsgExpiry])
}

func TestWildcardSubscription(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	base := uniqueTopic(t)
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/+/telemetry"}, c.handler))
	publish(t, ps, base+"/dev1/telemetry", "a")
	err := ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: base + "/dev1/status", Data: []byte("ignored")})
	require.ErrorIs(t, err, ErrNoSubscribers, "nobody subscribes to it: the broker discarded it")
	publish(t, ps, base+"/dev2/telemetry", "b")
	got := map[string]string{}
	for range 2 {
		m := c.next(t, 10*time.Second)
		got[m.Topic] = string(m.Data)
	}
	assert.Equal(t, map[string]string{base + "/dev1/telemetry": "a", base + "/dev2/telemetry": "b"}, got)
}

// A failed handler call is retried in-process until it succeeds, and only then acknowledged.
func TestHandlerErrorIsRedelivered(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	topic := uniqueTopic(t)
	var calls atomic.Int32
	done := make(chan string, 1)
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, m *pubsub.NewMessage) error {
		if calls.Add(1) <= 3 {
			return errors.New("app not ready")
		}
		done <- string(m.Data)
		return nil
	}))
	publish(t, ps, topic, "reading-1")
	select {
	case d := <-done:
		assert.Equal(t, "reading-1", d)
	case <-time.After(10 * time.Second):
		t.Fatal("message not redelivered after handler errors")
	}
	assert.Equal(t, int32(4), calls.Load())
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(3), ps.stats.HandlerErrors.Load())
}

// After maxDeliveryAttempts the message goes to the dead-letter topic with its properties and the
// error, and is acknowledged only then; the messages behind it flow again.
func TestRetryLimitMovesToDeadLetterTopic(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	dlt := topic + "/dead"
	ps := newComponent(t, props(b.URL(false), "r1", "maxDeliveryAttempts", "3", "deadLetterTopic", dlt))
	var poisonCalls atomic.Int32
	good := make(chan string, 10)
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(_ context.Context, m *pubsub.NewMessage) error {
		if string(m.Data) == "poison" {
			poisonCalls.Add(1)
			return errors.New("cannot parse reading")
		}
		good <- string(m.Data)
		return nil
	}))
	dead := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: dlt}, dead.handler))

	publish(t, ps, topic, "poison", "device", "d-42")
	publish(t, ps, topic, "fine")

	m := dead.next(t, 10*time.Second)
	assert.Equal(t, "poison", string(m.Data))
	assert.Equal(t, "d-42", m.Metadata["device"], "original user properties kept")
	assert.Equal(t, "cannot parse reading", m.Metadata["mqdapr-error"])
	assert.Equal(t, topic, m.Metadata["mqdapr-original-topic"])
	assert.Equal(t, "3", m.Metadata["mqdapr-delivery-attempts"])
	assert.Equal(t, int32(3), poisonCalls.Load())
	select {
	case d := <-good:
		assert.Equal(t, "fine", d)
	case <-time.After(10 * time.Second):
		t.Fatal("message behind the poison one not delivered")
	}
	assert.Equal(t, uint64(1), ps.stats.DeadLettered.Load())
}

// Without a dead-letter topic the message is never dropped: retried on, and counted.
func TestRetryLimitWithoutDeadLetterKeepsRetrying(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	ps := newComponent(t, props(b.URL(false), "r1", "maxDeliveryAttempts", "2"))
	var calls atomic.Int32
	ok := make(chan struct{})
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(context.Context, *pubsub.NewMessage) error {
		if calls.Add(1) < 5 {
			return errors.New("downstream unavailable")
		}
		close(ok)
		return nil
	}))
	publish(t, ps, topic, "x")
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		t.Fatal("not retried past the limit")
	}
	assert.Equal(t, uint64(1), ps.stats.Exhausted.Load())
	assert.Equal(t, uint64(0), ps.stats.DeadLettered.Load())
}

// Messages that arrive while no subscription stream is open are held, unacknowledged, and
// delivered when a stream opens (daprd opens streams after start-up, and re-opens them).
func TestMessagesHeldUntilStreamOpens(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	topic := uniqueTopic(t)

	streamCtx, closeStream := context.WithCancel(t.Context())
	first := newCollector()
	require.NoError(t, ps.Subscribe(streamCtx, pubsub.SubscribeRequest{Topic: topic}, first.handler))
	publish(t, ps, topic, "before")
	assert.Equal(t, "before", string(first.next(t, 10*time.Second).Data))
	closeStream()

	publish(t, ps, topic, "while-closed")
	require.Eventually(t, func() bool { return ps.stats.Held.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, first.ch)

	second := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, second.handler))
	assert.Equal(t, "while-closed", string(second.next(t, 10*time.Second).Data))
	assert.Equal(t, int64(0), ps.stats.Held.Load())
}

// A component that restarts with the same client id resumes its session: messages published
// while it was down, and messages it had not acknowledged, are delivered after the restart,
// held until the new stream opens.
func TestRedeliveryAfterRestartWithSameSession(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	p := props(b.URL(false), "r1")

	ps := New(testLog)
	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: p}}))
	release := make(chan struct{})
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(ctx context.Context, m *pubsub.NewMessage) error {
		select { // the app never finishes before the component goes away
		case <-release:
		case <-ctx.Done():
		}
		return errors.New("interrupted")
	}))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, "in-flight")
	require.Eventually(t, func() bool { return ps.stats.InFlight.Load() == 1 }, 10*time.Second, 10*time.Millisecond)
	ps.md.ShutdownTimeout = 50 * time.Millisecond
	require.NoError(t, ps.Close())
	close(release)
	publish(t, pub, topic, "while-down")

	again := newComponent(t, p)
	require.Eventually(t, func() bool { return again.stats.Received.Load() == 2 && again.stats.Held.Load() == 1 }, 10*time.Second, 10*time.Millisecond,
		"resent messages are held until the stream opens (the second waits behind the first in its topic's lane)")
	assert.Equal(t, uint64(0), again.stats.Delivered.Load())
	c := newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	assert.Equal(t, "in-flight", string(c.next(t, 10*time.Second).Data))
	assert.Equal(t, "while-down", string(c.next(t, 10*time.Second).Data))
}

// The component never runs more handlers at once than receiveMaximum, even when the broker sends
// more (Mosquitto 2.0.11 does), and gets everything through.
func TestConcurrencyBoundedByReceiveMaximum(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	ps := newComponent(t, props(b.URL(false), "r1", "receiveMaximum", "3", "ordering", "none"))
	gate := make(chan struct{})
	var done atomic.Int32
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, func(ctx context.Context, _ *pubsub.NewMessage) error {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		done.Add(1)
		return nil
	}))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	const n = 30
	for i := range n {
		publish(t, pub, topic, fmt.Sprint(i))
	}
	require.Eventually(t, func() bool { return ps.stats.InFlight.Load() == 3 }, 10*time.Second, 10*time.Millisecond)
	close(gate)
	require.Eventually(t, func() bool { return done.Load() == n }, 20*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(3), ps.stats.MaxInFlight.Load(), "never more than receiveMaximum handlers at once")
	require.Eventually(t, func() bool { return ps.stats.Acked.Load() == n }, 10*time.Second, 10*time.Millisecond)
}

// With ordering "topic", one topic's messages are handled one at a time in order while other
// topics proceed in parallel.
func TestOrderingPerTopic(t *testing.T) {
	b := startBroker(t)
	base := uniqueTopic(t)
	ps := newComponent(t, props(b.URL(false), "r1", "receiveMaximum", "8"))
	seen := map[string][]string{}
	var mu = make(chan struct{}, 1)
	var total atomic.Int32
	var concurrentSameTopic atomic.Bool
	busy := map[string]*atomic.Bool{"a": {}, "b": {}}
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: base + "/+"}, func(_ context.Context, m *pubsub.NewMessage) error {
		dev := m.Topic[strings.LastIndex(m.Topic, "/")+1:]
		if !busy[dev].CompareAndSwap(false, true) {
			concurrentSameTopic.Store(true)
		}
		defer busy[dev].Store(false)
		mu <- struct{}{}
		seen[dev] = append(seen[dev], string(m.Data))
		<-mu
		total.Add(1)
		return nil
	}))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprint(i))
		publish(t, pub, base+"/a", fmt.Sprint(i))
		publish(t, pub, base+"/b", fmt.Sprint(i))
	}
	require.Eventually(t, func() bool { return total.Load() == 40 }, 20*time.Second, 10*time.Millisecond)
	assert.False(t, concurrentSameTopic.Load())
	assert.Equal(t, want, seen["a"])
	assert.Equal(t, want, seen["b"])
}

// Two replicas (distinct client ids, one group) split a shared subscription; no message twice.
func TestSharedSubscriptionSplitsBetweenReplicas(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	r1 := newComponent(t, props(b.URL(false), "replica-1", "sharedSubscriptionGroup", "connector"))
	r2 := newComponent(t, props(b.URL(false), "replica-2", "sharedSubscriptionGroup", "connector"))
	require.NotEqual(t, r1.ClientID(), r2.ClientID())
	c1, c2 := newCollector(), newCollector()
	require.NoError(t, r1.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c1.handler))
	require.NoError(t, r2.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c2.handler))
	pub := newComponent(t, props(b.URL(false), "publisher"))
	const n = 40
	for i := range n {
		publish(t, pub, topic, fmt.Sprint(i))
	}
	got := map[string]int{}
	for range n {
		select {
		case m := <-c1.ch:
			got[string(m.Data)]++
		case m := <-c2.ch:
			got[string(m.Data)]++
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d messages arrived", len(got), n)
		}
	}
	assert.Len(t, got, n)
	for k, v := range got {
		assert.Equal(t, 1, v, "message %s delivered %d times", k, v)
	}
	assert.NotEmpty(t, c1.msgs, "replica 1 got none")
	assert.NotEmpty(t, c2.msgs, "replica 2 got none")
}

// A retained message reaches a non-shared subscriber that subscribes later, flagged as retained;
// a shared subscription does not get it (MQTT v5 §3.3.1.3).
func TestRetainedMessageReachesLateNonSharedSubscriber(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, `{"asset":"pump-1","unit":"C"}`, "retain", "true")

	late := newComponent(t, props(b.URL(false), "late"))
	c := newCollector()
	require.NoError(t, late.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	m := c.next(t, 10*time.Second)
	assert.Equal(t, `{"asset":"pump-1","unit":"C"}`, string(m.Data))
	assert.Equal(t, "true", m.Metadata[mdRetained])

	publish(t, pub, topic, "live")
	m = c.next(t, 10*time.Second)
	assert.Equal(t, "live", string(m.Data))
	assert.NotContains(t, m.Metadata, mdRetained, "a live message is not flagged retained")
	// Mosquitto 2.0.11 also sends retained messages to new shared subscriptions, against MQTT v5
	// §3.3.1.3; the embedded broker does not.
	if embedded() {
		shared := newComponent(t, props(b.URL(false), "shared", "sharedSubscriptionGroup", "g"))
		sc := newCollector()
		require.NoError(t, shared.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, sc.handler))
		publish(t, pub, topic, "live-2")
		assert.Equal(t, "live-2", string(sc.next(t, 10*time.Second).Data), "a shared subscriber's first message is the live one, not the retained one")
	}
}

// A message whose expiry passed while the subscriber was away is not delivered; one that has not
// expired is, with the remaining interval.
func TestMessageExpiry(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	p := props(b.URL(false), "sub")
	sub := newComponent(t, p)
	c := newCollector()
	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, sub.Subscribe(ctx, pubsub.SubscribeRequest{Topic: topic}, c.handler))
	cancel()
	require.NoError(t, sub.Close()) // session stays with the broker

	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, "short", "ttlInSeconds", "1")
	publish(t, pub, topic, "long", "ttlInSeconds", "3600")
	// Mosquitto counts expiry in whole seconds: wait past the second after next.
	expiredAt := time.Now().Add(2100 * time.Millisecond)
	time.Sleep(time.Until(expiredAt)) // let the short message's expiry pass (the behaviour under test)

	back := newComponent(t, p)
	require.NoError(t, back.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	m := c.next(t, 10*time.Second)
	assert.Equal(t, "long", string(m.Data))
	assert.NotEqual(t, "3600", m.Metadata[mdMsgExpiry], "the remaining interval is passed on")
	publish(t, pub, topic, "marker")
	assert.Equal(t, "marker", string(c.next(t, 10*time.Second).Data), "the expired message never arrives")
}

// --- kill -9 of the component process before its acknowledgement ---

const helperEnv = "MQDAPR_PUBSUB_HELPER"

// runHelperProcess is a component in a child process whose handlers (HELPER_TOPIC, and
// HELPER_TOPIC2 if set) report each message on stdout ("GOT", "GOT2") and then block for ever, so
// the message is never acknowledged.
func runHelperProcess() int {
	p := props(os.Getenv("HELPER_URL"), os.Getenv("HELPER_REPLICA"), "unsubscribeGrace", "1s")
	ps := New(testLog)
	if err := ps.Init(context.Background(), pubsub.Metadata{Base: metadata.Base{Properties: p}}); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	err := ps.Subscribe(context.Background(), pubsub.SubscribeRequest{Topic: os.Getenv("HELPER_TOPIC")}, func(ctx context.Context, m *pubsub.NewMessage) error {
		fmt.Printf("GOT %s\n", m.Data)
		<-ctx.Done()
		return ctx.Err()
	})
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	if t := os.Getenv("HELPER_TOPIC2"); t != "" {
		if err := ps.Subscribe(context.Background(), pubsub.SubscribeRequest{Topic: t}, func(ctx context.Context, m *pubsub.NewMessage) error {
			fmt.Printf("GOT2 %s\n", m.Data)
			<-ctx.Done()
			return ctx.Err()
		}); err != nil {
			fmt.Println("ERR", err)
			return 1
		}
	}
	fmt.Println("READY")
	select {}
}

func TestUnackedMessageSurvivesKill9(t *testing.T) {
	b := startBroker(t)
	topic := uniqueTopic(t)
	expect, kill9 := startHelper(t, "HELPER_URL="+b.URL(false), "HELPER_REPLICA=victim", "HELPER_TOPIC="+topic)
	expect("READY")
	pub := newComponent(t, props(b.URL(false), "publisher"))
	publish(t, pub, topic, "reading-7")
	assert.Equal(t, "GOT reading-7", expect("GOT"))
	kill9()

	again := newComponent(t, props(b.URL(false), "victim"))
	c := newCollector()
	require.NoError(t, again.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	m := c.next(t, 15*time.Second)
	assert.Equal(t, "reading-7", string(m.Data), "the unacknowledged message is redelivered after kill -9")
}

// startHelper starts runHelperProcess in a child process with env added. expect waits for a line
// of its output starting with prefix; kill9 sends SIGKILL and waits for the process to end.
func startHelper(t *testing.T, env ...string) (expect func(prefix string) string, kill9 func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"=1"), env...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	waited := make(chan struct{})
	lines := make(chan string, 10)
	go func() {
		defer close(waited)
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		_ = cmd.Wait()
		close(lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range lines {
		}
		<-waited
	})
	expect = func(prefix string) string {
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				require.True(t, ok, "helper exited")
				require.False(t, strings.HasPrefix(l, "ERR"), "helper failed: %s", l)
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("helper did not say %s", prefix)
				return ""
			}
		}
	}
	kill9 = func() {
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for range lines {
		}
		<-waited
	}
	return expect, kill9
}
