package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// MQTT 3.1.1 (protocol level 4) tests. Clause numbers [MQTT-x.y.z-n] are those of the 3.1.1
// specification (OASIS Standard, 29 October 2014) unless a v5 one is named. Packets are written as
// bytes by hand here (not with the codec under test), so the exact 3.1.1 wire format is checked.

// v3raw is a hand-driven 3.1.1 client connection.
type v3raw struct {
	nc net.Conn
	br *bufio.Reader
}

func dialV3(t testing.TB, b *Broker) *v3raw {
	t.Helper()
	nc, err := net.Dial("tcp", b.Addrs()[0])
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &v3raw{nc: nc, br: bufio.NewReader(nc)}
}

// frame builds a packet from its first byte and body.
func frame(first byte, body ...[]byte) []byte {
	var all []byte
	for _, b := range body {
		all = append(all, b...)
	}
	out := []byte{first}
	n := len(all)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, all...)
}

func str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

// v3Conn is a 3.1.1 CONNECT; flags are the connect flags byte (clean session 0x02).
type v3Conn struct {
	id        string
	flags     byte
	keepAlive uint16
	will      [2]string // topic, payload (flags must say so)
	user, pw  string
	name      string
	level     byte
}

func (c v3Conn) bytes() []byte {
	name, level := c.name, c.level
	if name == "" {
		name = "MQTT"
	}
	if level == 0 {
		level = 4
	}
	body := append(str(name), level, c.flags)
	body = append(body, u16(c.keepAlive)...)
	body = append(body, str(c.id)...)
	if c.flags&0x04 != 0 {
		body = append(append(body, str(c.will[0])...), str(c.will[1])...)
	}
	if c.flags&0x80 != 0 {
		body = append(body, str(c.user)...)
	}
	if c.flags&0x40 != 0 {
		body = append(body, str(c.pw)...)
	}
	return frame(0x10, body)
}

func v3Publish(topic string, qos byte, pid uint16, payload string, retain bool) []byte {
	first := byte(0x30) | qos<<1
	if retain {
		first |= 1
	}
	body := str(topic)
	if qos > 0 {
		body = append(body, u16(pid)...)
	}
	return frame(first, body, []byte(payload))
}

// v3Subscribe is a SUBSCRIBE of filter, qos pairs.
func v3Subscribe(pid uint16, fq ...any) []byte {
	body := u16(pid)
	for i := 0; i < len(fq); i += 2 {
		body = append(append(body, str(fq[i].(string))...), byte(fq[i+1].(int)))
	}
	return frame(0x82, body)
}

func (r *v3raw) write(t testing.TB, bs ...[]byte) {
	t.Helper()
	for _, b := range bs {
		_, err := r.nc.Write(b)
		require.NoError(t, err)
	}
}

// next reads one packet: its first byte and body; it fails the test if the connection closes.
func (r *v3raw) next(t testing.TB) (byte, []byte) {
	t.Helper()
	first, body, err := r.tryNext()
	require.NoError(t, err, "connection closed or no packet")
	return first, body
}

func (r *v3raw) tryNext() (byte, []byte, error) {
	_ = r.nc.SetReadDeadline(time.Now().Add(waitFor))
	first, err := r.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r.br, body)
	return first, body, err
}

// closed checks the broker closes the connection without sending anything more (3.1.1 has no
// DISCONNECT from the server).
func (r *v3raw) closed(t testing.TB) {
	t.Helper()
	first, body, err := r.tryNext()
	require.Error(t, err, "got packet %#x %x instead of the connection closing", first, body)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection not closed within %s", waitFor)
}

// connack reads a CONNACK and returns its session present flag and return code, checking the
// 3.1.1 format: two bytes, no properties [MQTT-3.2.2-1].
func (r *v3raw) connack(t testing.TB) (bool, byte) {
	t.Helper()
	first, body := r.next(t)
	require.Equal(t, byte(0x20), first)
	require.Len(t, body, 2, "3.1.1 CONNACK has a 2-byte body")
	require.Zero(t, body[0]&0xfe, "reserved bits of the acknowledge flags")
	return body[0] == 1, body[1]
}

// connect sends c and expects return code 0.
func (r *v3raw) connect(t testing.TB, c v3Conn) bool {
	t.Helper()
	r.write(t, c.bytes())
	present, rc := r.connack(t)
	require.Equal(t, byte(0), rc)
	return present
}

// v3pub is a received PUBLISH.
type v3pub struct {
	topic, payload string
	qos            byte
	pid            uint16
	retain, dup    bool
}

func (r *v3raw) publish(t testing.TB) v3pub {
	t.Helper()
	first, body := r.next(t)
	require.Equal(t, byte(3), first>>4, "got packet %#x %x, want PUBLISH", first, body)
	return parseV3Publish(t, first, body)
}

func parseV3Publish(t testing.TB, first byte, body []byte) v3pub {
	t.Helper()
	p := v3pub{qos: first >> 1 & 3, retain: first&1 != 0, dup: first&8 != 0}
	n := int(body[0])<<8 | int(body[1])
	p.topic = string(body[2 : 2+n])
	rest := body[2+n:]
	if p.qos > 0 {
		p.pid = uint16(rest[0])<<8 | uint16(rest[1])
		rest = rest[2:]
	}
	p.payload = string(rest) // no properties in 3.1.1: the rest is the payload
	return p
}

// ack sends PUBACK (qos 1) or runs the QoS 2 exchange from the receiving side.
func (r *v3raw) ack(t testing.TB, p v3pub) {
	t.Helper()
	switch p.qos {
	case 1:
		r.write(t, frame(0x40, u16(p.pid)))
	case 2:
		r.write(t, frame(0x50, u16(p.pid)))
		first, body := r.next(t)
		require.Equal(t, byte(0x62), first, "PUBREL")
		require.Equal(t, u16(p.pid), body)
		r.write(t, frame(0x70, u16(p.pid)))
	}
}

// ping sends PINGREQ and reads up to PINGRESP, returning the publishes before it.
func (r *v3raw) ping(t testing.TB) []v3pub {
	t.Helper()
	r.write(t, []byte{0xc0, 0x00})
	var got []v3pub
	for {
		first, body := r.next(t)
		if first == 0xd0 {
			require.Empty(t, body)
			return got
		}
		require.Equal(t, byte(3), first>>4, "got packet %#x", first)
		got = append(got, parseV3Publish(t, first, body))
	}
}

func (r *v3raw) subscribe(t testing.TB, pid uint16, fq ...any) []byte {
	t.Helper()
	r.write(t, v3Subscribe(pid, fq...))
	first, body := r.next(t)
	require.Equal(t, byte(0x90), first, "SUBACK")
	require.Equal(t, u16(pid), body[:2])
	return body[2:]
}

// [MQTT-3.1.2-2] [MQTT-3.2.2-4] [MQTT-3.2.2-5] [MQTT-3.1.3-8]: the CONNACK return codes of 3.1.1.
func TestV3ConnackReturnCodes(t *testing.T) {
	b := newBroker(t, nil)
	for _, tc := range []struct {
		name string
		c    v3Conn
		rc   byte
	}{
		{"level 4 accepted", v3Conn{id: "a", flags: 0x02}, 0x00},
		{"MQIsdp level 3 (3.1) refused 0x01", v3Conn{id: "b", flags: 0x02, name: "MQIsdp", level: 3}, 0x01},
		{"MQTT level 3 refused 0x01", v3Conn{id: "c", flags: 0x02, level: 3}, 0x01},
		{"zero-length id with clean session 0: 0x02", v3Conn{id: "", flags: 0x00}, 0x02},
		{"zero-length id with clean session 1 accepted", v3Conn{id: "", flags: 0x02}, 0x00},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialV3(t, b)
			r.write(t, tc.c.bytes())
			present, rc := r.connack(t)
			require.Equal(t, tc.rc, rc)
			require.False(t, present, "session present with a non-zero return code or clean session [MQTT-3.2.2-4]")
			if rc != 0 {
				r.closed(t) // [MQTT-3.2.2-5]
				return
			}
			r.write(t, []byte{0xc0, 0x00})
			first, _ := r.next(t)
			require.Equal(t, byte(0xd0), first, "PINGRESP [MQTT-3.12.4-1]")
		})
	}
}

// [MQTT-3.1.2-1] [MQTT-3.1.2-3] [MQTT-3.1.2-22] [MQTT-3.1.0-2] [MQTT-3.8.3-4] [MQTT-2.2.2-2] and the
// fixed lengths of 3.1.1 packets: bad input closes the connection (3.1.1 has no DISCONNECT from the
// server), and other clients are unaffected.
func TestV3BadInputClosesConnection(t *testing.T) {
	b := newBroker(t, nil)
	bystander := dialV3(t, b)
	bystander.connect(t, v3Conn{id: "bystander", flags: 0x02})
	require.Equal(t, []byte{1}, bystander.subscribe(t, 1, "t", 1))
	ok := v3Conn{id: "bad", flags: 0x02}
	for _, tc := range []struct {
		name    string
		connect []byte // instead of ok's CONNECT
		then    []byte // after a successful CONNECT
	}{
		{name: "wrong protocol name [MQTT-3.1.2-1]", connect: v3Conn{id: "bad", flags: 0x02, name: "MQTX"}.bytes()},
		{name: "CONNECT reserved flag [MQTT-3.1.2-3]", connect: v3Conn{id: "bad", flags: 0x03}.bytes()},
		{name: "password without user name [MQTT-3.1.2-22]", connect: v3Conn{id: "bad", flags: 0x42, pw: "x"}.bytes()},
		{name: "v5 properties in a level 4 CONNECT", connect: frame(0x10, str("MQTT"), []byte{4, 0x02, 0, 30}, []byte{0x05, 0x11, 0, 0, 0, 10}, str("bad"))},
		{name: "second CONNECT [MQTT-3.1.0-2]", then: ok.bytes()},
		{name: "SUBSCRIBE with v5 options (no local) [MQTT-3.8.3-4]", then: frame(0x82, u16(1), str("t"), []byte{0x05})},
		{name: "SUBSCRIBE reserved flags [MQTT-3.8.1-1]", then: frame(0x80, u16(1), str("t"), []byte{0x01})},
		{name: "PUBACK with a v5 reason code", then: frame(0x40, u16(1), []byte{0x10})},
		{name: "DISCONNECT with a v5 reason code", then: frame(0xe0, []byte{0x04})},
		{name: "AUTH is not a 3.1.1 packet", then: frame(0xf0, []byte{0x00})},
		{name: "PUBLISH QoS 3 [MQTT-3.3.1-4]", then: []byte{0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01}},
		{name: "PUBLISH wildcard topic [MQTT-3.3.2-2]", then: v3Publish("t/#", 0, 0, "x", false)},
		{name: "PUBLISH QoS 1 packet id 0 [MQTT-2.3.1-1]", then: v3Publish("t", 1, 0, "x", false)},
		{name: "UNSUBSCRIBE without filters [MQTT-3.10.3-2]", then: frame(0xa2, u16(1))},
		{name: "PINGREQ with a body", then: frame(0xc0, []byte{0})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialV3(t, b)
			if tc.connect != nil {
				r.write(t, tc.connect)
			} else {
				r.connect(t, ok)
				r.write(t, tc.then)
			}
			r.closed(t)
		})
	}
	// The bystander still publishes and receives.
	bystander.write(t, v3Publish("t", 1, 7, "still here", false))
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		first, body := bystander.next(t)
		switch first >> 4 {
		case 4:
			require.Equal(t, u16(7), body)
			gotAck = true
		case 3:
			p := parseV3Publish(t, first, body)
			require.Equal(t, "still here", p.payload)
			bystander.ack(t, p)
			gotMsg = true
		}
	}
}

// [MQTT-3.1.2-4] [MQTT-3.1.2-6] [MQTT-3.2.2-2] [MQTT-3.2.2-3] [MQTT-4.4.0-1]: clean session 0 keeps
// the session (subscriptions and QoS 1/2 messages) after the connection; clean session 1 starts and
// ends a fresh one.
func TestV3PersistentSession(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	require.False(t, r.connect(t, v3Conn{id: "dev", flags: 0x00}))
	require.Equal(t, []byte{1, 2}, r.subscribe(t, 1, "q1", 1, "q2", 2))
	r.write(t, []byte{0xe0, 0x00})
	r.closed(t)
	waitOffline(t, b, "dev")

	pub := dialV3(t, b)
	pub.connect(t, v3Conn{id: "pub", flags: 0x02})
	pub.write(t, v3Publish("q1", 1, 1, "one", false), v3Publish("q2", 2, 2, "two", false))
	first, body := pub.next(t)
	require.Equal(t, []byte{0x40}, []byte{first})
	require.Equal(t, u16(1), body)
	first, body = pub.next(t)
	require.Equal(t, byte(0x50), first, "PUBREC")
	require.Equal(t, u16(2), body)
	pub.write(t, frame(0x62, u16(2)))
	first, _ = pub.next(t)
	require.Equal(t, byte(0x70), first, "PUBCOMP")

	r2 := dialV3(t, b)
	require.True(t, r2.connect(t, v3Conn{id: "dev", flags: 0x00}), "session present [MQTT-3.2.2-2]")
	got := map[string]byte{}
	for range 2 {
		p := r2.publish(t)
		got[p.payload] = p.qos
		r2.ack(t, p)
	}
	require.Equal(t, map[string]byte{"one": 1, "two": 2}, got)
	require.Empty(t, r2.ping(t))
	r2.nc.Close()
	waitOffline(t, b, "dev")

	// Clean session 1 discards it [MQTT-3.1.2-6] and says so [MQTT-3.2.2-1].
	r3 := dialV3(t, b)
	require.False(t, r3.connect(t, v3Conn{id: "dev", flags: 0x02}))
	r3.write(t, []byte{0xe0, 0x00})
	r3.closed(t)
	waitOffline(t, b, "dev")
	r4 := dialV3(t, b)
	require.False(t, r4.connect(t, v3Conn{id: "dev", flags: 0x00}), "a clean session 1 session is not kept")
}

// V3SessionExpiry 0 makes clean session 0 behave as clean session 1 after the connection ends.
func TestV3SessionExpiryOption(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.V3SessionExpiry = 0 })
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x00})
	r.write(t, []byte{0xe0, 0x00})
	r.closed(t)
	waitOffline(t, b, "dev")
	r2 := dialV3(t, b)
	require.False(t, r2.connect(t, v3Conn{id: "dev", flags: 0x00}))
}

// [MQTT-3.3.5-1]: a 3.1.1 client with overlapping subscriptions receives one copy, at the maximum
// QoS granted among them; a v5 client keeps one copy per subscription (v5 [MQTT-3.3.4-2] allows it).
func TestV3OverlappingSubscriptionsOneCopy(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x02})
	require.Equal(t, []byte{0, 2, 1}, r.subscribe(t, 1, "a/+", 0, "a/#", 2, "+/b", 1))
	pub := dialClient(t, b, "pub")
	pub.publish(t, "a/b", 2, "x")
	p := r.publish(t)
	require.Equal(t, "x", p.payload)
	require.Equal(t, byte(2), p.qos, "maximum granted QoS")
	r.ack(t, p)
	require.Empty(t, r.ping(t), "a second copy")
	pub.publish(t, "a/c", 1, "y") // matches a/+ (0) and a/# (2): QoS 1, the publish's own
	p = r.publish(t)
	require.Equal(t, byte(1), p.qos)
	r.ack(t, p)
	require.Empty(t, r.ping(t))
}

// [MQTT-3.9.3-2]: SUBACK return code 0x80 per refused filter, the others granted.
func TestV3SubackFailurePerFilter(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authorizer = denyTopic("secret/#") })
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x02})
	require.Equal(t, []byte{0x01, 0x80, 0x80, 0x02}, r.subscribe(t, 1, "ok", 1, "a/#/b", 1, "secret/x", 0, "$share/g/t", 2))
	r.write(t, frame(0xa2, u16(2), str("ok"), str("never")))
	first, body := r.next(t)
	require.Equal(t, byte(0xb0), first)
	require.Equal(t, u16(2), body, "3.1.1 UNSUBACK carries only the packet id [MQTT-3.11.2-1]")
}

// denyTopic refuses publish and subscribe on topics and filters matching filter.
type denyTopic string

func (d denyTopic) AuthorizePublish(_ context.Context, _ Client, topic string) error {
	if matchTopic(string(d), topic) {
		return reasonf(CodeNotAuthorized, "denied")
	}
	return nil
}

func (d denyTopic) AuthorizeSubscribe(_ context.Context, _ Client, filter string) error {
	if matchTopic(string(d), filter) {
		return reasonf(CodeNotAuthorized, "denied")
	}
	return nil
}

// [MQTT-3.3.5-2]: 3.1.1 has no negative acknowledgement: an unauthorized PUBLISH is acknowledged
// and not delivered; the connection stays.
func TestV3UnauthorizedPublishAcknowledged(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authorizer = denyTopic("secret/#") })
	sub := dialV3(t, b)
	sub.connect(t, v3Conn{id: "sub", flags: 0x02})
	require.Equal(t, []byte{1}, sub.subscribe(t, 1, "#", 1))
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x02})
	r.write(t, v3Publish("secret/x", 1, 5, "no", false))
	first, body := r.next(t)
	require.Equal(t, byte(0x40), first)
	require.Equal(t, u16(5), body, "PUBACK with only the packet id")
	r.write(t, v3Publish("open", 1, 6, "yes", false))
	first, body = r.next(t)
	require.Equal(t, byte(0x40), first)
	require.Equal(t, u16(6), body)
	p := sub.publish(t)
	require.Equal(t, "yes", p.payload, "the refused message was delivered")
}

// Mixed sessions: a 3.1.1 publisher reaches a v5 subscriber, and a v5 publisher's message reaches a
// 3.1.1 subscriber with its properties dropped (the body is topic, packet id, payload only).
func TestV3MixedWithV5(t *testing.T) {
	b := newBroker(t, nil)
	v5 := dialClient(t, b, "v5")
	v5.subscribe(t, "from/v3", 1)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x02})
	require.Equal(t, []byte{1}, r.subscribe(t, 1, "from/v5", 1))

	r.write(t, v3Publish("from/v3", 1, 1, "hello v5", false))
	m := v5.next(t)
	require.Equal(t, "hello v5", string(m.Payload))
	require.Equal(t, byte(1), m.QoS)

	exp := uint32(60)
	_, err := v5.Publish(ctxT(t), &paho.Publish{Topic: "from/v5", QoS: 1, Payload: []byte("hello v3"), Properties: &paho.PublishProperties{
		MessageExpiry: &exp, ContentType: "text/plain", ResponseTopic: "r", CorrelationData: []byte("c"),
		User: paho.UserProperties{{Key: "k", Value: "v"}},
	}})
	require.NoError(t, err)
	var p v3pub
	for {
		first, body := r.next(t)
		if first>>4 == 4 {
			continue // the PUBACK of our own publish
		}
		require.Equal(t, byte(3), first>>4)
		// topic, packet id, payload: nothing else (3.1.1 §3.3.2, §3.3.3)
		require.Len(t, body, 2+len("from/v5")+2+len("hello v3"))
		p = parseV3Publish(t, first, body)
		break
	}
	require.Equal(t, "hello v3", p.payload)
	r.ack(t, p)
}

// Message expiry still applies in the broker for a 3.1.1 subscriber: an expired queued message is
// not sent when the session resumes (v5 [MQTT-3.3.2-5]).
func TestV3MessageExpiryApplies(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x00})
	require.Equal(t, []byte{1}, r.subscribe(t, 1, "t", 1))
	r.write(t, []byte{0xe0, 0x00})
	r.closed(t)
	waitOffline(t, b, "dev")
	pub := dialClient(t, b, "pub")
	short, long := uint32(1), uint32(100)
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: &short}})
	require.NoError(t, err)
	_, err = pub.Publish(ctxT(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: &long}})
	require.NoError(t, err)
	deadline := time.Now().Add(1100 * time.Millisecond) // the passage of time under test
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, waitFor, 50*time.Millisecond)
	r2 := dialV3(t, b)
	require.True(t, r2.connect(t, v3Conn{id: "dev", flags: 0x00}))
	p := r2.publish(t)
	require.Equal(t, "long", p.payload)
	r2.ack(t, p)
	require.Empty(t, r2.ping(t))
}

// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-12]: retained messages for
// 3.1.1: sent with RETAIN 1 on a new subscription, RETAIN 0 to established subscriptions, cleared
// by an empty payload.
func TestV3Retained(t *testing.T) {
	b := newBroker(t, nil)
	live := dialV3(t, b)
	live.connect(t, v3Conn{id: "live", flags: 0x02})
	require.Equal(t, []byte{1}, live.subscribe(t, 1, "r/#", 1))
	pub := dialV3(t, b)
	pub.connect(t, v3Conn{id: "pub", flags: 0x02})
	pub.write(t, v3Publish("r/a", 1, 1, "kept", true))
	p := live.publish(t)
	require.False(t, p.retain, "RETAIN 0 to an established subscription [MQTT-3.3.1-9]")
	live.ack(t, p)

	late := dialV3(t, b)
	late.connect(t, v3Conn{id: "late", flags: 0x02})
	require.Equal(t, []byte{1}, late.subscribe(t, 1, "r/+", 1))
	p = late.publish(t)
	require.Equal(t, "kept", p.payload)
	require.True(t, p.retain, "RETAIN 1 for a new subscription [MQTT-3.3.1-8]")
	late.ack(t, p)

	pub.write(t, v3Publish("r/a", 0, 0, "", true)) // clears it [MQTT-3.3.1-10]
	first, _ := live.next(t)
	require.Equal(t, byte(3), first>>4)
	again := dialV3(t, b)
	again.connect(t, v3Conn{id: "again", flags: 0x02})
	require.Equal(t, []byte{0}, again.subscribe(t, 1, "r/#", 0))
	require.Empty(t, again.ping(t))
}

// [MQTT-3.1.2-8] [MQTT-3.1.2-10] [MQTT-3.14.4-3]: the will is published when the network connection
// closes without DISCONNECT, and not after DISCONNECT.
func TestV3Will(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "watch")
	sub.subscribe(t, "will/#", 1)
	// will flag, will QoS 1, will retain 0, clean session
	gone := dialV3(t, b)
	gone.connect(t, v3Conn{id: "gone", flags: 0x02 | 0x04 | 0x08, will: [2]string{"will/gone", "bye"}})
	polite := dialV3(t, b)
	polite.connect(t, v3Conn{id: "polite", flags: 0x02 | 0x04 | 0x08, will: [2]string{"will/polite", "no"}})
	polite.write(t, []byte{0xe0, 0x00})
	polite.closed(t)
	waitOffline(t, b, "polite")
	gone.nc.Close()
	m := sub.next(t)
	require.Equal(t, "will/gone", m.Topic)
	require.Equal(t, "bye", string(m.Payload))
	require.Equal(t, byte(1), m.QoS)
	sub.none(t, b)
}

// [MQTT-3.1.2-24]: no packet within one and a half times the keep alive closes the connection.
func TestV3KeepAlive(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "sleepy", flags: 0x02, keepAlive: 1})
	r.closed(t)
}

// [MQTT-4.7.2-1]: wildcards at the first level do not match '$' topics, for 3.1.1 subscribers too.
func TestV3DollarTopics(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x02})
	require.Equal(t, []byte{1, 1}, r.subscribe(t, 1, "#", 1, "$sys/+", 1))
	pub := dialClient(t, b, "pub")
	pub.publish(t, "$sys/x", 1, "dollar")
	p := r.publish(t)
	require.Equal(t, "$sys/x", p.topic)
	r.ack(t, p)
	require.Empty(t, r.ping(t), "'#' matched a '$' topic")
}

// [MQTT-3.1.4-2]: a second connection with the same client id takes the session over; the first is
// closed without a DISCONNECT (3.1.1 has none from the server).
func TestV3SessionTakeover(t *testing.T) {
	b := newBroker(t, nil)
	first := dialV3(t, b)
	first.connect(t, v3Conn{id: "dev", flags: 0x00})
	second := dialV3(t, b)
	require.True(t, second.connect(t, v3Conn{id: "dev", flags: 0x00}))
	first.closed(t)
}

// Shared subscriptions ($share/<group>/<filter>) for 3.1.1 subscribers: each message reaches one
// member of the group, and a v5 member shares with a 3.1.1 one.
func TestV3SharedSubscription(t *testing.T) {
	b := newBroker(t, nil)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "m3", flags: 0x02})
	require.Equal(t, []byte{1}, r.subscribe(t, 1, "$share/g/jobs", 1))
	v5 := dialClient(t, b, "m5")
	v5.subscribe(t, "$share/g/jobs", 1)
	pub := dialClient(t, b, "pub")
	const n = 20
	for i := range n {
		pub.publish(t, "jobs", 1, fmt.Sprint(i))
	}
	seen := map[string]int{}
	var v3got int
	for len(seen) < n {
		select {
		case m := <-v5.msgs:
			seen[string(m.Payload)]++
		default:
			r.write(t, []byte{0xc0, 0x00})
			for {
				first, body := r.next(t)
				if first == 0xd0 {
					break
				}
				p := parseV3Publish(t, first, body)
				seen[p.payload]++
				v3got++
				r.ack(t, p)
			}
		}
	}
	for k, c := range seen {
		require.Equal(t, 1, c, "message %s delivered %d times", k, c)
	}
	require.Positive(t, v3got, "the 3.1.1 member received none")
}

// A 3.1.1 client's durable session survives a restart: the session, its subscriptions and queued
// messages, and its protocol (one copy for overlapping subscriptions, routed before it reconnects).
func TestV3DurableSessionAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b := startDurable(t, dir)
	r := dialV3(t, b)
	r.connect(t, v3Conn{id: "dev", flags: 0x00})
	require.Equal(t, []byte{1, 1}, r.subscribe(t, 1, "q/#", 1, "q/+", 1))
	r.write(t, []byte{0xe0, 0x00})
	r.closed(t)
	waitOffline(t, b, "dev")
	pub, err := tryClient(t, b.Addrs()[0], "pub")
	require.NoError(t, err)
	pub.publish(t, "q/1", 1, "before")
	require.NoError(t, b.Close())

	b2 := startDurable(t, dir)
	defer func() { require.NoError(t, b2.Close()) }()
	pub2, err := tryClient(t, b2.Addrs()[0], "pub")
	require.NoError(t, err)
	pub2.publish(t, "q/2", 1, "after") // routed while the 3.1.1 session is offline after the restart
	r2 := dialV3(t, b2)
	require.True(t, r2.connect(t, v3Conn{id: "dev", flags: 0x00}))
	var got []string
	for range 2 {
		p := r2.publish(t)
		got = append(got, p.payload)
		r2.ack(t, p)
	}
	require.Equal(t, []string{"before", "after"}, got)
	require.Empty(t, r2.ping(t), "more than one copy per message")
}

// passwords accepts user "u" with password "p"; user "banned" is not authorized.
type passwords struct{}

func (passwords) Authenticate(_ context.Context, req *AuthRequest) (AuthResponse, error) {
	switch {
	case req.Username == "banned":
		return AuthResponse{}, reasonf(CodeNotAuthorized, "banned")
	case req.Username != "u" || string(req.Password) != "p":
		return AuthResponse{}, reasonf(CodeBadUserNameOrPassword, "bad password")
	}
	return AuthResponse{}, nil
}

// [MQTT-3.2.2-5] Table 3.1: return codes 0x03 (server unavailable: connection limit), 0x04 (bad
// user name or password) and 0x05 (not authorized), each followed by the connection closing.
func TestV3ConnackRefusals(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = passwords{}; o.MaxConnections = 1 })
	for _, tc := range []struct {
		name string
		c    v3Conn
		rc   byte
	}{
		{"bad password: 0x04", v3Conn{id: "a", flags: 0xc2, user: "u", pw: "wrong"}, 0x04},
		{"no credentials: 0x04", v3Conn{id: "a", flags: 0x02}, 0x04},
		{"not authorized: 0x05", v3Conn{id: "a", flags: 0xc2, user: "banned", pw: "p"}, 0x05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialV3(t, b)
			r.write(t, tc.c.bytes())
			present, rc := r.connack(t)
			require.Equal(t, tc.rc, rc)
			require.False(t, present)
			r.closed(t)
		})
	}
	ok := dialV3(t, b)
	ok.connect(t, v3Conn{id: "one", flags: 0xc2, user: "u", pw: "p"})
	full := dialV3(t, b)
	full.write(t, v3Conn{id: "two", flags: 0xc2, user: "u", pw: "p"}.bytes())
	_, rc := full.connack(t)
	require.Equal(t, byte(0x03), rc, "connection limit: server unavailable")
	full.closed(t)
}
