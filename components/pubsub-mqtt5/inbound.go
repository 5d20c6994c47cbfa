package pubsubmqtt5

// The inbound path: routing a received PUBLISH to its handler (the registry is in registry.go),
// processing with retries, acknowledgement, dead-lettering, and the metadata of received messages.

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// Metadata keys added to received messages.
const (
	mdTopic         = "mqtt-topic"
	mdRetained      = "mqtt-retained"
	mdQoS           = "mqtt-qos"
	mdDuplicate     = "mqtt-dup"
	mdMsgExpiry     = "mqtt-message-expiry"
	mdInContentType = "mqtt-content-type"
	mdInRespTopic   = "mqtt-response-topic"
	mdInCorrData    = "mqtt-correlation-data"
)

// inbound is one received PUBLISH on its way to the app.
type inbound struct {
	pub    *paho.Publish
	ack    mqttconn.Ack // acknowledges it on the connection it arrived on
	subIDs []int        // every Subscription Identifier it carried, read off the wire
	key    string       // ordering key (see live.route): its lane in the dispatcher; "" with ordering none
	hash   uint32       // partitioning hash: of key, or a round-robin count with ordering none
}

// onPublish runs on paho's receive goroutine: it only hands the message over.
func (p *PubSub) onPublish(l *live, rc mqttconn.Received) {
	p.stats.Received.Add(1)
	m := &inbound{pub: rc.Packet, ack: rc.Ack, subIDs: rc.SubscriptionIDs}
	l.route(m)
	l.disp.enqueue(m, func(m *inbound) { p.process(l, m) })
}

// process delivers m to every subscription it is for, each until a handler call succeeds (or it
// went to the dead-letter topic), and only then acknowledges it. It returns without acknowledging
// when the component stops: the broker redelivers the message later.
func (p *PubSub) process(l *live, m *inbound) {
	held := false
	defer func() {
		if held {
			p.stats.Held.Add(-1)
		}
	}()
	hold := func(on bool) {
		if on && !held {
			p.log.Debugf("mqttv5 pub/sub: holding a message on %q until its subscription stream opens", m.pub.Topic)
			p.stats.Held.Add(1)
		} else if !on && held {
			p.stats.Held.Add(-1)
		}
		held = on
	}
	var ts []target
	for {
		var gone bool
		l.subs.mu.Lock()
		wait := l.subs.changed
		l.subs.mu.Unlock()
		if ts, gone = l.subs.targets(m); len(ts) > 0 {
			break
		}
		if gone {
			hold(false)
			if p.release(l, m, "") {
				p.ack(m)
			}
			return
		}
		hold(true)
		select {
		case <-wait:
		case <-l.disp.stopped():
			return
		}
	}
	for _, t := range ts {
		if !p.deliver(l, m, t, hold) {
			return
		}
	}
	p.ack(m)
}

// deliver hands m to t's subscription until a handler call succeeds, or disposes of it when the
// app removed that subscription or it exhausted its attempts and went to the dead-letter topic.
// It reports false when the component stopped first.
func (p *PubSub) deliver(l *live, m *inbound, t target, hold func(bool)) bool {
	disp, md := l.disp, l.md
	msg := &pubsub.NewMessage{Data: m.pub.Payload, Topic: m.pub.Topic, Metadata: receivedMetadata(m.pub)}
	if m.pub.Properties != nil && m.pub.Properties.ContentType != "" {
		ct := m.pub.Properties.ContentType
		msg.ContentType = &ct
	}
	attempts := 0
	backoff := md.RetryInitialInterval
	for {
		select {
		case <-disp.stopped():
			return false // stopping: no new handler calls; the broker keeps the message
		default:
		}
		s, gone, wait := l.subs.lookup(t, m.hash)
		if gone {
			hold(false)
			return p.release(l, m, s.filter)
		}
		if s.handler == nil {
			hold(true)
			if !waitChange(disp, wait, s.retry) {
				return false
			}
			continue
		}
		hold(false)

		msg.Topic = m.pub.Topic
		if s.topic != "" {
			msg.Topic = s.topic
		}
		hctx, cancel := disp.handlerContext(s.stream)
		n := p.stats.InFlight.Add(1)
		for {
			mx := p.stats.MaxInFlight.Load()
			if n <= mx || p.stats.MaxInFlight.CompareAndSwap(mx, n) {
				break
			}
		}
		err := p.callHandler(hctx, s.handler, msg) // metrics.go: timed
		p.stats.InFlight.Add(-1)
		streamDone := hctx.Err() != nil
		cancel()
		if err == nil {
			p.stats.Delivered.Add(1)
			return true
		}
		if streamDone {
			continue // the stream closed under the call: another partition's stream, or hold it for the next one
		}
		attempts++
		p.stats.HandlerErrors.Add(1)
		if md.MaxDeliveryAttempts > 0 && attempts >= md.MaxDeliveryAttempts {
			if md.DeadLetterTopic != "" {
				return p.moveToDeadLetter(l, m, s.filter, attempts, err)
			} else if attempts == md.MaxDeliveryAttempts || attempts%md.MaxDeliveryAttempts == 0 {
				if attempts == md.MaxDeliveryAttempts {
					p.stats.Exhausted.Add(1)
				}
				p.log.Errorf("mqttv5 pub/sub: message on %q failed %d times and there is no deadLetterTopic: retrying on; later acknowledgements are held back until it succeeds (last error: %v)", m.pub.Topic, attempts, err)
			}
		}
		if !sleep(disp, backoff) {
			return false
		}
		backoff = min(backoff*2, md.RetryMaxInterval)
	}
}

// moveToDeadLetter publishes m (the copy for subscription filter) to the dead-letter topic,
// retrying with backoff until the broker accepts it with PUBACK 0x00. Until then m stays
// unacknowledged (and holds back the acknowledgements after it). It reports false when the
// component stopped first.
func (p *PubSub) moveToDeadLetter(l *live, m *inbound, filter string, attempts int, cause error) bool {
	disp, md := l.disp, l.md
	backoff := md.RetryInitialInterval
	for {
		err := errors.New("not connected yet")
		if c := l.pub.Load(); c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), md.PublishTimeout)
			stop := context.AfterFunc(disp.hard, cancel)
			err = p.deadLetter(ctx, c, md, m.pub, filter, attempts, cause)
			stop()
			cancel()
		}
		if err == nil {
			p.stats.DeadLettered.Add(1)
			p.log.Warnf("mqttv5 pub/sub: message on %q moved to dead-letter topic %q after %d attempts (last error: %v)", m.pub.Topic, md.DeadLetterTopic, attempts, cause)
			return true
		}
		p.stats.DeadLetterFailures.Add(1)
		p.log.Errorf("mqttv5 pub/sub: dead-lettering a message from %q to %q failed; the message stays unacknowledged (holding back later acknowledgements) and is retried in %s: %v", m.pub.Topic, md.DeadLetterTopic, backoff, err)
		if !sleep(disp, backoff) {
			return false
		}
		backoff = min(backoff*2, md.RetryMaxInterval)
	}
}

// release disposes of a message held for a subscription the app removed: to the dead-letter topic
// when there is one, otherwise counted with a warning, to be acknowledged (the app asked to stop
// receiving these; an MQTT broker would not have queued them after the UNSUBSCRIBE either). It
// reports false when the component stopped first.
func (p *PubSub) release(l *live, m *inbound, filter string) bool {
	if l.md.DeadLetterTopic != "" {
		return p.moveToDeadLetter(l, m, filter, 0, errors.New("subscription removed by the app"))
	}
	p.stats.Unsubscribed.Add(1)
	p.log.Warnf("mqttv5 pub/sub: a message on %q arrived for a subscription the app removed (%q); acknowledged without delivery", m.pub.Topic, filter)
	return true
}

// ack acknowledges m on the connection it came from. Acknowledgements leave in receive order
// [MQTT-4.6.0-2] (mqttconn's ack queue). If that connection is gone, the broker redelivers m on
// the new one.
func (p *PubSub) ack(m *inbound) {
	if m.pub.QoS == 0 {
		return
	}
	if err := m.ack.Send(); err != nil {
		p.log.Debugf("mqttv5 pub/sub: ack of a message on %q not sent (%v); the broker will redeliver it", m.pub.Topic, err)
		return
	}
	p.stats.Acked.Add(1)
}

// waitChange waits until wait is closed or, when retry is not zero, until retry. It reports false
// when the component stopped first.
func waitChange(disp *dispatcher, wait <-chan struct{}, retry time.Time) bool {
	var timer <-chan time.Time
	if !retry.IsZero() {
		t := time.NewTimer(time.Until(retry))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-wait:
	case <-timer:
	case <-disp.stopped():
		return false
	}
	return true
}

// sleep waits d unless the component stops first.
func sleep(disp *dispatcher, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-disp.stopped():
		return false
	}
}

// receivedMetadata renders the MQTT attributes of a received message as Dapr metadata: every user
// property (the last one wins for a repeated key) plus the mqtt-* keys.
func receivedMetadata(pub *paho.Publish) map[string]string {
	md := map[string]string{
		mdTopic: pub.Topic,
		mdQoS:   strconv.Itoa(int(pub.QoS)),
	}
	if pub.Retain {
		md[mdRetained] = "true"
	}
	if pub.Duplicate() {
		md[mdDuplicate] = "true"
	}
	if pp := pub.Properties; pp != nil {
		for _, u := range pp.User {
			md[u.Key] = u.Value
		}
		if pp.ContentType != "" {
			md[mdInContentType] = pp.ContentType
		}
		if pp.ResponseTopic != "" {
			md[mdInRespTopic] = pp.ResponseTopic
		}
		if pp.CorrelationData != nil {
			md[mdInCorrData] = base64.StdEncoding.EncodeToString(pp.CorrelationData)
		}
		if pp.MessageExpiry != nil {
			md[mdMsgExpiry] = strconv.FormatUint(uint64(*pp.MessageExpiry), 10)
		}
	}
	return md
}

// deadLetter republishes msg to the dead-letter topic keeping its properties, with the failure in
// user properties, and returns nil only once the broker accepted it with PUBACK 0x00: 0x10 (no
// subscriber, the broker discarded it) is ErrNoSubscribers, whatever noMatchingSubscribers says.
func (p *PubSub) deadLetter(ctx context.Context, conn *mqttconn.Conn, md Metadata, pub *paho.Publish, filter string, attempts int, cause error) error {
	props := &paho.PublishProperties{}
	if pub.Properties != nil {
		cp := *pub.Properties
		cp.User = append(paho.UserProperties(nil), pub.Properties.User...)
		cp.SubscriptionIdentifier, cp.TopicAlias = nil, nil
		props = &cp
	}
	props.User.Add("mqdapr-error", cause.Error()).
		Add("mqdapr-original-topic", pub.Topic).
		Add("mqdapr-delivery-attempts", strconv.Itoa(attempts)).
		Add("mqdapr-subscription", filter).
		Add("mqdapr-dead-lettered-at", time.Now().UTC().Format(time.RFC3339Nano))
	dl := &paho.Publish{QoS: 1, Topic: md.DeadLetterTopic, Payload: pub.Payload, Properties: props}
	return p.send(ctx, conn, md, dl, false)
}
