package statekv

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	"github.com/dapr/kit/logger"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

func TestMain(m *testing.M) {
	if os.Getenv(killHelperEnv) != "" {
		os.Exit(runKillHelper())
	}
	goleak.VerifyTestMain(m,
		// grpc/opencensus background goroutines started by imported packages.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
	)
}

const waitFor = 10 * time.Second

var testLog = func() logger.Logger {
	l := logger.NewLogger("mqttkv-test")
	l.SetOutputLevel(logger.FatalLevel)
	return l
}()

// kvBroker is the embedded broker with its key-value service, on 127.0.0.1:0.
type kvBroker struct {
	b      *broker.Broker
	engine *statestore.Engine
}

func startBroker(t *testing.T, withKV bool) *kvBroker {
	return startBrokerWith(t, withKV, nil)
}

// startBrokerB is startBroker for benchmarks.
func startBrokerB(b *testing.B) *kvBroker { return startBrokerWith(b, true, nil) }

func startBrokerWith(t testing.TB, withKV bool, mutate func(*statestore.Options)) *kvBroker {
	return startBrokerOpts(t, withKV, mutate, nil)
}

// startBrokerOpts is startBrokerWith that also adjusts the broker's options.
func startBrokerOpts(t testing.TB, withKV bool, mutate func(*statestore.Options), mutateBroker func(*broker.Options)) *kvBroker {
	t.Helper()
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutateBroker != nil {
		mutateBroker(o)
	}
	kb := &kvBroker{}
	var svc *kvservice.Service
	if withKV {
		eo := statestore.NewDefaultOptions()
		if mutate != nil {
			mutate(&eo)
		}
		engine, err := statestore.NewEngine(eo)
		require.NoError(t, err)
		svc, err = kvservice.New(kvservice.Options{Engine: engine})
		require.NoError(t, err)
		o.Services = []broker.Service{svc}
		kb.engine = engine
	}
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	if svc != nil {
		require.NoError(t, svc.Start(b))
	}
	kb.b = b
	t.Cleanup(func() {
		if svc != nil {
			require.NoError(t, svc.Close())
		}
		require.NoError(t, b.Close())
		if kb.engine != nil {
			require.NoError(t, kb.engine.Close())
		}
	})
	return kb
}

func (k *kvBroker) url() string { return "mqtt://" + k.b.Addrs()[0] }

// props returns the metadata of a component on url with a client id unique to the replica.
func props(url, replica string, extra ...string) map[string]string {
	p := map[string]string{
		"url":            url,
		"consumerID":     "app",
		"clientID":       replica,
		"connectTimeout": "5s",
		"requestTimeout": "5s",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		p[extra[i]] = extra[i+1]
	}
	return p
}

func newStore(t *testing.T, p map[string]string) *Store {
	t.Helper()
	s := New(testLog)
	require.NoError(t, s.Init(t.Context(), state.Metadata{Base: metadata.Base{Properties: p}}))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func metadataBase(p map[string]string) metadata.Base { return metadata.Base{Properties: p} }

func get(t *testing.T, s *Store, key string) *state.GetResponse {
	t.Helper()
	res, err := s.Get(t.Context(), &state.GetRequest{Key: key})
	require.NoError(t, err)
	return res
}

func set(t *testing.T, s *Store, key string, value string, md ...string) {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(md); i += 2 {
		m[md[i]] = md[i+1]
	}
	require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: key, Value: []byte(value), Metadata: m}))
}
