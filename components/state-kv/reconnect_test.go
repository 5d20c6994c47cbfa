package statekv

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// startBrokerAt starts a broker with a key-value service on addr; stop closes it.
func startBrokerAt(t *testing.T, addr string) (b *broker.Broker, stop func()) {
	t.Helper()
	engine, err := statestore.NewEngine(statestore.NewDefaultOptions())
	require.NoError(t, err)
	svc, err := kvservice.New(kvservice.Options{Engine: engine})
	require.NoError(t, err)
	o := broker.NewDefaultOptions()
	o.Addr = addr
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = []broker.Service{svc}
	b, err = broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, svc.Start(b))
	return b, func() {
		require.NoError(t, svc.Close())
		require.NoError(t, b.Close())
		require.NoError(t, engine.Close())
	}
}

// While the broker is down requests fail (retriable) within the caller's deadline; after it comes
// back on the same address the component reconnects, subscribes again and serves requests.
func TestBrokerRestart(t *testing.T) {
	b, stop := startBrokerAt(t, "127.0.0.1:0")
	addr := b.Addrs()[0]
	s := newStore(t, props("mqtt://"+addr, "r1"))
	set(t, s, "k", "v")
	stop()

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := s.Get(ctx, &state.GetRequest{Key: "k"})
	cancel()
	require.ErrorIs(t, err, ErrRequestFailed)

	_, stop = startBrokerAt(t, addr)
	t.Cleanup(stop)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return s.Set(ctx, &state.SetRequest{Key: "k", Value: []byte("again")}) == nil
	}, waitFor, 100*time.Millisecond)
	require.Equal(t, "again", string(get(t, s, "k").Data))
}
