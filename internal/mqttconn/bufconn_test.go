package mqttconn

import (
	"bytes"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// Packets that arrive in one segment are all read, in order, through the buffer of an untapped
// connection and through the tap of a tapped one (which records their subscription identifiers),
// and paho's net.Buffers writes arrive whole.
func TestBufferedConnReadsEveryPacket(t *testing.T) {
	t.Run("untapped", func(t *testing.T) { testBufferedConn(t, nil) })
	t.Run("tapped", func(t *testing.T) {
		tap := newSubIDTap()
		testBufferedConn(t, tap)
		ids, ok := tap.take(&paho.Publish{QoS: 1, PacketID: 2})
		require.True(t, ok)
		require.Equal(t, []int{3}, ids)
		ids, ok = tap.take(&paho.Publish{QoS: 1, PacketID: 1})
		require.True(t, ok)
		require.Nil(t, ids)
	})
}

func testBufferedConn(t *testing.T, tap *subIDTap) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	big := bytes.Repeat([]byte{7}, 3*readBufferSize) // larger than the buffer: read past it
	sent := [][]byte{
		publishPacket(1, 1, "a", nil, []byte("one")),
		publishPacket(1, 2, "b", []int{3}, big),
		publishPacket(0, 0, "c", nil, []byte("three")),
	}
	got := make(chan *packets.ControlPacket, 1)
	errs := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer func() { _ = c.Close() }()
		if _, err := c.Write(bytes.Join(sent, nil)); err != nil { // one write: one segment or few
			errs <- err
			return
		}
		p, err := packets.ReadPacket(c)
		if err != nil {
			errs <- err
			return
		}
		got <- p
	}()

	u, err := url.Parse("mqtt://" + ln.Addr().String())
	require.NoError(t, err)
	conn, err := dial(t.Context(), autopaho.ClientConfig{ConnectTimeout: 5 * time.Second}, u, tap)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	if tap == nil {
		require.IsType(t, &bufferedTCPConn{}, conn.(*coalescingConn).Conn)
	} else {
		require.IsType(t, &tappedTCPConn{}, conn, "a *net.TCPConn underneath: writev, no lock")
	}

	for i, want := range []struct {
		topic   string
		payload []byte
	}{{"a", []byte("one")}, {"b", big}, {"c", []byte("three")}} {
		p, err := packets.ReadPacket(conn)
		require.NoError(t, err, "packet %d", i)
		pub, ok := p.Content.(*packets.Publish)
		require.True(t, ok, "packet %d is %T", i, p.Content)
		require.Equal(t, want.topic, pub.Topic)
		require.Equal(t, want.payload, pub.Payload)
	}

	out := packets.NewControlPacket(packets.PUBLISH)
	out.Content.(*packets.Publish).Topic = "back"
	out.Content.(*packets.Publish).Payload = []byte("reply")
	_, err = out.WriteTo(conn)
	require.NoError(t, err)
	select {
	case p := <-got:
		require.Equal(t, "back", p.Content.(*packets.Publish).Topic)
		require.Equal(t, []byte("reply"), p.Content.(*packets.Publish).Payload)
	case err := <-errs:
		t.Fatal(err)
	}
}
