package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// [MQTT-4.8.2-3]: each message of a shared subscription goes to one member; the broker uses round
// robin over connected members with send quota, so two idle members get equal shares.
func TestSharedRoundRobinFairness(t *testing.T) {
	b := newBroker(t, nil)
	m1 := dialClient(t, b, "m1")
	m1.subscribe(t, "$share/g/jobs/#", 1)
	m2 := dialClient(t, b, "m2")
	m2.subscribe(t, "$share/g/jobs/#", 1)
	pub := dialClient(t, b, "pub")
	const n = 100
	for i := range n {
		pub.publish(t, "jobs/x", 1, fmt.Sprint(i))
	}
	got := map[string]int{}
	seen := map[string]bool{}
	for range n {
		select {
		case m := <-m1.msgs:
			got["m1"]++
			seen[string(m.Payload)] = true
		case m := <-m2.msgs:
			got["m2"]++
			seen[string(m.Payload)] = true
		case <-ctxT(t).Done():
			t.Fatal("timeout")
		}
	}
	require.Len(t, seen, n) // every message exactly once
	require.InDelta(t, n/2, got["m1"], n/10, "shares %v", got)
	require.InDelta(t, n/2, got["m2"], n/10, "shares %v", got)
}

// Messages for a group with no connected member are kept for the group and go to the first member
// that connects (HiveMQ-like; MQTT v5 §4.8.2 leaves it to the server).
func TestSharedGroupQueuesWhileNoMemberConnected(t *testing.T) {
	b := newBroker(t, nil)
	m1 := dialClient(t, b, "m1", withExpiry(60))
	m1.subscribe(t, "$share/g/t", 1)
	require.NoError(t, m1.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "m1")
	pub := dialClient(t, b, "pub")
	for i := range 5 {
		r := pub.publish(t, "t", 1, fmt.Sprint(i))
		require.Equal(t, CodeSuccess, r.ReasonCode)
	}
	m2 := dialClient(t, b, "m2")
	m2.subscribe(t, "$share/g/t", 1)
	for i := range 5 {
		require.Equal(t, fmt.Sprint(i), string(m2.next(t).Payload))
	}
}

// [MQTT-4.8.2-4] [MQTT-4.8.2-5]: a QoS 1 message in flight to a member whose connection breaks goes to
// another member at once; a QoS 2 message stays with its member, which completes it on reconnect.
func TestSharedFailoverQoS1NotQoS2(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "dead", true, 3600)
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: "$share/g/q1", QoS: 1}, {Topic: "$share/g/q2", QoS: 2}}
	r.send(t, cp)
	require.Equal(t, packets.SUBACK, r.read(t).Type)

	pub := dialClient(t, b, "pub")
	pub.publish(t, "q1", 1, "one")
	pub.publish(t, "q2", 2, "two")
	require.Equal(t, "one", string(r.readPublish(t).Payload))
	require.Equal(t, "two", string(r.readPublish(t).Payload))

	alive := dialClient(t, b, "alive")
	alive.subscribe(t, "$share/g/q1", 1)
	alive.subscribe(t, "$share/g/q2", 2)
	r.nc.Close() // connection breaks with both unacknowledged

	m := alive.next(t)
	require.Equal(t, "one", string(m.Payload)) // QoS 1 failed over
	alive.none(t, b)                           // QoS 2 did not

	r2 := dialRaw(t, b)
	require.True(t, r2.connect(t, "dead", false, 3600).SessionPresent)
	p := r2.readPublish(t)
	require.Equal(t, "two", string(p.Payload))
	require.True(t, p.Duplicate)
}

// [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
func TestSharedNoLocalProtocolError(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connect(t, "c", true, 0)
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: "$share/g/t", QoS: 1, NoLocal: true}}
	r.send(t, cp)
	r.expectDisconnect(t, CodeProtocolError)
}

// A member leaving its group (UNSUBSCRIBE) completes the deliveries it started [MQTT-3.10.4-3] and gives
// the group messages it has not been sent back to the group, which sends them to another member.
func TestSharedUnsubscribeReleasesMessages(t *testing.T) {
	b := newBroker(t, nil)
	r := dialRaw(t, b)
	r.connectWith(t, "leaver", true, 0, func(c *packets.Connect) {
		one := uint16(1)
		c.Properties.ReceiveMaximum = &one // the second message waits, unsent
	})
	r.subscribe(t, "$share/g/t", 1)
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, "sent")
	sent := r.readPublish(t)
	require.Equal(t, "sent", string(sent.Payload))
	pub.publish(t, "t", 1, "unsent")
	require.Eventually(t, func() bool { return b.Stats().Queued == 2 }, waitFor, 2*time.Millisecond)
	stay := dialClient(t, b, "stay")
	stay.subscribe(t, "$share/g/t", 1)
	cp := packets.NewControlPacket(packets.UNSUBSCRIBE)
	cp.Content.(*packets.Unsubscribe).PacketID = 2
	cp.Content.(*packets.Unsubscribe).Topics = []string{"$share/g/t"}
	r.send(t, cp)
	ua := r.read(t)
	require.NotNil(t, ua)
	require.Equal(t, packets.UNSUBACK, ua.Type, "got %s, want UNSUBACK", ua.PacketType())
	got := stay.next(t)
	require.Equal(t, "unsent", string(got.Payload))
	// The leaver's PUBACK still completes its delivery: nothing reaches the other member twice.
	r.sendAck(t, packets.PUBACK, sent.PacketID)
	r.ping(t)
	stay.none(t, b)
	require.Eventually(t, func() bool { return b.Stats().Queued == 0 }, waitFor, 2*time.Millisecond, "entries left behind")
}

// Found by the client matrix (tests/clients: two 3.1.1 mosquitto_sub members split 37/3): with a
// data directory, every member has a message waiting for its commit while a burst arrives, and
// such a member counted as having no send quota, so the burst went to the group's queue and the
// next member to pump took it whole (up to a Receive Maximum of 65535). A member has quota while
// its messages in flight and queued are below its Receive Maximum [MQTT-3.3.4-7].
func TestSharedSplitsAPipelinedBurstWithDataDir(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.DataDir = t.TempDir() })
	m1 := dialClient(t, b, "m1")
	m1.subscribe(t, "$share/g/burst", 1)
	m2 := dialClient(t, b, "m2")
	m2.subscribe(t, "$share/g/burst", 1)
	pub := dialClient(t, b, "pub")
	const n = 100
	errs := make(chan error, n)
	ctx := ctxT(t)
	for i := range n { // in flight together, as a 3.1.1 client without Receive Maximum sends them
		go func() {
			_, err := pub.Publish(ctx, &paho.Publish{Topic: "burst", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	got := map[string]int{}
	seen := map[string]bool{}
	for range n {
		select {
		case m := <-m1.msgs:
			got["m1"]++
			seen[string(m.Payload)] = true
		case m := <-m2.msgs:
			got["m2"]++
			seen[string(m.Payload)] = true
		case <-ctxT(t).Done():
			t.Fatal("timeout")
		}
	}
	require.Len(t, seen, n) // every message exactly once
	require.InDelta(t, n/2, got["m1"], n/10, "shares %v", got)
	require.InDelta(t, n/2, got["m2"], n/10, "shares %v", got)
}
