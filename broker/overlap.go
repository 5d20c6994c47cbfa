package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Overlapping subscriptions delivered as one copy (Options.OverlapDelivery = OverlapSingle): the
// targets of one session are merged, and the copy carries every subscription identifier, which
// paho's Properties (one identifier) cannot encode: multiIDPublish does.

// mergeOverlaps merges the non-shared targets of a session into one, for every session when all is
// set (OverlapSingle) and always for a 3.1.1 session, whose protocol allows one copy only
// [MQTT-3.3.5-1] (v5 sessions keep a copy per subscription otherwise): the highest QoS of them
// [MQTT-3.3.4-2], every subscription identifier, in subscription order, repeated if the client
// used one for several subscriptions [MQTT-3.3.4-3], and the retain flag kept when any of them
// has Retain As Published. Shared-subscription targets stay as they are (MQTT v5 §4.8.2: each
// group gets its copy). ts is reused.
func mergeOverlaps(ts []target, all bool) []target {
	var first map[*session]int
	out := ts[:0]
	for _, t := range ts {
		if t.grp != nil || t.sess == nil || !(all || t.sess.v3) {
			out = append(out, t)
			continue
		}
		if first == nil {
			first = make(map[*session]int, len(ts))
		}
		i, seen := first[t.sess]
		if !seen {
			first[t.sess] = len(out)
			out = append(out, t)
			continue
		}
		m := &out[i]
		if !m.merged {
			cp := *m.sub // route reads SubID and RAP from it; the session's own stays as it is
			m.sub, m.merged = &cp, true
		}
		m.qos = max(m.qos, t.qos)
		m.sub.RAP = m.sub.RAP || t.sub.RAP
		switch {
		case t.sub.SubID == 0:
		case m.sub.SubID == 0:
			m.sub.SubID = t.sub.SubID
		default:
			m.more = append(m.more, t.sub.SubID)
		}
	}
	return out
}

// multiIDPublish is a PUBLISH carrying further Subscription Identifiers after the one in
// Publish.Properties. It goes in a ControlPacket whose FixedHeader has Type 0 and the whole first
// byte in Flags (paho's ControlPacket.WriteTo assumes *Publish content for Type PUBLISH); the
// bytes on the wire are a PUBLISH's.
type multiIDPublish struct {
	*packets.Publish
	more []int
}

// Buffers encodes the variable header with every identifier, and the payload [MQTT-3.3.2].
func (m *multiIDPublish) Buffers() net.Buffers {
	p := m.Publish
	h := binary.BigEndian.AppendUint16(nil, uint16(len(p.Topic)))
	h = append(h, p.Topic...)
	if p.QoS > 0 {
		h = binary.BigEndian.AppendUint16(h, p.PacketID)
	}
	props := p.Properties.Pack(packets.PUBLISH)
	for _, id := range m.more {
		props = appendVarInt(append(props, packets.PropSubscriptionIdentifier), id)
	}
	h = appendVarInt(h, len(props))
	return net.Buffers{h, props, p.Payload}
}

// WriteTo writes the packet with its fixed header.
func (m *multiIDPublish) WriteTo(w io.Writer) (int64, error) {
	return publishPacket(m.Publish, m.more).WriteTo(w)
}

// Unpack is not supported: the broker only sends these.
func (m *multiIDPublish) Unpack(*bytes.Buffer) error {
	return errors.New("broker: multiIDPublish is encode-only")
}

// publishPacket wraps p, with the further subscription identifiers more, for the write queue.
func publishPacket(p *packets.Publish, more []int) *packets.ControlPacket {
	cp := p.ToControlPacket()
	if len(more) == 0 {
		return cp
	}
	return &packets.ControlPacket{
		FixedHeader: packets.FixedHeader{Flags: packets.PUBLISH<<4 | cp.Flags},
		Content:     &multiIDPublish{Publish: p, more: more},
	}
}

// publishOf returns the PUBLISH a queued packet carries, nil for other packets.
func publishOf(cp *packets.ControlPacket) *packets.Publish {
	switch p := cp.Content.(type) {
	case *packets.Publish:
		return p
	case *multiIDPublish:
		return p.Publish
	}
	return nil
}

// wireSize is the size of cp on the wire, with the largest fixed header (5 bytes).
func wireSize(cp *packets.ControlPacket) int {
	n := 5
	for _, b := range cp.Content.Buffers() {
		n += len(b)
	}
	return n
}

// appendVarInt appends v as an MQTT Variable Byte Integer [MQTT-1.5.5].
func appendVarInt(b []byte, v int) []byte {
	for {
		c := byte(v % 128)
		v /= 128
		if v > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if v == 0 {
			return b
		}
	}
}

// publishPacket is the PUBLISH that sends e (DUP set for a resend [MQTT-3.3.1-1]).
func (e *entry) publishPacket(now time.Time, dup bool) *packets.ControlPacket {
	p := e.msg.toPublish(e.qos, e.retain, e.subID, now)
	p.PacketID, p.Duplicate = e.pid, dup
	return publishPacket(p, e.moreIDs)
}
