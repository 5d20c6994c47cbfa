package pubsubmqtt5

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

func initErr(t *testing.T, p map[string]string) error {
	t.Helper()
	ps := New(testLog)
	defer ps.Close()
	return ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: p}})
}

// Malformed metadata is refused at Init with the key and what is accepted, before any I/O.
func TestInitRejectsMalformedMetadata(t *testing.T) {
	for _, tc := range []struct {
		key, value, want string
	}{
		{"qos", "2", "qos=2: want 0 or 1"},
		{"qos", "high", `qos="high": want a whole number`},
		{"receiveMaximum", "0", "receiveMaximum=0: want 1 to 65535"},
		{"receiveMaximum", "70000", `receiveMaximum="70000": want a whole number from 0 to 65535`},
		{"ordering", "fifo", `ordering="fifo": want "topic", "none" or "key"`},
		{"ordering", "key", `ordering="key" needs orderingKeyFrom: want payload:<JSON field path> or property:<MQTT user property name>`},
		{"orderingKeyFrom", "payload:deviceId", `orderingKeyFrom="payload:deviceId" is used only with ordering="key" (ordering is "topic")`},
		{"retain", "perhaps", `retain="perhaps": want true or false`},
		{"sessionExpiry", "0", "sessionExpiry=0s: want at least 1s"},
		{"keepAlive", "soon", `keepAlive="soon": want a duration`},
		{"url", "http://localhost:1883", `scheme "http" is not supported; want mqtt, tcp, mqtts, ssl or tls`},
		{"url", "localhost:1883", "want scheme://host:port"},
		{"url", "mqtt://user:hunter2@localhost:1883", "use the username and password fields"},
		{"sharedSubscriptionGroup", "a/b", `want a non-empty name without / + or #`},
		{"deadLetterTopic", "dead/#", "wildcards + and # are allowed only in subscriptions"},
		{"maxDeliveryAttempts", "-1", "maxDeliveryAttempts=-1: want 0 (no limit) or more"},
		{"noMatchingSubscribers", "drop", `noMatchingSubscribers="drop": want "fail" or "accept"`},
		{"caFile", "/nonexistent/ca.pem", "TLS material given but the broker URL is not a TLS one"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			err := initErr(t, map[string]string{tc.key: tc.value, "connectTimeout": "1s"})
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidMetadata)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "hunter2", "credentials never appear in errors")
		})
	}
}

func TestInitAcceptsAIOMetadataNames(t *testing.T) {
	md, unknown, err := parseMetadata(map[string]string{"hostname": "broker.local", "satAuthFile": "/var/run/secrets/tokens/mqtt-client-token", "consumerID": "app", "keyPrefix": "none"})
	require.NoError(t, err)
	assert.Empty(t, unknown, "daprd's keys are accepted silently")
	u, err := md.BrokerURL()
	require.NoError(t, err)
	assert.Equal(t, "mqtts://broker.local:18883", u.String(), "AIO's defaults: port 18883, TLS on")

	md, _, err = parseMetadata(map[string]string{"useTls": "false"})
	require.NoError(t, err)
	u, _ = md.BrokerURL()
	assert.Equal(t, "mqtt://aio-broker:18883", u.String())

	_, unknown, err = parseMetadata(map[string]string{"urll": "mqtt://x:1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"urll"}, unknown, "misspelt keys are reported for a warning")
}

func TestInitUnreachableBroker(t *testing.T) {
	port := testutil.FreePort(t) // nothing listens there
	start := time.Now()
	err := initErr(t, map[string]string{"url": "mqtt://127.0.0.1:" + itoa(port), "connectTimeout": "1s", "clientID": "x"})
	require.Error(t, err)
	assert.ErrorIs(t, err, mqttconn.ErrConnect)
	assert.Contains(t, err.Error(), "127.0.0.1:"+itoa(port))
	assert.Contains(t, err.Error(), "within 1s (connectTimeout)")
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestInitBadCredentialsFailsFastWithReason(t *testing.T) {
	needsMosquitto(t)
	b := testutil.StartMosquitto(t, testutil.MosquittoOptions{Passwords: map[string]string{"app": "right"}})
	err := initErr(t, props(b.URL(false), "r1", "username", "app", "password", "wrong", "connectTimeout", "20s"))
	require.Error(t, err)
	assert.ErrorIs(t, err, mqttconn.ErrConnect)
	assert.Contains(t, err.Error(), "refused the connection: reason 0x8")
	assert.NotContains(t, err.Error(), "wrong")

	ok := newComponent(t, props(b.URL(false), "r2", "username", "app", "password", "right"))
	c := newCollector()
	topic := uniqueTopic(t)
	require.NoError(t, ok.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	publish(t, ok, topic, "authenticated")
	assert.Equal(t, "authenticated", string(c.next(t, 10*time.Second).Data))
}

func TestTLSWithGeneratedCA(t *testing.T) {
	needsMosquitto(t)
	tlsFiles := testutil.GenerateTLS(t, "mqdapr")
	b := testutil.StartMosquitto(t, testutil.MosquittoOptions{TLS: tlsFiles})
	ps := newComponent(t, props(b.URL(true), "r1", "caFile", tlsFiles.CA))
	c := newCollector()
	topic := uniqueTopic(t)
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	publish(t, ps, topic, "over-tls")
	assert.Equal(t, "over-tls", string(c.next(t, 10*time.Second).Data))

	// Inline PEM works too; a CA that did not sign the server's certificate is refused.
	inline := newComponent(t, props(b.URL(true), "r2", "caCert", string(tlsFiles.CAPEM)))
	publish(t, inline, topic, "inline-ca")
	other := testutil.GenerateTLS(t, "other")
	err := initErr(t, props(b.URL(true), "r3", "caFile", other.CA, "connectTimeout", "1s"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate")
}

func TestPublishRejectsBadTopicsAndMetadata(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	for _, tc := range []struct {
		topic string
		md    map[string]string
		want  string
		is    error
	}{
		{"a/+/b", nil, "wildcards + and # are allowed only in subscriptions", ErrInvalidTopic},
		{"a/#", nil, "wildcards", ErrInvalidTopic},
		{"$SYS/x", nil, "reserved for the broker", ErrInvalidTopic},
		{"", nil, "empty topic", ErrInvalidTopic},
		{"bad\xffutf8", nil, "not valid UTF-8", ErrInvalidTopic},
		{"nul\x00", nil, "contains NUL", ErrInvalidTopic},
		{"ok", map[string]string{"ttlInSeconds": "-3"}, "ttlInSeconds=\"-3\": want whole seconds", ErrInvalidMetadata},
		{"ok", map[string]string{"retain": "sometimes"}, "retain=\"sometimes\": want true or false", ErrInvalidMetadata},
		{"ok", map[string]string{"correlationData": "!!"}, "correlationData: want base64", ErrInvalidMetadata},
		{"ok", map[string]string{"responseTopic": "r/#"}, "responseTopic", ErrInvalidMetadata},
	} {
		err := ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: tc.topic, Data: []byte("x"), Metadata: tc.md})
		require.Error(t, err, "topic %q md %v", tc.topic, tc.md)
		assert.ErrorIs(t, err, tc.is)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestSubscribeRejectsBadFilters(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	for _, f := range []string{"a/#/b", "a/b+", "", "$share/g", "$share//t", "$partition/4of4/t", "$partition/0of4/a/#/b", "$partition/x/t"} {
		err := ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: f}, newCollector().handler)
		require.Error(t, err, f)
		assert.ErrorIs(t, err, ErrInvalidTopic, f)
	}
}

// A message larger than the broker's Maximum Packet Size is refused before sending, naming the
// limit: the broker would otherwise drop the connection, or a subscriber would silently lose it.
func TestPublishOverBrokerMaximumPacketSize(t *testing.T) {
	needsMosquitto(t)
	b := testutil.StartMosquitto(t, testutil.MosquittoOptions{MaxPacketSize: 2048})
	ps := newComponent(t, props(b.URL(false), "r1", "noMatchingSubscribers", "accept")) // nobody subscribes
	topic := uniqueTopic(t)
	err := ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: make([]byte, 4096)})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrMessageTooLarge)
	assert.Contains(t, err.Error(), "accepts at most 2048")
	require.NoError(t, ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: make([]byte, 1024)}))
}

func TestCallsBeforeInitAndAfterClose(t *testing.T) {
	ps := New(testLog)
	err := ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: "t", Data: []byte("x")})
	assert.ErrorIs(t, err, ErrNotInitialized)
	err = ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: "t"}, newCollector().handler)
	assert.ErrorIs(t, err, ErrNotInitialized)
	require.NoError(t, ps.Close())
	require.NoError(t, ps.Close(), "Close is idempotent")
	err = ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: "t"})
	assert.ErrorIs(t, err, ErrClosed)
}

// daprd calls Init again on the same instance when daprd restarts: the connection and session stay.
func TestInitIsIdempotent(t *testing.T) {
	b := startBroker(t)
	p := props(b.URL(false), "r1")
	ps := newComponent(t, p)
	conn := ps.conn
	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: p}}))
	assert.Same(t, conn, ps.conn)
	topic := uniqueTopic(t)
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	publish(t, ps, topic, "still-works")
	assert.Equal(t, "still-works", string(c.next(t, 10*time.Second).Data))
}

// A publish during a broker outage waits for the reconnect (bounded by ctx) instead of failing at
// once, and a subscription resumes after the broker restarts.
func TestReconnectAfterBrokerRestart(t *testing.T) {
	b := startBroker(t)
	ps := newComponent(t, props(b.URL(false), "r1"))
	topic := uniqueTopic(t)
	c := newCollector()
	require.NoError(t, ps.Subscribe(t.Context(), pubsub.SubscribeRequest{Topic: topic}, c.handler))
	b.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := ps.Publish(ctx, &pubsub.PublishRequest{Topic: topic, Data: []byte("lost?")})
	cancel()
	require.Error(t, err, "no broker: the caller is told, nothing is dropped silently")
	assert.True(t, errors.Is(err, ErrPublishFailed), err)
	b.Start()
	publish(t, ps, topic, "after-restart") // waits for the reconnect
	// The failed publish may still arrive: if the PUBLISH left before the connection dropped,
	// paho resends it from the session after the reconnect. The error said so ("may still have
	// reached the broker"): at least once, never silently lost.
	m := c.next(t, 30*time.Second)
	if string(m.Data) == "lost?" {
		m = c.next(t, 30*time.Second)
	}
	assert.Equal(t, "after-restart", string(m.Data))
}

func itoa(n int) string { return strconv.Itoa(n) }
