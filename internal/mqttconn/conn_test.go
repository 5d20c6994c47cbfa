package mqttconn

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// When Dial returns, what the first CONNACK told is in place: autopaho releases AwaitConnection
// before it runs OnConnectionUp, so a Dial that returned on AwaitConnection alone let the first
// Publish see MaxPacketSize 0 and send a message the broker refuses by dropping the connection
// (and, the message being in the session, on every reconnection after). The connection-up
// callback below is slow on purpose: it stands for the goroutine being scheduled late.
func TestDialReturnsAfterConnectionUpCallbacks(t *testing.T) {
	o := broker.NewDefaultOptions()
	o.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.MaxPacketSize = 2048
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })

	s := DefaultSettings()
	s.URL, s.ClientID, s.ConnectTimeout = "mqtt://"+o.Addr, "r1", 5*time.Second
	var hookDone atomic.Bool
	c, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub,
		OnConnectionUp: func(*autopaho.ConnectionManager, *paho.Connack) {
			time.Sleep(200 * time.Millisecond) // widens the window; not a synchronisation
			hookDone.Store(true)
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	assert.EqualValues(t, 2048, c.MaxPacketSize(), "the broker's Maximum Packet Size from CONNACK")
	assert.True(t, c.Connected())
	assert.EqualValues(t, 1, c.Connects())
	assert.True(t, hookDone.Load(), "Options.OnConnectionUp has run for the first connection")
}
