package broker

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"
)

// Regression tests for protocol defects found by reading the code (issue 8, items 8 and 11).

// connectWith sends a CONNECT that mutate may change and returns the CONNACK, nil when the broker
// closed the connection instead.
func (r *raw) connectWith(t testing.TB, id string, clean bool, expiry uint32, mutate func(*packets.Connect)) *packets.Connack {
	t.Helper()
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = id, clean, 30
	c.Properties.SessionExpiryInterval = &expiry
	if mutate != nil {
		mutate(c)
	}
	r.send(t, cp)
	ack := r.read(t)
	require.NotNil(t, ack, "connection closed without CONNACK")
	require.Equal(t, packets.CONNACK, ack.Type)
	return ack.Content.(*packets.Connack)
}

// sendAck sends PUBACK, PUBREC or PUBCOMP (typ) for pid.
func (r *raw) sendAck(t testing.TB, typ byte, pid uint16) {
	t.Helper()
	cp := packets.NewControlPacket(typ)
	switch a := cp.Content.(type) {
	case *packets.Puback:
		a.PacketID = pid
	case *packets.Pubrec:
		a.PacketID = pid
	case *packets.Pubcomp:
		a.PacketID = pid
	}
	r.send(t, cp)
}

// expectPubrel reads the next packet and checks it is PUBREL for pid.
func (r *raw) expectPubrel(t testing.TB, pid uint16) {
	t.Helper()
	cp := r.read(t)
	require.NotNil(t, cp, "connection closed")
	require.Equal(t, packets.PUBREL, cp.Type, "got %s, want PUBREL %d", cp.PacketType(), pid)
	require.Equal(t, pid, cp.Content.(*packets.Pubrel).PacketID)
}

// ping sends PINGREQ and expects PINGRESP as the next packet: whatever the broker queued for the
// connection before it answered the ping has been read by then.
func (r *raw) ping(t testing.TB) {
	t.Helper()
	r.send(t, packets.NewControlPacket(packets.PINGREQ))
	cp := r.read(t)
	require.NotNil(t, cp, "connection closed")
	require.Equal(t, packets.PINGRESP, cp.Type, "got %s, want PINGRESP", cp.PacketType())
}

// Item 8 [MQTT-3.10.4-3]: a member leaving its shared group with UNSUBSCRIBE completes the QoS 2
// deliveries already started (before and after PUBREC); no other member receives them.
func TestSharedUnsubscribeCompletesQoS2InFlight(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "leaver", true, 0)
	r.subscribe(t, "$share/g/t", 2)
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 2, "sent")
	pub.publish(t, "t", 2, "received")
	sent, recvd := r.readPublish(t), r.readPublish(t)
	require.Equal(t, "sent", string(sent.Payload))
	require.Equal(t, "received", string(recvd.Payload))
	r.sendAck(t, packets.PUBREC, recvd.PacketID)
	r.expectPubrel(t, recvd.PacketID)

	stay := dialClient(t, b, "stay")
	stay.subscribe(t, "$share/g/t", 2)
	cp := packets.NewControlPacket(packets.UNSUBSCRIBE)
	cp.Content.(*packets.Unsubscribe).PacketID = 2
	cp.Content.(*packets.Unsubscribe).Topics = []string{"$share/g/t"}
	r.send(t, cp)
	ua := r.read(t)
	require.NotNil(t, ua)
	require.Equal(t, packets.UNSUBACK, ua.Type)

	// The leaver completes both: the broker still knows their packet identifiers.
	r.sendAck(t, packets.PUBREC, sent.PacketID)
	r.send(t, packets.NewControlPacket(packets.PINGREQ)) // answered after the PUBREL, if any
	r.expectPubrel(t, sent.PacketID)
	require.Equal(t, packets.PINGRESP, r.read(t).Type)
	r.sendAck(t, packets.PUBCOMP, sent.PacketID)
	r.sendAck(t, packets.PUBCOMP, recvd.PacketID)
	r.ping(t)
	stay.none(t, b) // exactly once: the other member got neither
	require.Eventually(t, func() bool { return b.Stats().Queued == 0 }, waitFor, 2*time.Millisecond, "entries left behind")
}

// willConnect encodes a CONNECT (clean start, session expiry 0) carrying a QoS 1 will on topic with
// will properties props, already encoded. Encoded by hand: paho.golang v0.23.0 packs will properties
// as CONNECT properties and so never sends a will's Message Expiry Interval.
func willConnect(id, topic, payload string, props []byte) []byte {
	str := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	vh := str(nil, "MQTT")
	vh = append(vh, 5, 0x02|0x04|0x08, 0, 30, 0) // version 5; clean start, will, will QoS 1; keep alive 30; no properties
	vh = str(vh, id)
	vh = binary.AppendUvarint(vh, uint64(len(props))) // one byte below 128: the same as MQTT's encoding
	vh = append(vh, props...)
	vh = str(vh, topic)
	vh = str(vh, payload)
	out := []byte{0x10}
	for n := len(vh); ; {
		d := byte(n % 128)
		if n /= 128; n > 0 {
			out = append(out, d|0x80)
			continue
		}
		out = append(out, d)
		break
	}
	return append(out, vh...)
}

// Item 11a (MQTT v5 §3.1.3.2.4): a will's Message Expiry Interval is its lifetime from the moment the
// broker publishes it, and is sent on as the message's expiry.
func TestWillKeepsMessageExpiry(t *testing.T) {
	b := newBroker(t, nil)
	w := dialClient(t, b, "watcher")
	w.subscribe(t, "will/#", 1)
	r := dialRaw(t, b)
	r.write(t, willConnect("dies", "will/x", "gone", []byte{0x02, 0, 0, 0, 60})) // Message Expiry Interval 60
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, CodeSuccess, ack.Content.(*packets.Connack).ReasonCode)
	r.nc.Close()
	m := w.next(t)
	require.Equal(t, "gone", string(m.Payload))
	require.NotNil(t, m.Properties.MessageExpiry, "will delivered without its Message Expiry Interval")
	require.LessOrEqual(t, *m.Properties.MessageExpiry, uint32(60))
	require.Positive(t, *m.Properties.MessageExpiry)
}

// Item 11b: the will is published on the client's behalf, so its topic needs the client's right to
// publish there; a CONNECT whose will the Authorizer refuses gets CONNACK 0x87 and no will is ever
// published. An allowed will topic connects as before.
func TestWillTopicAuthorized(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authorizer = testAuthz{} }) // no publishing under secret/
	w := dialClient(t, b, "watcher")
	w.subscribe(t, "secret/#", 1)

	r := dialRaw(t, b)
	r.write(t, willConnect("sneaky", "secret/w", "leak", nil))
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, CodeNotAuthorized, ack.Content.(*packets.Connack).ReasonCode)
	require.Nil(t, r.read(t), "connection not closed after CONNACK 0x87")
	waitOffline(t, b, "sneaky")
	w.none(t, b) // the refused will was not published when the connection closed

	ok := dialRaw(t, b)
	ok.write(t, willConnect("honest", "open/w", "bye", nil))
	ack = ok.read(t)
	require.NotNil(t, ack)
	require.Equal(t, CodeSuccess, ack.Content.(*packets.Connack).ReasonCode)
}

// Item 11d [MQTT-3.3.4-7] [MQTT-4.4.0-1]: a reconnect resends in-flight messages, in order with
// their packet identifiers, only as many as the new connection's Receive Maximum allows; each
// acknowledgement lets the next one go.
func TestReconnectResendWithinReceiveMaximum(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "sub", true, 3600) // Receive Maximum 65535
	r.subscribe(t, "t", 1)
	pub := dialClient(t, b, "pub")
	const n = 5
	for i := range n {
		pub.publish(t, "t", 1, fmt.Sprint(i))
	}
	var pids []uint16
	for i := range n {
		p := r.readPublish(t)
		require.Equal(t, fmt.Sprint(i), string(p.Payload))
		pids = append(pids, p.PacketID)
	}
	r.nc.Close() // none acknowledged
	waitOffline(t, b, "sub")

	r2 := dialRaw(t, b)
	two := uint16(2)
	ack := r2.connectWith(t, "sub", false, 3600, func(c *packets.Connect) { c.Properties.ReceiveMaximum = &two })
	require.True(t, ack.SessionPresent)
	expectDup := func(i int) {
		t.Helper()
		p := r2.readPublish(t)
		require.Equal(t, fmt.Sprint(i), string(p.Payload))
		require.Equal(t, pids[i], p.PacketID)
		require.True(t, p.Duplicate)
	}
	expectDup(0)
	expectDup(1)
	r2.ping(t) // a third resend would have come before the PINGRESP
	r2.puback(t, pids[0])
	expectDup(2)
	r2.ping(t)
	r2.puback(t, pids[1])
	r2.puback(t, pids[2])
	expectDup(3)
	expectDup(4)
	r2.puback(t, pids[3])
	r2.puback(t, pids[4])
	r2.ping(t)
	require.Eventually(t, func() bool { return b.Stats().Queued == 0 }, waitFor, 2*time.Millisecond)
}

// Item 11c, resends [MQTT-3.1.2-25]: an in-flight message larger than the Maximum Packet Size the
// client gives on reconnect is not resent but treated as sent: QoS 1 is done, QoS 2 goes on with
// PUBREL (releasing the packet identifier the client may hold); smaller ones are resent.
func TestReconnectResendRespectsMaximumPacketSize(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "sub", true, 3600) // no Maximum Packet Size
	r.subscribe(t, "t", 2)
	pub := dialClient(t, b, "pub")
	big := string(make([]byte, 2000))
	pub.publish(t, "t", 1, big)
	pub.publish(t, "t", 2, big)
	pub.publish(t, "t", 1, "small")
	big1, big2, small := r.readPublish(t), r.readPublish(t), r.readPublish(t)
	require.Equal(t, byte(1), big1.QoS)
	require.Equal(t, byte(2), big2.QoS)
	require.Equal(t, "small", string(small.Payload))
	r.nc.Close() // none acknowledged
	waitOffline(t, b, "sub")

	r2 := dialRaw(t, b)
	limit := uint32(1024)
	ack := r2.connectWith(t, "sub", false, 3600, func(c *packets.Connect) { c.Properties.MaximumPacketSize = &limit })
	require.True(t, ack.SessionPresent)
	r2.expectPubrel(t, big2.PacketID) // big1 (QoS 1) is skipped, big2 (QoS 2) is released
	p := r2.readPublish(t)
	require.Equal(t, "small", string(p.Payload))
	require.Equal(t, small.PacketID, p.PacketID)
	require.True(t, p.Duplicate)
	r2.sendAck(t, packets.PUBCOMP, big2.PacketID)
	r2.puback(t, small.PacketID)
	r2.ping(t)
	require.Eventually(t, func() bool { return b.Stats().Queued == 0 }, waitFor, 2*time.Millisecond)
}

// readUntil reads packets until one of type stop arrives and returns the PUBLISH packets before it.
func (r *raw) readUntil(t testing.TB, stop byte) []*packets.Publish {
	t.Helper()
	var pubs []*packets.Publish
	for {
		cp := r.read(t)
		require.NotNil(t, cp, "connection closed before %s", packets.NewControlPacket(stop).PacketType())
		if cp.Type == stop {
			return pubs
		}
		if p, ok := cp.Content.(*packets.Publish); ok {
			pubs = append(pubs, p)
		}
	}
}

// retainQoS0 stores retained QoS 0 messages on topics through the broker's Publisher.
func retainQoS0(t testing.TB, b *Broker, payload []byte, topics ...string) {
	t.Helper()
	for _, topic := range topics {
		require.NoError(t, b.Publish(ctxT(t), &Message{Topic: topic, Payload: payload, Retain: true}))
	}
}

// Item 11c, retained [MQTT-3.1.2-25]: a retained QoS 0 message larger than the client's Maximum
// Packet Size is not sent on SUBSCRIBE; the others are.
func TestRetainedQoS0RespectsMaximumPacketSize(t *testing.T) {
	b := newBroker(t, nil)
	retainQoS0(t, b, make([]byte, 2000), "r/big")
	retainQoS0(t, b, []byte("small"), "r/small")
	r := dialRaw(t, b)
	limit := uint32(1024)
	r.connectWith(t, "sub", true, 0, func(c *packets.Connect) { c.Properties.MaximumPacketSize = &limit })
	r.subscribe(t, "r/#", 0)
	r.send(t, packets.NewControlPacket(packets.PINGREQ))
	pubs := r.readUntil(t, packets.PINGRESP) // the retained messages were queued before the PINGRESP
	require.Len(t, pubs, 1)
	require.Equal(t, "r/small", pubs[0].Topic)
}

// Item 11e: a filter matching more retained QoS 0 messages than the connection's write queue holds
// no longer closes the connection on every SUBSCRIBE: retained QoS 0 messages go like any QoS 0
// message, up to MaxQoS0Buffered waiting at once, the rest dropped and counted (DroppedQoS0).
func TestManyRetainedQoS0DoNotCloseTheConnection(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.ReceiveMaximum, o.MaxQoS0Buffered = 1, 100 })
	const n = 1500 // more than the write queue limit: 1 + 1 + 100 + 1024 with Receive Maximum 1
	topics := make([]string, n)
	for i := range topics {
		topics[i] = fmt.Sprintf("r/%d", i)
	}
	retainQoS0(t, b, []byte("v"), topics...)
	r := dialRaw(t, b)
	one := uint16(1)
	r.connectWith(t, "sub", true, 0, func(c *packets.Connect) { c.Properties.ReceiveMaximum = &one })
	got := 0
	for range 2 { // every SUBSCRIBE, not only the first
		cp := packets.NewControlPacket(packets.SUBSCRIBE)
		cp.Content.(*packets.Subscribe).PacketID = 1
		cp.Content.(*packets.Subscribe).Subscriptions = []packets.SubOptions{{Topic: "r/#", QoS: 0}}
		r.send(t, cp)
		r.readUntil(t, packets.SUBACK) // a SUBACK precedes its retained messages
		r.send(t, packets.NewControlPacket(packets.PINGREQ))
		got += len(r.readUntil(t, packets.PINGRESP))
	}
	require.Positive(t, got)
	require.Equal(t, int64(2*n), int64(got)+b.Stats().DroppedQoS0, "every retained message is sent or counted as dropped")
}

// Found by the client matrix (tests/clients, mosquitto_pub -V mqttv5): a DISCONNECT with Remaining
// Length 0 means reason 0x00 without properties (MQTT v5 §3.14.2.1); it was read as a malformed
// packet, so the will of a client that disconnected normally was published [MQTT-3.1.2-10].
func TestDisconnectWithoutReasonCodeDropsWill(t *testing.T) {
	b := newBroker(t, nil)
	watcher := dialClient(t, b, "watcher")
	watcher.subscribe(t, "will/#", 1)
	r := dialRaw(t, b)
	r.connectWith(t, "polite", true, 0, func(c *packets.Connect) {
		c.WillFlag, c.WillQOS, c.WillTopic, c.WillMessage = true, 1, "will/polite", []byte("gone")
	})
	r.write(t, []byte{packets.DISCONNECT << 4, 0}) // what mosquitto_pub sends on a normal exit
	require.Nil(t, r.read(t), "the broker closes the connection after a DISCONNECT")
	waitOffline(t, b, "polite")
	watcher.none(t, b)
}
