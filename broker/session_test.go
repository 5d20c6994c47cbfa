package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

func (r *raw) subscribe(t testing.TB, filter string, qos byte) {
	t.Helper()
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: filter, QoS: qos}}
	r.send(t, cp)
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, packets.SUBACK, ack.Type)
}

func (r *raw) readPublish(t testing.TB) *packets.Publish {
	t.Helper()
	cp := r.read(t)
	require.NotNil(t, cp, "connection closed")
	p, ok := cp.Content.(*packets.Publish)
	require.True(t, ok, "got %s, want PUBLISH", cp.PacketType())
	return p
}

func (r *raw) puback(t testing.TB, pid uint16) {
	t.Helper()
	cp := packets.NewControlPacket(packets.PUBACK)
	cp.Content.(*packets.Puback).PacketID = pid
	r.send(t, cp)
}

// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-2]: in-flight messages are resent in order with DUP set
// and their original packet identifiers; queued ones follow, in order.
func TestResendWithDupOnReconnect(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "sub", true, 3600)
	r.subscribe(t, "t", 1)
	pub := dialClient(t, b, "pub")
	for i := range 3 {
		pub.publish(t, "t", 1, fmt.Sprint(i))
	}
	first := r.readPublish(t)
	require.False(t, first.Duplicate)
	r.readPublish(t)
	r.puback(t, first.PacketID) // ack #0 only
	r.nc.Close()
	require.Eventually(t, func() bool { return b.Stats().Connections == 1 }, waitFor, 5*time.Millisecond)
	pub.publish(t, "t", 1, "3") // queued while offline

	r2 := dialRaw(t, b)
	ack := r2.connect(t, "sub", false, 3600)
	require.True(t, ack.SessionPresent) // [MQTT-3.2.2-3]
	var got []string
	for range 3 {
		p := r2.readPublish(t)
		got = append(got, string(p.Payload))
		// "1" and "2" were in flight: resent with DUP; "3" was queued: first send.
		require.Equal(t, string(p.Payload) != "3", p.Duplicate, "DUP on %q", p.Payload)
		r2.puback(t, p.PacketID)
	}
	require.Equal(t, []string{"1", "2", "3"}, got)
}

// [MQTT-3.1.2-23] [MQTT-4.1.0-1]: a session with expiry keeps subscriptions and queued messages while
// the client is away; it ends when the interval passes.
func TestPersistentSessionAndExpiry(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub", withExpiry(1))
	sub.subscribe(t, "t", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "sub")
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, "kept")

	sub2 := dialClient(t, b, "sub", withExpiry(1), resume())
	require.True(t, sub2.connack.SessionPresent)
	require.Equal(t, "kept", string(sub2.next(t).Payload))
	require.NoError(t, sub2.Disconnect(&paho.Disconnect{}))

	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.sessions["sub"] == nil
	}, waitFor, 20*time.Millisecond)
	sub3 := dialClient(t, b, "sub", withExpiry(1), resume())
	require.False(t, sub3.connack.SessionPresent)
}

// [MQTT-3.1.2-4]: Clean Start discards the previous session.
func TestCleanStartDiscardsSession(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "sub")
	sub2 := dialClient(t, b, "sub", withExpiry(60))
	require.False(t, sub2.connack.SessionPresent)
	r := dialClient(t, b, "pub").publish(t, "t", 1, "x")
	require.Equal(t, CodeNoMatchingSubscribers, r.ReasonCode)
}

// [MQTT-3.3.4-7] [MQTT-4.9.0-2]: the broker never has more unacknowledged publishes to a client than its
// Receive Maximum; the next goes out when one is acknowledged.
func TestReceiveMaximumOutbound(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "sub", true, 30
	two := uint16(2)
	c.Properties.ReceiveMaximum = &two
	r.send(t, cp)
	require.Equal(t, packets.CONNACK, r.read(t).Type)
	r.subscribe(t, "t", 1)
	pub := dialClient(t, b, "pub")
	for i := range 5 {
		pub.publish(t, "t", 1, fmt.Sprint(i))
	}
	p0, p1 := r.readPublish(t), r.readPublish(t)
	require.Equal(t, "0", string(p0.Payload))
	require.Equal(t, "1", string(p1.Payload))
	// Nothing more until an ack: a PINGREQ round trip shows the stream is quiet.
	r.send(t, packets.NewControlPacket(packets.PINGREQ))
	require.Equal(t, packets.PINGRESP, r.read(t).Type)
	r.puback(t, p1.PacketID) // out of order ack frees one slot
	require.Equal(t, "2", string(r.readPublish(t).Payload))
	r.send(t, packets.NewControlPacket(packets.PINGREQ))
	require.Equal(t, packets.PINGRESP, r.read(t).Type)
}

// [MQTT-3.3.4-9]: a client exceeding the broker's Receive Maximum is disconnected with 0x93.
func TestReceiveMaximumInboundExceeded(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.ReceiveMaximum = 2 })
	r := dialRaw(t, b)
	ack := r.connect(t, "flood", true, 0)
	require.Equal(t, uint16(2), *ack.Properties.ReceiveMaximum)
	for i := 1; i <= 3; i++ {
		p := &packets.Publish{Topic: "t", QoS: 2, PacketID: uint16(i), Payload: []byte("x"), Properties: &packets.Properties{}}
		r.send(t, p)
	}
	// Two PUBRECs, then DISCONNECT 0x93.
	r.expectDisconnect(t, CodeReceiveMaximumExceeded)
	require.Eventually(t, func() bool { return b.Stats().Refused["receive_maximum_exceeded"] == 1 }, waitFor, 10*time.Millisecond)
}

// [MQTT-4.3.3-9] [MQTT-4.3.3-11]: a duplicate QoS 2 PUBLISH before PUBREL is not delivered twice; PUBREL
// for an unknown id gets PUBCOMP 0x92.
func TestQoS2Dedup(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub")
	sub.subscribe(t, "t", 2)
	r := dialRaw(t, b)
	r.connect(t, "pub", true, 0)
	p := &packets.Publish{Topic: "t", QoS: 2, PacketID: 7, Payload: []byte("once"), Properties: &packets.Properties{}}
	r.send(t, p)
	require.Equal(t, packets.PUBREC, r.read(t).Type)
	p.Duplicate = true
	r.send(t, p)
	require.Equal(t, packets.PUBREC, r.read(t).Type)
	rel := packets.NewControlPacket(packets.PUBREL)
	rel.Content.(*packets.Pubrel).PacketID = 7
	r.send(t, rel)
	comp := r.read(t)
	require.Equal(t, packets.PUBCOMP, comp.Type)
	require.Equal(t, CodeSuccess, comp.Content.(*packets.Pubcomp).ReasonCode)
	r.send(t, rel)
	require.Equal(t, CodePacketIDNotFound, r.read(t).Content.(*packets.Pubcomp).ReasonCode)
	require.Equal(t, "once", string(sub.next(t).Payload))
	sub.none(t, b)
}

// [MQTT-4.4.0-2] [MQTT-4.3.3-5]: after PUBREC the broker sends PUBREL; if the connection breaks before
// PUBCOMP, the PUBREL (not the PUBLISH) is resent on reconnect.
func TestPubrelResentOnReconnect(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "sub", true, 3600)
	r.subscribe(t, "t", 2)
	dialClient(t, b, "pub").publish(t, "t", 2, "x")
	p := r.readPublish(t)
	rec := packets.NewControlPacket(packets.PUBREC)
	rec.Content.(*packets.Pubrec).PacketID = p.PacketID
	r.send(t, rec)
	rel := r.read(t)
	require.Equal(t, packets.PUBREL, rel.Type)
	r.nc.Close()
	r2 := dialRaw(t, b)
	r2.connect(t, "sub", false, 3600)
	rel2 := r2.read(t)
	require.Equal(t, packets.PUBREL, rel2.Type)
	require.Equal(t, p.PacketID, rel2.Content.(*packets.Pubrel).PacketID)
	comp := packets.NewControlPacket(packets.PUBCOMP)
	comp.Content.(*packets.Pubcomp).PacketID = p.PacketID
	r2.send(t, comp)
	r2.send(t, packets.NewControlPacket(packets.PINGREQ))
	require.Equal(t, packets.PINGRESP, r2.read(t).Type) // nothing else was resent
}

// [MQTT-3.11.3-1] [MQTT-3.10.4-1]: UNSUBSCRIBE removes the subscription; an unknown filter gets 0x11.
func TestUnsubscribe(t *testing.T) {
	b := newBroker(t, nil)
	c := dialClient(t, b, "c")
	c.subscribe(t, "t", 1)
	ua, err := c.Unsubscribe(ctxT(t), &paho.Unsubscribe{Topics: []string{"t", "never"}})
	require.NoError(t, err)
	require.Equal(t, []byte{CodeSuccess, CodeNoSubscriptionExisted}, ua.Reasons)
	require.Equal(t, CodeNoMatchingSubscribers, dialClient(t, b, "pub").publish(t, "t", 1, "x").ReasonCode)
}

// [MQTT-3.14.2-2]: setting a session expiry on DISCONNECT after 0 on CONNECT is a protocol error.
func TestDisconnectExpiryAfterZero(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "c", true, 0)
	d := packets.NewControlPacket(packets.DISCONNECT)
	ten := uint32(10)
	d.Content.(*packets.Disconnect).Properties.SessionExpiryInterval = &ten
	r.send(t, d)
	r.expectDisconnect(t, CodeProtocolError)
}
