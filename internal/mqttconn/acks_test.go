package mqttconn

import (
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Acknowledgements leave in receive order whatever order the caller acknowledges in, each
// contiguous run of ready PUBACKs in one write; a message is acknowledged once; after close
// nothing more is accepted.
func TestAckQueueSendsInReceiveOrderInOneWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	got := make(chan uint16, 16)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			p, err := packets.ReadPacket(c)
			if err != nil {
				close(got)
				return
			}
			pa := p.Content.(*packets.Puback)
			if pa.ReasonCode == 0 {
				got <- pa.PacketID
			}
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	conn := &countingConn{Conn: raw}
	q := newAckQueue(conn, state.NewInMemory(), 20*time.Millisecond)

	var acks []Ack
	for pid := uint16(1); pid <= 5; pid++ {
		acks = append(acks, q.add(pid, 1))
	}
	require.NoError(t, acks[1].Send())
	require.NoError(t, acks[2].Send())
	require.NoError(t, acks[0].Send()) // 1, 2, 3 are ready now
	for _, want := range []uint16{1, 2, 3} {
		assert.Equal(t, want, <-got)
	}
	assert.Equal(t, 1, conn.count(), "three PUBACKs, one write")
	require.ErrorIs(t, acks[0].Send(), ErrAckUnknown, "acknowledged already")

	require.NoError(t, acks[4].Send())
	require.NoError(t, acks[3].Send())
	for _, want := range []uint16{4, 5} {
		assert.Equal(t, want, <-got)
	}
	assert.Equal(t, 2, conn.count())

	late := q.add(6, 1)
	q.close(true)
	require.ErrorIs(t, late.Send(), ErrAckConnectionGone, "the broker redelivers it on the next connection")
	require.NoError(t, Ack{}.Send(), "QoS 0: nothing to send")
	_ = raw.Close()
	_, open := <-got
	assert.False(t, open, "nothing else was sent")
}

// Manual acknowledgements are sent through Received.Ack: asking for them without OnPublish is a
// configuration error, said before any connection is made.
func TestManualAcksNeedOnPublish(t *testing.T) {
	s := DefaultSettings()
	s.URL, s.ClientID = "mqtt://127.0.0.1:1", "r"
	_, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub, ManualAcks: true,
		OnPublishReceived: func(paho.PublishReceived) (bool, error) { return true, nil }})
	require.ErrorContains(t, err, "Options.ManualAcks needs Options.OnPublish")
}
