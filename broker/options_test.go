package broker

import (
	"bytes"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

func TestOptionsValidation(t *testing.T) {
	o := NewDefaultOptions()
	require.Equal(t, "127.0.0.1:1883", o.Addr) // loopback by default
	require.NoError(t, o.validate())
	for name, mutate := range map[string]func(*Options){
		"MaxConnections":  func(o *Options) { o.MaxConnections = 0 },
		"MaxPacketSize":   func(o *Options) { o.MaxPacketSize = 10 },
		"ReceiveMaximum":  func(o *Options) { o.ReceiveMaximum = 0 },
		"MaxSessionQueue": func(o *Options) { o.MaxSessionQueue = 0 },
		"ConnectTimeout":  func(o *Options) { o.ConnectTimeout = 0 },
	} {
		o := NewDefaultOptions()
		mutate(o)
		_, err := New(o)
		require.ErrorIs(t, err, ErrInvalidOptions, name)
		require.ErrorContains(t, err, name)
	}
}

// Counters an operator reads: connections, messages in/out, queued, refusals by reason.
func TestStatsText(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxSessionQueue = 1 })
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "sub")
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, "a")
	_, _ = pub.Publish(ctxT(t), pubMsg("t", "b"))
	require.Eventually(t, func() bool { return b.Stats().Connections == 1 }, waitFor, 5*time.Millisecond)
	var buf bytes.Buffer
	require.NoError(t, b.Stats().WriteText(&buf))
	out := buf.String()
	require.Contains(t, out, "mqbroker_connections 1\n")
	require.Contains(t, out, "mqbroker_messages_in_total 2\n")
	require.Contains(t, out, "mqbroker_messages_queued 1\n")
	require.Contains(t, out, `mqbroker_refused_total{reason="quota_exceeded"} 1`)
}
