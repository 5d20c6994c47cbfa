package pubsubmqtt5

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mqdapr/mqdapr/broker/brokertest"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperProcess())
	}
	// The components' filter records (stateDir's default) go to a folder of this run, which the
	// kill -9 helper processes inherit.
	state, err := os.MkdirTemp("", "mqdapr-pubsub-state-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_STATE_HOME", state)
	goleak.VerifyTestMain(m,
		// grpc/opencensus background goroutines started by imported packages.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.Cleanup(func(code int) {
			_ = os.RemoveAll(state)
			os.Exit(code)
		}),
	)
}

// testBroker is a broker the component tests run against: Mosquitto 2.0.11 (default) or mqdapr's
// embedded broker (MQDAPR_TEST_BROKER=embedded); `make test` runs the package against both.
type testBroker interface {
	URL(tls bool) string
	Stop()
	Start()
}

func embedded() bool { return os.Getenv("MQDAPR_TEST_BROKER") == "embedded" }

func startBroker(t *testing.T) testBroker {
	if embedded() {
		return brokertest.Start(t)
	}
	return testutil.StartMosquitto(t, testutil.MosquittoOptions{})
}

// needsMosquitto skips tests that use Mosquitto-only set-ups (password files, TLS listener,
// max_packet_size) when the suite runs against the embedded broker.
func needsMosquitto(t *testing.T) {
	if embedded() {
		t.Skip("uses a Mosquitto-specific set-up; covered by the run against Mosquitto")
	}
}

func startBrokerB(b *testing.B) testBroker {
	if embedded() {
		return brokertest.Start(b)
	}
	return testutil.StartMosquitto(b, testutil.MosquittoOptions{})
}

func newComponentB(b *testing.B, p map[string]string) *PubSub {
	b.Helper()
	ps := New(testLog)
	if err := ps.Init(context.Background(), pubsub.Metadata{Base: metadata.Base{Properties: p}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ps.Close() })
	return ps
}

var testLog = func() logger.Logger {
	l := logger.NewLogger("mqttv5-test")
	l.SetOutputLevel(logger.WarnLevel)
	if os.Getenv("MQDAPR_TEST_DEBUG") != "" {
		l.SetOutputLevel(logger.DebugLevel)
	}
	return l
}()

// props returns the metadata of a component on url with a client id unique to the test.
func props(url, replica string, extra ...string) map[string]string {
	p := map[string]string{
		"url":                  url,
		"consumerID":           "app",
		"clientID":             replica,
		"connectTimeout":       "5s",
		"retryInitialInterval": "20ms",
		"retryMaxInterval":     "200ms",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		p[extra[i]] = extra[i+1]
	}
	return p
}

func newComponent(t *testing.T, p map[string]string) *PubSub {
	t.Helper()
	ps := New(testLog)
	require.NoError(t, ps.Init(t.Context(), pubsub.Metadata{Base: metadata.Base{Properties: p}}))
	t.Cleanup(func() { _ = ps.Close() })
	return ps
}

// collector records what a handler was given.
type collector struct {
	mu   sync.Mutex
	msgs []*pubsub.NewMessage
	ch   chan *pubsub.NewMessage
}

func newCollector() *collector { return &collector{ch: make(chan *pubsub.NewMessage, 10000)} }

func (c *collector) handler(_ context.Context, m *pubsub.NewMessage) error {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	c.ch <- m
	return nil
}

// next waits for the next message or fails after timeout.
func (c *collector) next(t *testing.T, timeout time.Duration) *pubsub.NewMessage {
	t.Helper()
	select {
	case m := <-c.ch:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %s", timeout)
		return nil
	}
}

// none asserts that no message arrives within d (used only for "nothing more is delivered").
func (c *collector) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.ch:
		t.Fatalf("unexpected message on %s: %q", m.Topic, m.Data)
	case <-time.After(d):
	}
}

func publish(t *testing.T, ps *PubSub, topic string, data string, md ...string) {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(md); i += 2 {
		m[md[i]] = md[i+1]
	}
	require.NoError(t, ps.Publish(t.Context(), &pubsub.PublishRequest{Topic: topic, Data: []byte(data), Metadata: m}))
}

func uniqueTopic(t *testing.T) string {
	return fmt.Sprintf("test/%s/%d", t.Name(), time.Now().UnixNano())
}
