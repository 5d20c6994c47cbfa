package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// A publish that would exceed a subscriber's queue limit is refused with PUBACK 0x97 [MQTT-3.4.2-1
// lists 0x97 Quota exceeded]; nothing acknowledged is dropped, and subscribers of other topics are
// unaffected.
func TestSessionQueueLimitRefusesPublish(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxSessionQueue = 3 })
	slow := dialClient(t, b, "slow", withExpiry(60))
	slow.subscribe(t, "busy", 1)
	require.NoError(t, slow.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "slow")
	other := dialClient(t, b, "other")
	other.subscribe(t, "calm", 1)
	pub := dialClient(t, b, "pub")
	for i := range 3 {
		require.Equal(t, CodeSuccess, pub.publish(t, "busy", 1, fmt.Sprint(i)).ReasonCode)
	}
	r, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "busy", QoS: 1, Payload: []byte("3")})
	require.Error(t, err) // paho reports a failure reason code as an error
	require.Equal(t, CodeQuotaExceeded, r.ReasonCode)
	require.Equal(t, CodeSuccess, pub.publish(t, "calm", 1, "fine").ReasonCode)
	require.Equal(t, "fine", string(other.next(t).Payload))
	require.Equal(t, int64(1), b.Stats().Refused["quota_exceeded"])

	slow2 := dialClient(t, b, "slow", withExpiry(60), resume())
	for i := range 3 {
		require.Equal(t, fmt.Sprint(i), string(slow2.next(t).Payload))
	}
}

// The same limit for a shared group without connected members.
func TestGroupQueueLimit(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxGroupQueue = 2 })
	m := dialClient(t, b, "m", withExpiry(60))
	m.subscribe(t, "$share/g/t", 1)
	require.NoError(t, m.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "m")
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, "0")
	pub.publish(t, "t", 1, "1")
	r, _ := pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("2")})
	require.Equal(t, CodeQuotaExceeded, r.ReasonCode)
}

// [MQTT-3.1.2-24] [MQTT-3.2.2-15]: a packet larger than the Maximum Packet Size is refused with 0x95
// before its body is allocated: the broker answers as soon as the header declares the size.
func TestOversizedPacketRefusedBeforeAllocation(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxPacketSize = 1024 })
	r := dialRaw(t, b)
	r.connect(t, "big", true, 0)
	// PUBLISH header declaring 200 MB; no body follows, so only an early refusal can answer.
	r.write(t, []byte{0x30, 0xff, 0xff, 0xff, 0x5f})
	r.expectDisconnect(t, CodePacketTooLarge)
	require.Equal(t, int64(1), b.Stats().Refused["packet_too_large"])
}

// [MQTT-3.1.2-25]: a message larger than the client's Maximum Packet Size is discarded for that client.
func TestClientMaximumPacketSize(t *testing.T) {
	b := newBroker(t, nil)
	small := dialClient(t, b, "small", func(_ *paho.ClientConfig, c *paho.Connect) {
		n := uint32(100)
		c.Properties.MaximumPacketSize = &n
	})
	small.subscribe(t, "t", 1)
	pub := dialClient(t, b, "pub")
	pub.publish(t, "t", 1, string(make([]byte, 500)))
	pub.publish(t, "t", 1, "fits")
	require.Equal(t, "fits", string(small.next(t).Payload))
}

// Bad input: each violation closes the offender with the reason code the spec names, and the broker
// keeps serving others.
func TestBadInput(t *testing.T) {
	b := newBroker(t, nil)
	watcher := dialClient(t, b, "watcher")
	watcher.subscribe(t, "ok", 1)
	cases := []struct {
		name string
		send func(t *testing.T, r *raw)
		code byte
	}{
		{"reserved flags [MQTT-2.1.3-1]", func(t *testing.T, r *raw) { r.write(t, []byte{0xC1, 0x00}) }, CodeMalformedPacket},
		{"QoS 3 [MQTT-3.3.1-4]", func(t *testing.T, r *raw) { r.write(t, []byte{0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01}) }, CodeMalformedPacket},
		{"truncated string [MQTT-1.5.4]", func(t *testing.T, r *raw) { r.write(t, []byte{0x30, 0x03, 0x00, 0x09, 'a'}) }, CodeMalformedPacket},
		{"remaining length of 5 bytes [MQTT-1.5.5-1]", func(t *testing.T, r *raw) { r.write(t, []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}) }, CodeMalformedPacket},
		{"invalid UTF-8 topic [MQTT-1.5.4-1]", func(t *testing.T, r *raw) {
			r.send(t, &packets.Publish{Topic: "a\xff", Properties: &packets.Properties{}})
		}, CodeMalformedPacket},
		{"wildcard in topic name [MQTT-3.3.2-2]", func(t *testing.T, r *raw) {
			r.send(t, &packets.Publish{Topic: "a/+", Properties: &packets.Properties{}})
		}, CodeTopicNameInvalid},
		{"topic alias beyond maximum 16 [MQTT-3.3.2-9]", func(t *testing.T, r *raw) {
			over := uint16(17)
			r.send(t, &packets.Publish{Topic: "a", Properties: &packets.Properties{TopicAlias: &over}})
		}, CodeTopicAliasInvalid},
		{"subscription identifier from a client [MQTT-3.3.4-6]", func(t *testing.T, r *raw) {
			id := 5
			r.send(t, &packets.Publish{Topic: "a", QoS: 1, PacketID: 1, Properties: &packets.Properties{SubscriptionIdentifier: &id}})
		}, CodeProtocolError},
		{"second CONNECT [MQTT-3.1.0-2]", func(t *testing.T, r *raw) {
			cp := packets.NewControlPacket(packets.CONNECT)
			cp.Content.(*packets.Connect).ClientID = "x"
			r.send(t, cp)
		}, CodeProtocolError},
		{"SUBSCRIBE without filters [MQTT-3.8.3-2]", func(t *testing.T, r *raw) { r.write(t, []byte{0x82, 0x03, 0x00, 0x01, 0x00}) }, CodeProtocolError},
		{"packet id 0 [MQTT-2.2.1-3]", func(t *testing.T, r *raw) {
			r.send(t, &packets.Publish{Topic: "a", QoS: 1, Properties: &packets.Properties{}})
		}, CodeProtocolError},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, b)
			r.connect(t, fmt.Sprint("bad", i), true, 0)
			c.send(t, r)
			r.expectDisconnect(t, c.code)
		})
	}
	// A first packet that is not CONNECT: closed without reply [MQTT-3.1.0-1].
	r := dialRaw(t, b)
	r.send(t, packets.NewControlPacket(packets.PINGREQ))
	require.Nil(t, r.read(t))
	// Unsupported protocol version [MQTT-3.1.2-2] (level 4, 3.1.1, is served: v3_test.go).
	r = dialRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	cp.Content.(*packets.Connect).ProtocolVersion = 6
	r.send(t, cp)
	require.Equal(t, CodeUnsupportedProtocolVersion, r.read(t).Content.(*packets.Connack).ReasonCode)

	pub := dialClient(t, b, "pub")
	pub.publish(t, "ok", 1, "still up")
	require.Equal(t, "still up", string(watcher.next(t).Payload))
}

// A flood of QoS 0 publishes from one client: the broker stays responsive to others and memory stays
// bounded (QoS 0 beyond MaxQoS0Buffered per subscriber connection is dropped).
func TestFloodDoesNotStarveOthers(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxQoS0Buffered = 100 })
	sink := dialClient(t, b, "sink")
	sink.subscribe(t, "flood", 0)
	quiet := dialClient(t, b, "quiet")
	quiet.subscribe(t, "calm", 1)
	r := dialRaw(t, b)
	r.connect(t, "flooder", true, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := (&packets.Publish{Topic: "flood", Payload: make([]byte, 256), Properties: &packets.Properties{}}).ToControlPacket()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.WriteTo(r.nc); err != nil {
				return
			}
		}
	}()
	pub := dialClient(t, b, "pub")
	for i := range 20 {
		pub.publish(t, "calm", 1, fmt.Sprint(i))
		require.Equal(t, fmt.Sprint(i), string(quiet.next(t).Payload))
	}
	close(stop)
	r.nc.Close()
	wg.Wait()
}

// MaxQueuedBytes bounds the memory of all queued messages: beyond it publishes are refused (0x97).
func TestQueuedBytesLimit(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxQueuedBytes = 3000 })
	s := dialClient(t, b, "s", withExpiry(60))
	s.subscribe(t, "t", 1)
	require.NoError(t, s.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "s")
	pub := dialClient(t, b, "pub")
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		r, _ := pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: make([]byte, 500)})
		refused = r.ReasonCode == CodeQuotaExceeded
	}
	require.True(t, refused)
	b.mu.Lock()
	defer b.mu.Unlock()
	require.LessOrEqual(t, b.queuedBytes, int64(3000))
}

// A client that sends without reading (here PINGREQ) is closed once its replies exceed the write
// queue bound, so it cannot grow the broker's memory; others are unaffected.
func TestClientNotReadingIsClosed(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxQoS0Buffered = 1 })
	r := dialRaw(t, b)
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "deaf", true, 30
	one := uint16(1)
	c.Properties.ReceiveMaximum = &one
	r.send(t, cp)
	ping := make([]byte, 0, 2*4096)
	for range 4096 {
		ping = append(ping, 0xC0, 0x00)
	}
	for i := 0; i < 1000; i++ { // up to 4M PINGREQs, never reading a PINGRESP
		if _, err := r.nc.Write(ping); err != nil {
			break
		}
	}
	require.Eventually(t, func() bool { return b.Stats().Refused["quota_exceeded"] == 1 }, waitFor, 10*time.Millisecond)
	dialClient(t, b, "other").publish(t, "x", 1, "fine")
}
