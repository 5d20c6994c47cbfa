package statekv

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// An unreachable broker fails Init within connectTimeout; the component stays uninitialised.
func TestInitUnreachableBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	s := New(testLog)
	err = s.Init(t.Context(), state.Metadata{Base: metadataBase(props("mqtt://"+addr, "r1", "connectTimeout", "300ms"))})
	require.ErrorIs(t, err, mqttconn.ErrConnect)
	_, err = s.Get(t.Context(), &state.GetRequest{Key: "k"})
	require.ErrorIs(t, err, ErrNotInitialized)
	require.NoError(t, s.Close())
}

// denySubscribe refuses subscriptions to the component's response topics.
type denySubscribe struct{}

func (denySubscribe) AuthorizePublish(context.Context, broker.Client, string) error { return nil }

func (denySubscribe) AuthorizeSubscribe(_ context.Context, _ broker.Client, filter string) error {
	if strings.Contains(filter, "/services/statestore/") {
		return errors.New("denied")
	}
	return nil
}

// A broker that refuses the response-topic subscription fails Init with a message saying which
// authorisation is missing.
func TestInitResponseTopicRefused(t *testing.T) {
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Authorizer = denySubscribe{}
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })

	s := New(testLog)
	err = s.Init(t.Context(), state.Metadata{Base: metadataBase(props("mqtt://"+b.Addrs()[0], "r1", "connectTimeout", "2s"))})
	require.ErrorIs(t, err, ErrRequestFailed)
	require.ErrorContains(t, err, "clients/<clientId>/services/statestore/#")
	require.NoError(t, s.Close())
}
