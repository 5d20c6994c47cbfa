// Package aiosdk drives the embedded broker's key-value store with the public Azure IoT
// Operations Go SDK as a real client over TCP: go/services v0.4.1 (statestore, leasedlock) on
// go/mqtt v0.4.2 and go/protocol v0.4.3. It is its own module so that the main go.mod does not
// depend on the SDK.
package aiosdk

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/iot-operations-sdks/go/mqtt"
	"github.com/Azure/iot-operations-sdks/go/protocol"
	"github.com/Azure/iot-operations-sdks/go/services/statestore"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	sstore "github.com/mqdapr/mqdapr/broker/statestore"
)

// waitFor bounds every wait on an observable condition.
const waitFor = 10 * time.Second

// stack is the broker with its key-value store, as cmd/mqbroker wires them, on 127.0.0.1:0 with
// a data directory (the SDK asks for a persistent session).
type stack struct {
	b      *broker.Broker
	engine *sstore.Engine
	host   string
	port   uint16
}

func startStack(t *testing.T, mutate func(*sstore.Options)) *stack {
	t.Helper()
	eo := sstore.NewDefaultOptions()
	if mutate != nil {
		mutate(&eo)
	}
	engine, err := sstore.NewEngine(eo)
	require.NoError(t, err)
	svc, err := kvservice.New(kvservice.Options{Engine: engine, Now: eo.Now})
	require.NoError(t, err)
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.DataDir = t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = []broker.Service{svc}
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, svc.Start(b))
	t.Cleanup(func() {
		require.NoError(t, svc.Close())
		require.NoError(t, b.Close())
		require.NoError(t, engine.Close())
	})
	host, port, err := net.SplitHostPort(b.Addrs()[0])
	require.NoError(t, err)
	p, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err)
	return &stack{b: b, engine: engine, host: host, port: uint16(p)}
}

// client connects an SDK session client as id and returns a started state store client on it.
func (s *stack) client(t *testing.T, id string, appOpts ...protocol.ApplicationOption) *statestore.Client[string, string] {
	t.Helper()
	mc, err := mqtt.NewSessionClient(id, mqtt.TCPConnection(s.host, s.port),
		mqtt.WithKeepAlive(30), mqtt.WithSessionExpiry(60), mqtt.WithCleanStart(true))
	require.NoError(t, err)
	require.NoError(t, mc.Start())
	t.Cleanup(func() { _ = mc.Stop() })
	app, err := protocol.NewApplication(appOpts...)
	require.NoError(t, err)
	c, err := statestore.New[string, string](app, mc)
	require.NoError(t, err)
	require.NoError(t, c.Start(ctxT(t)))
	t.Cleanup(c.Close)
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next notification on ch, failing after waitFor.
func next(t *testing.T, ch <-chan statestore.Notify[string, string]) statestore.Notify[string, string] {
	t.Helper()
	select {
	case n, ok := <-ch:
		require.True(t, ok, "notification channel closed")
		return n
	case <-time.After(waitFor):
		t.Fatalf("no notification within %s", waitFor)
		return statestore.Notify[string, string]{}
	}
}
