package pubsubmqtt5

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

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
