package broker

import (
	"encoding/binary"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// UserProperty is one MQTT v5 user property; order and repetition are kept.
type UserProperty struct {
	Key, Value string
}

// Message is an application message as routed by the broker. The broker never modifies a Message
// after routing it; callers must not modify one they passed to Publish.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	PayloadFormat   byte // 0 unspecified bytes, 1 UTF-8
	ContentType     string
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
	// Expiry is the Message Expiry Interval as received; zero means the message does not expire.
	Expiry time.Duration
	// ExpiresAt is when the message expires (zero: never); set by the broker from Expiry on receipt.
	ExpiresAt time.Time

	// from is the client ID of the publisher (no-local); empty for services.
	from string
}

// messageFromPublish converts a received PUBLISH, stamping its expiry time.
func messageFromPublish(p *packets.Publish, from string, now time.Time) *Message {
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, from: from}
	if pr := p.Properties; pr != nil {
		if pr.PayloadFormat != nil {
			m.PayloadFormat = *pr.PayloadFormat
		}
		m.ContentType = pr.ContentType
		m.ResponseTopic = pr.ResponseTopic
		m.CorrelationData = pr.CorrelationData
		for _, u := range pr.User {
			m.UserProperties = append(m.UserProperties, UserProperty{u.Key, u.Value})
		}
		if pr.MessageExpiry != nil {
			m.Expiry = time.Duration(*pr.MessageExpiry) * time.Second
		}
	}
	m.stamp(now)
	return m
}

// stamp sets ExpiresAt from Expiry.
func (m *Message) stamp(now time.Time) {
	if m.Expiry > 0 && m.ExpiresAt.IsZero() {
		m.ExpiresAt = now.Add(m.Expiry)
	}
}

func (m *Message) expired(now time.Time) bool {
	return !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt)
}

// toPublish builds the outgoing PUBLISH with the remaining expiry interval [MQTT-3.3.2-6] and the
// other properties passed on unchanged [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-20].
func (m *Message) toPublish(qos byte, retain bool, subID int, now time.Time) *packets.Publish {
	pr := &packets.Properties{
		ContentType:     m.ContentType,
		ResponseTopic:   m.ResponseTopic,
		CorrelationData: m.CorrelationData,
	}
	if m.PayloadFormat != 0 {
		f := m.PayloadFormat
		pr.PayloadFormat = &f
	}
	if !m.ExpiresAt.IsZero() {
		left := m.ExpiresAt.Sub(now)
		secs := uint32(0)
		if left > 0 {
			secs = uint32((left + time.Second - 1) / time.Second)
		}
		pr.MessageExpiry = &secs
	}
	if subID > 0 {
		id := subID
		pr.SubscriptionIdentifier = &id
	}
	for _, u := range m.UserProperties {
		pr.User = append(pr.User, packets.User{Key: u.Key, Value: u.Value})
	}
	return &packets.Publish{Topic: m.Topic, Payload: m.Payload, QoS: qos, Retain: retain, Properties: pr}
}

// Binary encoding of a message for the store (format version 1).

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errCorrupt
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (m *Message) appendTo(b []byte) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= 4
	}
	b = append(b, flags, m.PayloadFormat)
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	b = appendString(b, m.ContentType)
	b = appendString(b, m.ResponseTopic)
	b = appendBytes(b, m.CorrelationData)
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, u := range m.UserProperties {
		b = appendString(b, u.Key)
		b = appendString(b, u.Value)
	}
	b = binary.AppendUvarint(b, uint64(m.Expiry))
	var exp int64
	if !m.ExpiresAt.IsZero() {
		exp = m.ExpiresAt.UnixNano()
	}
	b = binary.AppendVarint(b, exp)
	return appendString(b, m.from)
}

func (d *decoder) message() *Message {
	m := &Message{}
	flags := d.byte()
	m.QoS, m.Retain = flags&3, flags&4 != 0
	m.PayloadFormat = d.byte()
	m.Topic = d.string()
	m.Payload = d.bytes()
	m.ContentType = d.string()
	m.ResponseTopic = d.string()
	m.CorrelationData = d.bytes()
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errCorrupt
		return m
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		m.UserProperties = append(m.UserProperties, UserProperty{d.string(), d.string()})
	}
	m.Expiry = time.Duration(d.uvarint())
	if d.err == nil {
		if v, k := binary.Varint(d.b); k > 0 {
			d.b = d.b[k:]
			if v != 0 {
				m.ExpiresAt = time.Unix(0, v)
			}
		} else {
			d.err = errCorrupt
		}
	}
	m.from = d.string()
	if len(m.CorrelationData) == 0 {
		m.CorrelationData = nil
	}
	return m
}
