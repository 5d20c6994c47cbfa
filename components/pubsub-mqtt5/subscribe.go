package pubsubmqtt5

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
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

func subscriptionID(filter string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(filter))
	// Subscription identifiers are 1..268,435,455 [MQTT-3.8.2.1.2].
	return int(h.Sum32()%268435455) + 1
}

// Subscribe registers handler for req.Topic (wildcards + and # allowed) and makes sure the broker
// session holds the subscription. It returns once the broker acknowledged the SUBSCRIBE; messages
// then flow to handler until ctx ends (the stream closed). The MQTT subscription is kept after
// that, so messages wait in the session until the next stream opens.
//
// Per-subscription metadata "sharedSubscriptionGroup" overrides the component's.
func (p *PubSub) Subscribe(ctx context.Context, req pubsub.SubscribeRequest, handler pubsub.Handler) error {
	conn, subs, disp, md, err := p.state()
	if err != nil {
		return err
	}
	topic, group := req.Topic, md.SharedSubscriptionGroup
	if g, f, shared, err := splitShared(topic); err != nil {
		return err
	} else if shared {
		topic, group = f, g
	}
	if err := validateTopicFilter(topic); err != nil {
		return err
	}
	for k, v := range req.Metadata {
		if strings.EqualFold(k, "sharedSubscriptionGroup") {
			if v != "" {
				if err := validateShareName(v); err != nil {
					return fmt.Errorf("%w: subscription metadata sharedSubscriptionGroup: %w", ErrInvalidMetadata, err)
				}
			}
			group = v
		}
	}
	filter := topic
	if group != "" {
		filter = "$share/" + group + "/" + topic
	}
	s := &subscription{topic: topic, mqttFilter: filter, subID: subscriptionID(filter), qos: md.QoS}

	if err := p.sendSubscribe(ctx, conn.Manager(), s); err != nil {
		return err
	}

	subs.mu.Lock()
	if old, ok := subs.subs[filter]; ok && old.handler != nil && old.stream.Err() == nil {
		p.log.Warnf("mqttv5 pub/sub: a second stream for %q replaces the first", filter)
	}
	s.handler, s.stream = handler, ctx
	subs.subs[filter] = s
	delete(subs.removed, filter)
	subs.notifyLocked()
	subs.mu.Unlock()
	p.log.Infof("mqttv5 pub/sub: subscribed to %q (qos %d)", filter, s.qos)

	disp.goOwned(func() {
		select {
		case <-ctx.Done():
		case <-disp.stopped():
			return
		}
		subs.mu.Lock()
		if cur, ok := subs.subs[filter]; ok && cur == s {
			cur.handler, cur.stream = nil, nil
			subs.notifyLocked()
		}
		subs.mu.Unlock()
		p.unsubscribeIfAbandoned(conn.Manager(), subs, disp, s, md.UnsubscribeGrace)
	})
	return nil
}

// unsubscribeIfAbandoned decides, after a grace, what a closed stream meant. If other streams are
// open, the app dropped this subscription: it is removed from the session and the messages held
// for it are released. If no stream is open, daprd is restarting: the subscription stays in the
// session and messages wait for the new streams.
func (p *PubSub) unsubscribeIfAbandoned(cm *autopaho.ConnectionManager, subs *registry, disp *dispatcher, s *subscription, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-disp.stopped():
		return
	}
	if subs.openStreams() == 0 {
		return
	}
	subs.mu.Lock()
	cur, ok := subs.subs[s.mqttFilter]
	if !ok || cur != s || cur.handler != nil {
		subs.mu.Unlock()
		return // re-opened meanwhile
	}
	delete(subs.subs, s.mqttFilter)
	subs.removed[s.mqttFilter] = s
	subs.notifyLocked()
	subs.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{s.mqttFilter}}); err != nil {
		p.log.Warnf("mqttv5 pub/sub: unsubscribing %q: %v", s.mqttFilter, err)
	}
	p.log.Infof("mqttv5 pub/sub: the app no longer subscribes to %q: removed from the session", s.mqttFilter)
}

// sendSubscribe sends one SUBSCRIBE and checks the SUBACK. Retain Handling 1: retained messages are
// sent only when the subscription is new to the session, not on every reconnect [MQTT-3.3.1-10].
func (p *PubSub) sendSubscribe(ctx context.Context, cm *autopaho.ConnectionManager, s *subscription) error {
	id := s.subID
	sub := &paho.Subscribe{
		Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		Subscriptions: []paho.SubscribeOptions{{Topic: s.mqttFilter, QoS: s.qos, RetainHandling: 1}},
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	for {
		if err := cm.AwaitConnection(ctx); err != nil {
			return fmt.Errorf("mqttv5 pub/sub: subscribe %q: broker not reachable: %w", s.mqttFilter, err)
		}
		ack, err := cm.Subscribe(ctx, sub)
		if mqttconn.NotSent(err) && ctx.Err() == nil {
			continue
		}
		// paho returns the SUBACK with an error when it carries a failure reason code.
		if ack == nil || len(ack.Reasons) == 0 {
			if err == nil {
				err = errors.New("SUBACK without a reason code")
			}
			return fmt.Errorf("%w: %q: %w", ErrSubscribeRefused, s.mqttFilter, err)
		}
		if code := ack.Reasons[0]; code >= 0x80 {
			if code == 0xA1 && sub.Properties.SubscriptionIdentifier != nil {
				// The broker does not support subscription identifiers: route by topic instead.
				sub.Properties.SubscriptionIdentifier = nil
				continue
			}
			return fmt.Errorf("%w: %q: reason %s", ErrSubscribeRefused, s.mqttFilter, reasonString(code))
		}
		if ack.Reasons[0] < s.qos {
			p.log.Warnf("mqttv5 pub/sub: broker granted QoS %d for %q (asked %d)", ack.Reasons[0], s.mqttFilter, s.qos)
		}
		return nil
	}
}

// resubscribe renews every subscription after a (re)connection, without blocking paho.
func (p *PubSub) resubscribe(cm *autopaho.ConnectionManager, subs *registry, disp *dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-disp.stopped():
			cancel()
		case <-ctx.Done():
		}
	}()
	for _, s := range subs.all() {
		if err := p.sendSubscribe(ctx, cm, s); err != nil && ctx.Err() == nil {
			p.log.Errorf("mqttv5 pub/sub: re-subscribing after reconnect: %v", err)
		}
	}
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

// moveToDeadLetter publishes m to the dead-letter topic (retrying with backoff until the broker
// acknowledges it) and only then acknowledges m. It reports false when the component stopped first.
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
		p.log.Errorf("mqttv5 pub/sub: dead-lettering a message from %q failed, retrying: %v", m.pub.Topic, err)
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
