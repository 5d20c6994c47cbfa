package pubsubmqtt5

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mdparse"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// Per-request publish metadata keys. Every other key becomes an MQTT user property (so a W3C
// "traceparent" travels as one), and user properties come back as metadata on receipt.
const (
	mdRetain          = "retain"
	mdTTL             = "ttlInSeconds"
	mdContentType     = "contentType"
	mdCorrelationData = "correlationData" // base64 on the wire of metadata; raw bytes in MQTT
	mdResponseTopic   = "responseTopic"
	mdRawPayload      = "rawPayload" // interpreted by daprd; never forwarded
)

// codeNoMatchingSubscribers is the PUBACK reason "no matching subscribers" [MQTT-3.4.2.1].
const codeNoMatchingSubscribers = 0x10

// maxMQTTPacket is the largest packet MQTT can encode (remaining length 268,435,455 + 5 header bytes).
const maxMQTTPacket = 268435455 + 5

// Publish sends one message at the configured QoS and returns only after the broker's PUBACK. A
// reason code of 0x80 or more is ErrPublishRefused; 0x10 "no matching subscribers" (the broker
// discarded the message) is ErrNoSubscribers unless noMatchingSubscribers is "accept" or the
// message is retained. It waits for the connection during a reconnect, up to the context's
// deadline or publishTimeout. A message discarded with 0x10 while this component was subscribing
// to a matching filter is sent once more when that subscription is in place (subscribing.go).
func (p *PubSub) Publish(ctx context.Context, req *pubsub.PublishRequest) error {
	conn, subs, _, md, err := p.state()
	if err != nil {
		return err
	}
	msg, err := buildPublish(req, md)
	if err != nil {
		return err
	}
	accept := md.NoMatchingSubscribers == NoSubscribersAccept || msg.Retain
	if msg.Retain || msg.QoS == 0 {
		// A retained message is kept by the broker and reaches a later subscriber anyway (sending
		// it again would deliver it twice); QoS 0 has no PUBACK to tell.
		return p.send(ctx, conn, md, msg, accept)
	}
	since := subs.subscribesEnded()
	err = p.send(ctx, conn, md, msg, false)
	if errors.Is(err, ErrNoSubscribers) && subs.subscribedMeanwhile(ctx, md.PublishTimeout, since, msg.Topic) {
		err = p.send(ctx, conn, md, msg, false)
	}
	if accept && errors.Is(err, ErrNoSubscribers) {
		return nil
	}
	return err
}

// send publishes msg and waits for its PUBACK. acceptNoSubscribers says whether PUBACK 0x10 (the
// broker discarded the message for want of a subscriber) counts as success.
func (p *PubSub) send(ctx context.Context, conn *mqttconn.Conn, md Metadata, msg *paho.Publish, acceptNoSubscribers bool) error {
	if size, limit := packetSize(msg), conn.MaxPacketSize(); limit > 0 && size > int(limit) {
		return fmt.Errorf("%w: %d bytes for topic %q; the broker accepts at most %d (its Maximum Packet Size)", ErrMessageTooLarge, size, msg.Topic, limit)
	} else if size > maxMQTTPacket {
		return fmt.Errorf("%w: %d bytes for topic %q; MQTT carries at most %d", ErrMessageTooLarge, size, msg.Topic, maxMQTTPacket)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, md.PublishTimeout)
		defer cancel()
	}
	cm := conn.Manager()
	for {
		if err := cm.AwaitConnection(ctx); err != nil {
			return fmt.Errorf("%w: topic %q: broker %s not reachable: %w", ErrPublishFailed, msg.Topic, conn.URL().Redacted(), err)
		}
		resp, err := cm.Publish(ctx, msg)
		if err != nil {
			if mqttconn.NotSent(err) && ctx.Err() == nil {
				continue // lost between the wait and the send: wait again
			}
			return fmt.Errorf("%w: topic %q: %w (the message may still have reached the broker)", ErrPublishFailed, msg.Topic, err)
		}
		if msg.QoS > 0 && resp != nil && resp.ReasonCode >= 0x80 {
			reason := mqttconn.ReasonString(resp.ReasonCode)
			if resp.Properties != nil && resp.Properties.ReasonString != "" {
				reason += " (" + resp.Properties.ReasonString + ")"
			}
			return fmt.Errorf("%w: topic %q: reason %s", ErrPublishRefused, msg.Topic, reason)
		}
		if msg.QoS > 0 && resp != nil && resp.ReasonCode == codeNoMatchingSubscribers && !acceptNoSubscribers {
			return fmt.Errorf("%w: topic %q", ErrNoSubscribers, msg.Topic)
		}
		return nil
	}
}

// buildPublish maps a Dapr publish request onto an MQTT PUBLISH.
func buildPublish(req *pubsub.PublishRequest, md Metadata) (*paho.Publish, error) {
	if err := validateTopicName(req.Topic); err != nil {
		return nil, err
	}
	msg := &paho.Publish{
		QoS:        md.QoS,
		Retain:     md.Retain,
		Topic:      req.Topic,
		Payload:    req.Data,
		Properties: &paho.PublishProperties{},
	}
	if req.ContentType != nil {
		msg.Properties.ContentType = *req.ContentType
	}
	for k, v := range req.Metadata {
		switch {
		case strings.EqualFold(k, mdRetain):
			b, err := mdparse.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%w: publish metadata %s=%q: want true or false", ErrInvalidMetadata, k, v)
			}
			msg.Retain = b
		case strings.EqualFold(k, mdTTL):
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: publish metadata %s=%q: want whole seconds from 0 to 4294967295", ErrInvalidMetadata, k, v)
			}
			if n > 0 {
				exp := uint32(n)
				msg.Properties.MessageExpiry = &exp
			}
		case strings.EqualFold(k, mdContentType):
			msg.Properties.ContentType = v
		case strings.EqualFold(k, mdCorrelationData):
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, fmt.Errorf("%w: publish metadata %s: want base64: %v", ErrInvalidMetadata, k, err)
			}
			msg.Properties.CorrelationData = b
		case strings.EqualFold(k, mdResponseTopic):
			if err := validateTopicName(v); err != nil {
				return nil, fmt.Errorf("%w: publish metadata %s: %w", ErrInvalidMetadata, k, err)
			}
			msg.Properties.ResponseTopic = v
		case strings.EqualFold(k, mdRawPayload):
			// daprd's business: it decided whether Data is a CloudEvent.
		default:
			msg.Properties.User.Add(k, v)
		}
	}
	return msg, nil
}

// packetSize is the encoded size of a PUBLISH, to compare with the broker's Maximum Packet Size.
func packetSize(m *paho.Publish) int {
	props := 0
	if pp := m.Properties; pp != nil {
		if pp.ContentType != "" {
			props += 3 + len(pp.ContentType)
		}
		if pp.ResponseTopic != "" {
			props += 3 + len(pp.ResponseTopic)
		}
		if pp.CorrelationData != nil {
			props += 3 + len(pp.CorrelationData)
		}
		if pp.MessageExpiry != nil {
			props += 5
		}
		for _, u := range pp.User {
			props += 5 + len(u.Key) + len(u.Value)
		}
	}
	body := 2 + len(m.Topic) + varIntLen(props) + props + len(m.Payload)
	if m.QoS > 0 {
		body += 2
	}
	return 1 + varIntLen(body) + body
}

func varIntLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}
