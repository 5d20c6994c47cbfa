package broker

import (
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

// Counters an operator reads: connections, sessions, messages in/out by QoS, queued, refusals by
// reason (brokermetrics exposes them to Prometheus).
func TestStatsSnapshot(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxSessionQueue = 1 })
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "sub")
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, "a")
	_, _ = pub.Publish(ctxT(t), pubMsg("t", "b")) // the session queue is full: 0x97
	require.Eventually(t, func() bool { return b.Stats().Connections == 1 }, waitFor, 5*time.Millisecond)
	st := b.Stats()
	require.EqualValues(t, 1, st.ConnectionsBy[0][transportTCP], "one v5 connection over TCP")
	require.EqualValues(t, 2, st.ConnectionsTotal)
	require.Equal(t, 2, st.Sessions, "pub connected, sub kept offline")
	require.Equal(t, [3]int64{0, 2, 0}, st.MessagesInByQoS)
	require.EqualValues(t, 2, st.MessagesIn)
	require.EqualValues(t, 1, st.Queued)
	require.Greater(t, st.QueuedBytes, int64(0))
	require.EqualValues(t, 1, st.Refused["quota_exceeded"])
	require.EqualValues(t, 1, st.RefusedByCode[CodeQuotaExceeded])
}
