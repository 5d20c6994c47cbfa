package pubsubmqtt5

// The inbound path: the registry of subscriptions, routing a received PUBLISH to its handler,
// processing with retries, acknowledgement, dead-lettering, and the metadata of received messages.

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"sync"
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
	client *paho.Client // the connection it arrived on: acks go back there
}

// subscription is one Dapr subscription (one PullMessages stream in daprd) and its MQTT filter.
type subscription struct {
	topic      string // the filter as Dapr gave it, without $share
	mqttFilter string // what is sent in SUBSCRIBE ($share/<group>/<topic> when shared)
	subID      int    // MQTT v5 subscription identifier: a hash of mqttFilter, so stable across restarts
	qos        byte

	handler pubsub.Handler  // nil while no stream is open: messages are held
	stream  context.Context // the open stream's context
}

// registry holds the subscriptions. Entries outlive their streams: the MQTT subscription stays in
// the broker session, and messages that arrive while no stream is open are held until one opens.
type registry struct {
	mu      sync.Mutex // guards subs, removed and changed
	subs    map[string]*subscription
	removed map[string]*subscription // unsubscribed filters: their held messages are released
	changed chan struct{}            // closed and replaced on every change, to wake held messages
}

func newRegistry() *registry {
	return &registry{subs: map[string]*subscription{}, removed: map[string]*subscription{}, changed: make(chan struct{})}
}

func (r *registry) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// route finds the handler for a message: first by subscription identifier (exact even with
// overlapping filters), then by topic match. ok is false when no stream is open for it yet; wait
// is closed when that may have changed.
func (r *registry) route(pub *paho.Publish) (h pubsub.Handler, stream context.Context, wait <-chan struct{}, gone bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []int
	if pub.Properties != nil && pub.Properties.SubscriptionIdentifier != nil {
		ids = append(ids, *pub.Properties.SubscriptionIdentifier)
	}
	var match *subscription
	for _, s := range r.subs {
		for _, id := range ids {
			if s.subID == id && s.handler != nil {
				return s.handler, s.stream, r.changed, false
			}
		}
		if topicMatches(s.topic, pub.Topic) && (match == nil || (match.handler == nil && s.handler != nil)) {
			match = s
		}
	}
	if match != nil && match.handler != nil {
		return match.handler, match.stream, r.changed, false
	}
	if match == nil {
		for _, s := range r.removed {
			if topicMatches(s.topic, pub.Topic) {
				return nil, nil, r.changed, true
			}
		}
	}
	return nil, nil, r.changed, false
}

// openStreams counts subscriptions with an open stream.
func (r *registry) openStreams() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.subs {
		if s.handler != nil {
			n++
		}
	}
	return n
}

func (r *registry) all() []*subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*subscription, 0, len(r.subs))
	for _, s := range r.subs {
		c := *s
		out = append(out, &c)
	}
	return out
}

// onPublish runs on paho's receive goroutine: it only hands the message over.
func (p *PubSub) onPublish(l *live, pr paho.PublishReceived) {
	p.stats.Received.Add(1)
	m := &inbound{pub: pr.Packet, client: pr.Client}
	l.disp.enqueue(m, func(m *inbound) { p.process(l, m) })
}

// process delivers m to the app until a handler call succeeds, then acknowledges it. It returns
// without acknowledging when the component stops: the broker redelivers the message later.
func (p *PubSub) process(l *live, m *inbound) {
	disp, subs, md := l.disp, l.subs, l.md
	msg := &pubsub.NewMessage{Data: m.pub.Payload, Topic: m.pub.Topic, Metadata: receivedMetadata(m.pub)}
	if m.pub.Properties != nil && m.pub.Properties.ContentType != "" {
		ct := m.pub.Properties.ContentType
		msg.ContentType = &ct
	}
	attempts := 0
	backoff := md.RetryInitialInterval
	held := false
	defer func() {
		if held {
			p.stats.Held.Add(-1)
		}
	}()
	for {
		select {
		case <-disp.stopped():
			return // stopping: no new handler calls; the broker keeps the message
		default:
		}
		h, stream, wait, gone := subs.route(m.pub)
		if gone {
			p.release(l, m)
			return
		}
		if h == nil {
			if !held {
				held = true
				p.stats.Held.Add(1)
				p.log.Debugf("mqttv5 pub/sub: holding a message on %q until its subscription stream opens", m.pub.Topic)
			}
			select {
			case <-wait:
				continue
			case <-disp.stopped():
				return
			}
		}
		if held {
			held = false
			p.stats.Held.Add(-1)
		}

		hctx, cancel := disp.handlerContext(stream)
		n := p.stats.InFlight.Add(1)
		for {
			mx := p.stats.MaxInFlight.Load()
			if n <= mx || p.stats.MaxInFlight.CompareAndSwap(mx, n) {
				break
			}
		}
		err := h(hctx, msg)
		p.stats.InFlight.Add(-1)
		streamDone := hctx.Err() != nil
		cancel()
		if err == nil {
			p.stats.Delivered.Add(1)
			p.ack(m)
			return
		}
		if streamDone {
			continue // the stream closed under the call: hold the message for the next stream
		}
		attempts++
		p.stats.HandlerErrors.Add(1)
		if md.MaxDeliveryAttempts > 0 && attempts >= md.MaxDeliveryAttempts {
			if md.DeadLetterTopic != "" {
				if p.moveToDeadLetter(l, m, attempts, err) {
					return
				}
			} else if attempts == md.MaxDeliveryAttempts || attempts%md.MaxDeliveryAttempts == 0 {
				if attempts == md.MaxDeliveryAttempts {
					p.stats.Exhausted.Add(1)
				}
				p.log.Errorf("mqttv5 pub/sub: message on %q failed %d times and there is no deadLetterTopic: retrying on; later acknowledgements are held back until it succeeds (last error: %v)", m.pub.Topic, attempts, err)
			}
		}
		if !sleep(disp, backoff) {
			return
		}
		backoff = min(backoff*2, md.RetryMaxInterval)
	}
}

// moveToDeadLetter publishes m to the dead-letter topic, retrying with backoff until the broker
// accepts it with PUBACK 0x00, and only then acknowledges m. Until then m stays unacknowledged (and
// holds back the acknowledgements after it). It reports false when the component stopped first.
func (p *PubSub) moveToDeadLetter(l *live, m *inbound, attempts int, cause error) bool {
	disp, md := l.disp, l.md
	backoff := md.RetryInitialInterval
	for {
		err := errors.New("not connected yet")
		if c := l.conn.Load(); c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), md.PublishTimeout)
			stop := context.AfterFunc(disp.hard, cancel)
			err = p.deadLetter(ctx, c, md, m.pub, attempts, cause)
			stop()
			cancel()
		}
		if err == nil {
			p.stats.DeadLettered.Add(1)
			p.log.Warnf("mqttv5 pub/sub: message on %q moved to dead-letter topic %q after %d attempts (last error: %v)", m.pub.Topic, md.DeadLetterTopic, attempts, cause)
			p.ack(m)
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
// when there is one, otherwise acknowledged with a warning and a count (the app asked to stop
// receiving these; an MQTT broker would not have queued them after the UNSUBSCRIBE either).
func (p *PubSub) release(l *live, m *inbound) {
	if l.md.DeadLetterTopic != "" {
		p.moveToDeadLetter(l, m, 0, errors.New("subscription removed by the app"))
		return
	}
	p.stats.Unsubscribed.Add(1)
	p.log.Warnf("mqttv5 pub/sub: a message on %q arrived for a subscription the app removed; acknowledged without delivery", m.pub.Topic)
	p.ack(m)
}

// ack acknowledges m on the connection it came from. paho sends acknowledgements in receive
// order [MQTT-4.6.0-2]. If that connection is gone, the broker redelivers m on the new one.
func (p *PubSub) ack(m *inbound) {
	if m.pub.QoS == 0 {
		return
	}
	if err := m.client.Ack(m.pub); err != nil {
		p.log.Debugf("mqttv5 pub/sub: ack of a message on %q not sent (%v); the broker will redeliver it", m.pub.Topic, err)
		return
	}
	p.stats.Acked.Add(1)
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
func (p *PubSub) deadLetter(ctx context.Context, conn *mqttconn.Conn, md Metadata, pub *paho.Publish, attempts int, cause error) error {
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
		Add("mqdapr-dead-lettered-at", time.Now().UTC().Format(time.RFC3339Nano))
	dl := &paho.Publish{QoS: 1, Topic: md.DeadLetterTopic, Payload: pub.Payload, Properties: props}
	return p.send(ctx, conn, md, dl, false)
}
