package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// Topic aliases, Server Keep Alive, single-copy overlapping delivery and authorization refusals
// (issue 10, "v5 completeness").

// wirePublish is a PUBLISH as the broker wrote it, decoded here because paho's decoder keeps one
// subscription identifier and resolves no alias.
type wirePublish struct {
	topic   string
	qos     byte
	dup     bool
	pid     uint16
	alias   uint16 // 0: none
	ids     []int
	payload string
}

// readWire reads the next packet, which must be a PUBLISH, decoding what paho does not.
func (r *raw) readWire(t testing.TB) *wirePublish {
	t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(waitFor))
	first, err := r.br.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(packets.PUBLISH), first>>4, "got packet type %d, want PUBLISH", first>>4)
	n, shift := 0, 0
	for {
		c, err := r.br.ReadByte()
		require.NoError(t, err)
		n |= int(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			break
		}
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r.br, b)
	require.NoError(t, err)
	p := &wirePublish{qos: (first >> 1) & 3, dup: first&8 != 0}
	tl := int(binary.BigEndian.Uint16(b))
	p.topic, b = string(b[2:2+tl]), b[2+tl:]
	if p.qos > 0 {
		p.pid, b = binary.BigEndian.Uint16(b), b[2:]
	}
	vbi := func() int {
		v, s := 0, 0
		for {
			c := b[0]
			b = b[1:]
			v |= int(c&0x7f) << s
			s += 7
			if c&0x80 == 0 {
				return v
			}
		}
	}
	plen := vbi()
	props, rest := b[:plen], b[plen:]
	b = props
	str := func() { l := int(binary.BigEndian.Uint16(b)); b = b[2+l:] }
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		switch id {
		case 0x01:
			b = b[1:]
		case 0x02:
			b = b[4:]
		case 0x23:
			p.alias, b = binary.BigEndian.Uint16(b), b[2:]
		case 0x03, 0x08, 0x09:
			str()
		case 0x26:
			str()
			str()
		case 0x0B:
			p.ids = append(p.ids, vbi())
		default:
			t.Fatalf("unexpected PUBLISH property 0x%02x", id)
		}
	}
	p.payload = string(rest)
	return p
}

func (r *raw) subscribeRaw(t testing.TB, pid uint16, subID int, opts ...packets.SubOptions) []byte {
	t.Helper()
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID, s.Subscriptions = pid, opts
	if subID > 0 {
		s.Properties.SubscriptionIdentifier = &subID
	}
	r.send(t, cp)
	ack := r.read(t)
	require.NotNil(t, ack)
	require.Equal(t, packets.SUBACK, ack.Type)
	return ack.Content.(*packets.Suback).Reasons
}

func aliasPub(topic string, qos byte, pid uint16, alias uint16, payload string) *packets.Publish {
	p := &packets.Publish{Topic: topic, QoS: qos, PacketID: pid, Payload: []byte(payload), Properties: &packets.Properties{}}
	if alias > 0 {
		p.Properties.TopicAlias = &alias
	}
	return p
}

// [MQTT-3.3.2-12]: every alias from 1 to the Topic Alias Maximum announced in CONNACK (MQTT v5
// §3.2.2.3.8) is accepted; a topic with an alias sets or replaces its mapping, an empty topic
// uses it (MQTT v5 §3.3.4); subscribers get the topic itself.
func TestTopicAliasesFromClient(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub")
	sub.subscribe(t, "al/#", 1)
	r := dialRaw(t, b)
	ack := r.connect(t, "aliaser", true, 0)
	require.NotNil(t, ack.Properties.TopicAliasMaximum)
	require.Equal(t, uint16(16), *ack.Properties.TopicAliasMaximum)
	steps := []struct {
		topic string
		alias uint16
		want  string
	}{
		{"al/one", 1, "al/one"}, {"", 1, "al/one"}, {"al/max", 16, "al/max"}, {"", 16, "al/max"},
		{"al/two", 1, "al/two"}, {"", 1, "al/two"}, // replaced mapping
		{"al/plain", 0, "al/plain"},
	}
	for i, s := range steps {
		pid := uint16(i + 1)
		r.send(t, aliasPub(s.topic, 1, pid, s.alias, fmt.Sprint(i)))
		cp := r.read(t)
		require.NotNil(t, cp)
		require.Equal(t, CodeSuccess, cp.Content.(*packets.Puback).ReasonCode, "step %d", i)
		m := sub.next(t)
		require.Equal(t, s.want, m.Topic, "step %d", i)
		require.Equal(t, fmt.Sprint(i), string(m.Payload))
		require.Nil(t, m.Properties.TopicAlias, "the broker assigns no alias to a client that allows none")
	}
}

// Bad topic aliases close the offender with the reason the spec names, others unaffected: alias 0
// [MQTT-3.3.2-8] and above the maximum [MQTT-3.3.2-9] are 0x94 (MQTT v5 §3.3.4); an empty topic with
// an alias not yet mapped, or without an alias (MQTT v5 §3.3.2.1), is a Protocol Error 0x82 (§3.3.4);
// a mapping does not outlive its connection [MQTT-3.3.2-7].
func TestTopicAliasBadInput(t *testing.T) {
	b := newBroker(t, nil)
	watcher := dialClient(t, b, "watcher")
	watcher.subscribe(t, "ok", 1)
	cases := []struct {
		name string
		pubs []*packets.Publish
		code byte
	}{
		{"alias 0 [MQTT-3.3.2-8]", []*packets.Publish{aliasPub("a", 0, 0, 0, "")}, CodeTopicAliasInvalid},
		{"alias above the maximum [MQTT-3.3.2-9]", []*packets.Publish{aliasPub("a", 0, 0, 17, "")}, CodeTopicAliasInvalid},
		{"alias above the maximum without topic", []*packets.Publish{aliasPub("", 1, 1, 65535, "")}, CodeTopicAliasInvalid},
		{"alias used before defined (§3.3.4)", []*packets.Publish{aliasPub("", 1, 1, 2, "")}, CodeProtocolError},
		{"alias defined for another alias (§3.3.4)", []*packets.Publish{aliasPub("a", 0, 0, 1, ""), aliasPub("", 0, 0, 2, "")}, CodeProtocolError},
		{"empty topic without alias (§3.3.2.1)", []*packets.Publish{aliasPub("", 0, 0, 0, "")}, CodeProtocolError},
	}
	// paho's encoder writes a Topic Alias 0 as given: alias 0 is sent by patching the value.
	cases[0].pubs[0].Properties.TopicAlias = new(uint16)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, b)
			r.connect(t, fmt.Sprint("badalias", i), true, 0)
			for _, p := range c.pubs {
				r.send(t, p)
			}
			r.expectDisconnect(t, c.code)
		})
	}
	t.Run("no alias across connections [MQTT-3.3.2-7]", func(t *testing.T) {
		r := dialRaw(t, b)
		r.connect(t, "forgetful", false, 60)
		r.send(t, aliasPub("ok", 1, 1, 3, "first"))
		require.Equal(t, packets.PUBACK, r.read(t).Type)
		require.Equal(t, "first", string(watcher.next(t).Payload))
		r.nc.Close()
		waitOffline(t, b, "forgetful")
		r = dialRaw(t, b)
		require.True(t, r.connect(t, "forgetful", false, 60).SessionPresent)
		r.send(t, aliasPub("", 1, 2, 3, "second"))
		r.expectDisconnect(t, CodeProtocolError)
	})
	t.Run("maximum 0 announces none and accepts none", func(t *testing.T) {
		b0 := newBroker(t, func(o *Options) { o.TopicAliasMaximum = 0 })
		r := dialRaw(t, b0)
		require.Nil(t, r.connect(t, "x", true, 0).Properties.TopicAliasMaximum)
		r.send(t, aliasPub("a", 0, 0, 1, ""))
		r.expectDisconnect(t, CodeTopicAliasInvalid)
	})
	dialClient(t, b, "pub").publish(t, "ok", 1, "still up")
	require.Equal(t, "still up", string(watcher.next(t).Payload))
}

// With TopicAliasOut the broker assigns aliases on what it sends, never beyond the client's Topic
// Alias Maximum [MQTT-3.3.2-11] nor to a client that allows none; a resent PUBLISH on a new
// connection carries its topic, since no mapping survives the connection [MQTT-3.3.2-7].
func TestTopicAliasesToClient(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.TopicAliasOut = 5 })
	r := dialRaw(t, b)
	two := uint16(2)
	r.connectWith(t, "aliased", false, 60, func(c *packets.Connect) { c.Properties.TopicAliasMaximum = &two })
	require.Equal(t, []byte{1}, r.subscribeRaw(t, 1, 0, packets.SubOptions{Topic: "to/#", QoS: 1}))
	plain := dialClient(t, b, "plain") // sends no Topic Alias Maximum: 0
	plain.subscribe(t, "to/#", 1)
	pub := dialClient(t, b, "pub")
	topics := []string{"to/a", "to/a", "to/b", "to/c", "to/a", "to/c"}
	for i, tp := range topics {
		pub.publish(t, tp, 1, fmt.Sprint(i))
	}
	mapped := map[uint16]string{}
	var last *wirePublish
	for i, tp := range topics {
		p := r.readWire(t)
		require.Equal(t, fmt.Sprint(i), p.payload)
		require.NotZero(t, p.alias, "message %d: every PUBLISH to this client has an alias", i)
		require.LessOrEqual(t, p.alias, two, "[MQTT-3.3.2-11]")
		if p.topic != "" {
			mapped[p.alias] = p.topic
		}
		require.Equal(t, tp, mapped[p.alias], "message %d resolves to its topic", i)
		if i < len(topics)-1 {
			r.sendAck(t, packets.PUBACK, p.pid)
		}
		last = p
		m := plain.next(t)
		require.Equal(t, tp, m.Topic)
		require.Nil(t, m.Properties.TopicAlias)
	}
	require.Equal(t, "", last.topic, "to/c is mapped: the alias alone")
	// The last one is unacknowledged: on the next connection it is resent with its topic.
	r.nc.Close()
	waitOffline(t, b, "aliased")
	r = dialRaw(t, b)
	require.True(t, r.connectWith(t, "aliased", false, 60, func(c *packets.Connect) { c.Properties.TopicAliasMaximum = &two }).SessionPresent)
	p := r.readWire(t)
	require.True(t, p.dup)
	require.Equal(t, last.pid, p.pid)
	require.Equal(t, "to/c", p.topic, "a resend on a new connection defines its alias again")
}

// [MQTT-3.2.2-21]: with MaxKeepAlive, a client asking for more, or for 0, gets Server Keep Alive in
// CONNACK, and the broker holds it to that value [MQTT-3.1.2-22]; a client within the cap gets no
// Server Keep Alive and keeps its own [MQTT-3.2.2-22].
func TestServerKeepAlive(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxKeepAlive = 1 })
	for _, c := range []struct {
		asked uint16
		want  *uint16
	}{{0, ptr(uint16(1))}, {600, ptr(uint16(1))}, {1, nil}} {
		r := dialRaw(t, b)
		ack := r.connectWith(t, fmt.Sprint("ka", c.asked), true, 0, func(p *packets.Connect) { p.KeepAlive = c.asked })
		require.Equal(t, c.want, ack.Properties.ServerKeepAlive, "asked %d", c.asked)
		// Silent: the broker closes the connection after 1.5 times the keep alive in force, where
		// the client's 0 alone would have meant never.
		r.expectDisconnect(t, CodeKeepAliveTimeout)
	}
	nocap := newBroker(t, nil)
	r := dialRaw(t, nocap)
	require.Nil(t, r.connectWith(t, "free", true, 0, func(p *packets.Connect) { p.KeepAlive = 0 }).Properties.ServerKeepAlive)
}

func ptr[T any](v T) *T { return &v }

// The keep alive cap is v5 only: 3.1.1 has no Server Keep Alive to tell the client, so its client
// keeps the keep alive it asked for (3.1.1 §3.1.2.10) and is not held to the cap. The v5 client
// that connects after it and is closed at 1.5 times the cap is the clock: the 3.1.1 connection,
// older, still answers a PINGREQ after that.
func TestServerKeepAliveNotForV3(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.MaxKeepAlive = 1 })
	v3 := dialV3(t, b)
	v3.connect(t, v3Conn{id: "v3-ka0", flags: 0x02, keepAlive: 0})
	r := dialRaw(t, b)
	r.connectWith(t, "v5-ka0", true, 0, func(p *packets.Connect) { p.KeepAlive = 0 })
	r.expectDisconnect(t, CodeKeepAliveTimeout)
	require.Empty(t, v3.ping(t), "the 3.1.1 connection is still open")
}

// overlapSubscriber subscribes r to three overlapping filters: two with identifier 1 and 2, one
// without, the last repeating identifier 2.
func overlapSubscriber(t *testing.T, r *raw) {
	t.Helper()
	require.Equal(t, []byte{0}, r.subscribeRaw(t, 1, 1, packets.SubOptions{Topic: "ov/#", QoS: 0}))
	require.Equal(t, []byte{1}, r.subscribeRaw(t, 2, 2, packets.SubOptions{Topic: "ov/+", QoS: 1}))
	require.Equal(t, []byte{2}, r.subscribeRaw(t, 3, 0, packets.SubOptions{Topic: "ov/x", QoS: 2}))
	require.Equal(t, []byte{1}, r.subscribeRaw(t, 4, 2, packets.SubOptions{Topic: "+/x", QoS: 1}))
}

// OverlapSingle: a message matching several subscriptions of a session goes once, at the highest
// QoS of them [MQTT-3.3.4-2], with the identifiers of every matching subscription, a repeated one
// repeated [MQTT-3.3.4-3]; a shared subscription still gets its own copy; the default sends a copy
// per subscription, each with its own identifier [MQTT-3.3.4-4].
func TestOverlapDelivery(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		b := newBroker(t, func(o *Options) { o.OverlapDelivery = OverlapSingle })
		r := dialRaw(t, b)
		r.connect(t, "ov", true, 0)
		overlapSubscriber(t, r)
		// A shared subscription of the same session keeps its own copy (MQTT v5 §4.8.2).
		require.Equal(t, []byte{1}, r.subscribeRaw(t, 5, 3, packets.SubOptions{Topic: "$share/g/ov/x", QoS: 1}))
		pub := dialClient(t, b, "pub")
		pub.publish(t, "ov/x", 2, "all")
		var merged, shared *wirePublish
		for range 2 {
			p := r.readWire(t)
			require.Equal(t, "all", p.payload)
			if p.qos == 2 {
				merged = p
			} else {
				shared = p
			}
		}
		require.NotNil(t, merged, "one copy at the highest QoS of the matching subscriptions")
		require.ElementsMatch(t, []int{1, 2, 2}, merged.ids)
		r.sendAck(t, packets.PUBREC, merged.pid)
		r.expectPubrel(t, merged.pid)
		r.sendAck(t, packets.PUBCOMP, merged.pid)
		require.NotNil(t, shared)
		r.sendAck(t, packets.PUBACK, shared.pid)
		require.Equal(t, byte(1), shared.qos)
		require.Equal(t, []int{3}, shared.ids)
		pub.publish(t, "ov/y", 1, "two") // ov/# and ov/+
		p := r.readWire(t)
		require.Equal(t, "two", p.payload)
		require.Equal(t, byte(1), p.qos)
		require.ElementsMatch(t, []int{1, 2}, p.ids)
		r.sendAck(t, packets.PUBACK, p.pid)
		pub.publish(t, "ov/z/deep", 1, "one") // ov/# alone, granted QoS 0
		p = r.readWire(t)
		require.Equal(t, "one", p.payload)
		require.Equal(t, byte(0), p.qos)
		require.Equal(t, []int{1}, p.ids)
		r.ping(t) // nothing else was sent: one copy each
	})
	t.Run("per-subscription", func(t *testing.T) {
		b := newBroker(t, nil)
		r := dialRaw(t, b)
		r.connect(t, "ov", true, 0)
		overlapSubscriber(t, r)
		dialClient(t, b, "pub").publish(t, "ov/x", 2, "all")
		var ids []int
		for range 4 {
			p := r.readWire(t)
			require.LessOrEqual(t, len(p.ids), 1)
			ids = append(ids, p.ids...)
			switch p.qos {
			case 1:
				r.sendAck(t, packets.PUBACK, p.pid)
			case 2:
				r.sendAck(t, packets.PUBREC, p.pid)
				r.expectPubrel(t, p.pid)
				r.sendAck(t, packets.PUBCOMP, p.pid)
			}
		}
		require.ElementsMatch(t, []int{1, 2, 2}, ids)
		r.ping(t)
	})
}

// A single copy with several identifiers is stored as such: after a restart the offline session
// gets it once, still with every identifier.
func TestOverlapSingleDurable(t *testing.T) {
	dir := t.TempDir()
	start := func() *Broker {
		return newBroker(t, func(o *Options) { o.DataDir, o.OverlapDelivery = dir, OverlapSingle })
	}
	b := start()
	r := dialRaw(t, b)
	r.connect(t, "ovd", false, 3600)
	overlapSubscriber(t, r)
	r.nc.Close()
	waitOffline(t, b, "ovd")
	dialClient(t, b, "pub").publish(t, "ov/x", 1, "kept")
	require.NoError(t, b.Close())
	b = start()
	r = dialRaw(t, b)
	require.True(t, r.connect(t, "ovd", false, 3600).SessionPresent)
	p := r.readWire(t)
	require.Equal(t, "kept", p.payload)
	require.ElementsMatch(t, []int{1, 2, 2}, p.ids)
	r.sendAck(t, packets.PUBACK, p.pid)
	r.ping(t)
}

// TopicRules refuse by filter: SUBACK carries 0x87 (Not authorized, MQTT v5 §3.9.3) for the denied
// filters only [MQTT-3.9.3-1], shared ones included; a PUBLISH on a denied topic gets PUBACK or
// PUBREC 0x87 (MQTT v5 §3.4.2.1, §3.5.2.1) and is not routed [MQTT-3.3.5-2]; the connection and
// other clients carry on.
func TestTopicRulesRefuse(t *testing.T) {
	rules, err := NewTopicRules([]string{"secret/#", "$SYS/#"}, []string{"ro/#"})
	require.NoError(t, err)
	b := newBroker(t, func(o *Options) { o.Authorizer = rules })
	c := dialClient(t, b, "c")
	sa, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "open/#", QoS: 1}, {Topic: "secret/x", QoS: 1}, {Topic: "#", QoS: 1},
		{Topic: "$share/g/secret/+", QoS: 1}, {Topic: "+/public", QoS: 1}, {Topic: "ro/+", QoS: 1},
	}})
	require.Error(t, err) // paho reports a refused filter as an error, with the SUBACK
	require.NotNil(t, sa)
	// "+/public" could receive secret/public: refused too.
	require.Equal(t, []byte{1, CodeNotAuthorized, CodeNotAuthorized, CodeNotAuthorized, CodeNotAuthorized, 1}, sa.Reasons)
	pr, _ := c.Publish(ctxT(t), &paho.Publish{Topic: "ro/x", QoS: 1, Payload: []byte("no")})
	require.Equal(t, CodeNotAuthorized, pr.ReasonCode)
	pr, _ = c.Publish(ctxT(t), &paho.Publish{Topic: "ro/x", QoS: 2, Payload: []byte("no")})
	require.Equal(t, CodeNotAuthorized, pr.ReasonCode)
	require.Equal(t, CodeSuccess, c.publish(t, "open/x", 1, "yes").ReasonCode)
	require.Equal(t, "yes", string(c.next(t).Payload), "the refused publishes were not routed, the connection is up")
	_, err = NewTopicRules([]string{"a/#/b"}, nil)
	require.ErrorContains(t, err, `"a/#/b" is not a valid topic filter`)
	_, err = NewTopicRules(nil, []string{"$share/g/a"})
	require.ErrorContains(t, err, "without $share")
}

func TestFiltersOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/+", "a/b", true}, {"a/+", "a", false},
		{"a/#", "a", true}, {"#", "x/y/z", true}, {"+/+", "a/#", true}, {"+/b", "a/+", true},
		{"a/+/c", "a/b", false}, {"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/a", true},
		{"a/b/c", "a/#", true}, {"a/b", "a/b/c", false},
	} {
		require.Equal(t, c.want, filtersOverlap(c.a, c.b), "%q %q", c.a, c.b)
		require.Equal(t, c.want, filtersOverlap(c.b, c.a), "%q %q", c.b, c.a)
	}
}

// A third-party client's aliases: mosquitto_pub 2.0.11 (-l, one PUBLISH per line, with Topic Alias
// 1) sends the topic with the alias once and the alias alone after that; every message is
// acknowledged and routed with its topic [MQTT-3.3.2-12]. (libmosquitto 2.0.11 and paho.golang
// v0.23.0 do not resolve aliases a server assigns, and announce no Topic Alias Maximum, so
// TopicAliasOut leaves them alone: a client that allows none gets none.)
func TestTopicAliasesMosquittoPub(t *testing.T) {
	mp, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed: run scripts/install-test-deps.sh (Debian package mosquitto-clients)")
	}
	b := newBroker(t, func(o *Options) { o.TopicAliasOut = 5 })
	sub := dialClient(t, b, "sub")
	sub.subscribe(t, "mq/#", 1)
	_, port, _ := strings.Cut(b.Addrs()[0], ":")
	cmd := exec.Command(mp, "-V", "mqttv5", "-h", "127.0.0.1", "-p", port, "-i", "mqpub", "-q", "1", "-t", "mq/alias", "-l", "-d", "-D", "publish", "topic-alias", "1")
	cmd.Stdin = strings.NewReader("l1\nl2\nl3\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "'(null)'", "mosquitto_pub sent the alias alone:\n%s", out)
	require.Equal(t, 3, strings.Count(string(out), "received PUBACK"))
	require.Equal(t, 3, strings.Count(string(out), "RC:0)"), "every PUBACK 0x00:\n%s", out)
	for _, want := range []string{"l1", "l2", "l3"} {
		m := sub.next(t)
		require.Equal(t, "mq/alias", m.Topic)
		require.Equal(t, want, string(m.Payload))
		require.Nil(t, m.Properties.TopicAlias, "paho announced no Topic Alias Maximum: no alias for it")
	}
}

// BenchmarkOverlapRoute publishes QoS 1 messages with Broker.Publish to a subscriber holding one
// subscription and to one holding three overlapping ones, in each overlap mode, and reports
// allocations per published message (independent of machine load, unlike the rates in
// bench_test.go) and copies sent per message. Run with:
//
//	go test -run '^$' -bench OverlapRoute -benchmem -count 3 ./broker/
func BenchmarkOverlapRoute(b *testing.B) {
	for _, c := range []struct {
		name    string
		mode    Overlap
		filters []string
	}{
		{"one-filter", OverlapPerSubscription, []string{"bench/x"}},
		{"three-per-subscription", OverlapPerSubscription, []string{"bench/x", "bench/+", "#"}},
		{"three-single", OverlapSingle, []string{"bench/x", "bench/+", "#"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			br := newBroker(b, func(o *Options) { o.OverlapDelivery = c.mode })
			sub := dialClient(b, br, "bench-sub")
			for _, f := range c.filters {
				sub.subscribe(b, f, 1)
			}
			ctx := context.Background()
			msg := &Message{Topic: "bench/x", QoS: 1, Payload: make([]byte, 64)}
			before := br.Stats().MessagesOut
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := br.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(br.Stats().MessagesOut-before)/float64(b.N), "copies/msg")
			for range len(sub.msgs) {
				<-sub.msgs
			}
		})
	}
}

// paho.golang v0.23.0, a third-party client, reads the Topic Alias Maximum from CONNACK and
// publishes with an alias: the topic once, then the alias alone; both arrive with their topic.
func TestTopicAliasesPahoClient(t *testing.T) {
	b := newBroker(t, nil)
	sub := dialClient(t, b, "sub")
	sub.subscribe(t, "pa/#", 1)
	pub := dialClient(t, b, "pub")
	require.Equal(t, uint16(16), *pub.connack.Properties.TopicAliasMaximum)
	alias := uint16(16)
	for i, topic := range []string{"pa/long/topic/name", ""} {
		r, err := pub.Publish(ctxT(t), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprint(i)), Properties: &paho.PublishProperties{TopicAlias: &alias}})
		require.NoError(t, err)
		require.Equal(t, CodeSuccess, r.ReasonCode)
		m := sub.next(t)
		require.Equal(t, "pa/long/topic/name", m.Topic)
		require.Equal(t, fmt.Sprint(i), string(m.Payload))
	}
	over := uint16(17)
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "pa/x", QoS: 1, Properties: &paho.PublishProperties{TopicAlias: &over}})
	require.ErrorIs(t, err, paho.ErrInvalidArguments, "paho itself keeps to the announced maximum")
}
