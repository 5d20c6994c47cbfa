package broker

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

func withWill(topic, payload string, delay uint32) clientOpt {
	return func(_ *paho.ClientConfig, c *paho.Connect) {
		c.WillMessage = &paho.WillMessage{Topic: topic, Payload: []byte(payload), QoS: 1}
		c.WillProperties = &paho.WillProperties{WillDelayInterval: &delay}
	}
}

// [MQTT-3.2.2-16]: an empty client ID gets a server-assigned one in CONNACK.
func TestAssignedClientID(t *testing.T) {
	b := newBroker(t, nil)
	c := dialClient(t, b, "")
	require.NotEmpty(t, c.connack.Properties.AssignedClientID)
}

// [MQTT-3.1.4-3]: a second connection with the same client ID takes the session over; the first gets
// DISCONNECT 0x8E.
func TestSessionTakeover(t *testing.T) {
	b := newBroker(t, nil)
	first := dialClient(t, b, "dup", withExpiry(60))
	first.subscribe(t, "t", 1)
	second := dialClient(t, b, "dup", withExpiry(60), resume())
	require.True(t, second.connack.SessionPresent)
	select {
	case d := <-first.disc:
		require.Equal(t, CodeSessionTakenOver, d.ReasonCode)
	case <-time.After(waitFor):
		t.Fatal("first connection not disconnected")
	}
	dialClient(t, b, "pub").publish(t, "t", 1, "x")
	require.Equal(t, "x", string(second.next(t).Payload))
}

// [MQTT-3.1.2-22]: a client silent for 1.5 times its keep-alive is disconnected (0x8D).
func TestKeepAliveTimeout(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "quiet", true, 1
	r.send(t, cp)
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	start := time.Now()
	r.expectDisconnect(t, CodeKeepAliveTimeout)
	require.GreaterOrEqual(t, time.Since(start), time.Second)
}

// [MQTT-3.1.2-8] [MQTT-3.1.3-9]: a connection lost without DISCONNECT publishes the will; after the will
// delay if one is set; DISCONNECT 0x00 deletes it [MQTT-3.14.4-3].
func TestWillMessages(t *testing.T) {
	b := newBroker(t, nil)
	w := dialClient(t, b, "watcher")
	w.subscribe(t, "will/#", 1)

	r := dialRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "dies", true, 30
	c.WillFlag, c.WillTopic, c.WillMessage, c.WillQOS = true, "will/now", []byte("gone"), 1
	c.WillProperties = &packets.Properties{}
	r.send(t, cp)
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	r.nc.Close()
	require.Equal(t, "gone", string(w.next(t).Payload))

	clean := dialClient(t, b, "clean", withWill("will/clean", "no", 0))
	require.NoError(t, clean.Disconnect(&paho.Disconnect{ReasonCode: 0}))

	delayed, err := tryClient(t, b.Addrs()[0], "delayed", withWill("will/delayed", "late", 1), withExpiry(60))
	require.NoError(t, err)
	start := time.Now()
	delayed.TerminateConnectionForTest()
	m := w.next(t)
	require.Equal(t, "late", string(m.Payload))
	require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond)

	// A reconnect within the delay cancels the will.
	cancelled, err := tryClient(t, b.Addrs()[0], "back", withWill("will/cancelled", "no", 2), withExpiry(60))
	require.NoError(t, err)
	cancelled.TerminateConnectionForTest()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		s := b.sessions["back"]
		return s != nil && s.conn == nil
	}, waitFor, 5*time.Millisecond)
	dialClient(t, b, "back", withExpiry(60), resume())
	deadline := time.Now().Add(2500 * time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, waitFor, 50*time.Millisecond)
	w.none(t, b)
}

// A client that never sends CONNECT is closed after ConnectTimeout [MQTT-3.1.4-1 is for a bad
// CONNECT; the timeout is ours] and other clients are unaffected.
func TestNoConnectTimeout(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.ConnectTimeout = 200 * time.Millisecond })
	r := dialRaw(t, b)
	require.Nil(t, r.read(t))
	dialClient(t, b, "ok")
}

// MaxConnections: a connection beyond the limit gets CONNACK 0x97 quota exceeded; sockets beyond
// twice the limit (not yet connected) are closed at once.
func TestMaxConnections(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxConnections = 1 })
	dialClient(t, b, "one")
	c, err := tryClient(t, b.Addrs()[0], "two")
	require.NoError(t, err)
	require.Equal(t, CodeQuotaExceeded, c.connack.ReasonCode)
	require.Eventually(t, func() bool { // the refused one is gone
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.conns) == 1
	}, waitFor, 2*time.Millisecond)
	idle := dialRaw(t, b) // counts as the second socket
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.conns) == 2
	}, waitFor, 2*time.Millisecond)
	extra := dialRaw(t, b)
	require.Nil(t, extra.read(t)) // closed without a reply
	require.Equal(t, int64(1), b.Stats().Refused["server_busy"])
	_ = idle
}

// MaxSessions bounds the sessions kept for offline clients: a CONNECT needing a new one gets 0x97.
func TestMaxSessions(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxSessions, o.MaxConnections = 1, 1 })
	kept := dialClient(t, b, "kept", withExpiry(60))
	require.NoError(t, kept.Disconnect(&paho.Disconnect{}))
	require.Eventually(t, func() bool { return b.Stats().Connections == 0 }, waitFor, 5*time.Millisecond)
	c, err := tryClient(t, b.Addrs()[0], "new")
	require.NoError(t, err)
	require.Equal(t, CodeQuotaExceeded, c.connack.ReasonCode)
	dialClient(t, b, "kept", withExpiry(60), resume()) // its own session is still reachable
}
