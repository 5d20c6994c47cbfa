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

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
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
// A topic "$partition/<i>of<K>/<filter>" is partition i of a partitioned subscription: the K
// partitions share one MQTT subscription to filter, and each message goes to the partition of
// its ordering key's hash (see subscription.pick), carrying the partition's Dapr topic as its
// topic (the MQTT topic is in the mqtt-topic metadata). Subscribing with a K other than that of
// the partitions open for the same filter, or to the plain filter beside them, is an error.
//
// Per-subscription metadata "sharedSubscriptionGroup" overrides the component's.
func (p *PubSub) Subscribe(ctx context.Context, req pubsub.SubscribeRequest, handler pubsub.Handler) error {
	conn, subs, disp, md, err := p.state()
	if err != nil {
		return err
	}
	subs.beginSubscribe()
	defer subs.endSubscribe()
	daprFilter, idx, parts, partitioned, err := partition.Parse(req.Topic)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTopic, err)
	}
	topic, group := daprFilter, md.SharedSubscriptionGroup
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

	// The filter is recorded before the SUBSCRIBE: after a crash, the record must list every
	// filter the session may hold. The session lock keeps a concurrent removal of the same filter
	// (its UNSUBSCRIBE) from landing after this SUBSCRIBE, and serialises Subscribe calls.
	subs.session.Lock()
	defer subs.session.Unlock()
	subs.mu.Lock()
	old := subs.subs[filter]
	if old != nil && old.open() && (len(old.parts) != parts || old.partitioned != partitioned) {
		has := fmt.Sprintf("a plain subscription (%q)", old.daprFilter)
		if old.partitioned {
			has = fmt.Sprintf("%d partitions, %d of them open (e.g. %q)", len(old.parts), len(old.parts)-len(old.missing()), partition.Topic(old.daprFilter, 0, len(old.parts)))
		}
		subs.mu.Unlock()
		return fmt.Errorf("%w: %q: MQTT filter %q already has %s; every Dapr subscription of one filter must use the same partition count: subscribe to %s<i>of<K>/%s for i = 0..K-1 with one K, or to %q alone",
			ErrInvalidTopic, req.Topic, filter, has, partition.Prefix, daprFilter, daprFilter)
	}
	subs.mu.Unlock()
	added, err := subs.rec.add(subs.clientID, filter)
	if err != nil {
		p.log.Errorf("mqttv5 pub/sub: %v: if the component restarts while %q is in the broker session and the app no longer subscribes to it, its messages are held for unsubscribeGrace and then released, and the filter stays in the session", err, filter)
	}
	probe := &subscription{topic: topic, mqttFilter: filter, subID: subscriptionID(filter), qos: md.QoS}
	if err := p.sendSubscribe(ctx, conn.Manager(), probe); err != nil {
		if added && errors.Is(err, ErrSubscribeRefused) {
			_ = subs.rec.remove(subs.clientID, filter)
		}
		return err
	}

	subs.mu.Lock()
	s := subs.subs[filter]
	fresh := s == nil || !s.open() || len(s.parts) != parts || s.partitioned != partitioned
	if fresh {
		// A new subscription, or one whose streams are all closed (a restarted daprd, another K):
		// it starts over with parts streams.
		s = probe
		s.daprFilter, s.partitioned, s.active, s.parts = daprFilter, partitioned, true, make([]part, parts)
		for i := range s.parts {
			s.parts[i].idleSince = time.Now()
		}
	} else if cur := s.parts[idx]; cur.handler != nil && cur.stream.Err() == nil {
		p.log.Warnf("mqttv5 pub/sub: a second stream for %q replaces the first", req.Topic)
	}
	if subs.openStreamsLocked() == 0 {
		subs.upSince = time.Now()
	}
	s.parts[idx] = part{handler: handler, stream: ctx}
	subs.subs[filter] = s
	delete(subs.subs, placeholderKey(s.subID))
	delete(subs.removed, filter)
	delete(subs.removed, placeholderKey(s.subID))
	missing := s.missing()
	subs.notifyLocked()
	subs.mu.Unlock()
	switch {
	case !partitioned:
		p.log.Infof("mqttv5 pub/sub: subscribed to %q (qos %d)", filter, s.qos)
	case len(missing) == 0:
		p.log.Infof("mqttv5 pub/sub: subscribed to %q (qos %d): all %d partition streams are open", filter, s.qos, parts)
	default:
		p.log.Infof("mqttv5 pub/sub: partition %d of %d of %q open; the messages of the %d others wait up to unsubscribeGrace for their streams", idx, parts, filter, len(missing))
	}
	if partitioned && fresh {
		disp.goOwned(func() { p.checkPartitions(subs, disp, s, md.UnsubscribeGrace) })
	}

	disp.goOwned(func() {
		select {
		case <-ctx.Done():
		case <-disp.stopped():
			return
		}
		subs.mu.Lock()
		cur, ok := subs.subs[filter]
		if !ok || cur != s || cur.parts[idx].stream != ctx {
			subs.mu.Unlock()
			return // replaced meanwhile
		}
		cur.parts[idx] = part{idleSince: time.Now()}
		others := cur.open()
		if !others {
			cur.idleSince = time.Now()
		}
		subs.notifyLocked()
		subs.mu.Unlock()
		if others {
			// daprd closing (restarting) closes every stream one by one: only a partition still
			// missing after the grace is an error.
			p.log.Infof("mqttv5 pub/sub: the stream of %q closed while other partitions of %q stay open: its messages wait up to unsubscribeGrace (%s) for it to reopen, then go to the open partitions", req.Topic, filter, md.UnsubscribeGrace)
			disp.goOwned(func() { p.checkPartitions(subs, disp, s, md.UnsubscribeGrace) })
		}
	})
	return nil
}

// checkPartitions reports, once grace has passed since the partitioned subscription s started or
// one of its streams closed, the partitions that still have no stream while others do: from then
// on their messages go to the open partitions (nothing is lost or stuck), but the app is probably
// missing a subscription, and its keys no longer keep to their own partition.
func (p *PubSub) checkPartitions(subs *registry, disp *dispatcher, s *subscription, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-disp.stopped():
		return
	}
	subs.mu.Lock()
	var missing []string
	if subs.subs[s.mqttFilter] == s && s.open() {
		missing = s.missing()
	}
	subs.mu.Unlock()
	if len(missing) > 0 {
		p.log.Errorf("mqttv5 pub/sub: partitioned subscription %q: %d of its %d partitions have had no stream for %s; subscribe the app to %s. Until then their messages go to the open partitions (nothing is lost; order per key holds)",
			s.mqttFilter, len(missing), len(s.parts), grace, strings.Join(missing, ", "))
	}
}

// reconcile removes, for as long as the component runs, the subscriptions the app no longer
// makes: a filter without a stream (closed, or known only from the record of an earlier run, or a
// subscription identifier nobody knows) that registry.abandoned finds abandoned is UNSUBSCRIBEd
// and the messages held for it are released (dead-letter topic, or acknowledged and counted).
// While no stream is open (daprd restarting) subscriptions stay and their messages wait.
func (p *PubSub) reconcile(l *live) {
	for {
		due, next, changed := l.subs.abandoned(time.Now(), l.md.UnsubscribeGrace)
		for _, s := range due {
			p.removeSubscription(l, s)
		}
		if len(due) > 0 {
			continue
		}
		var timer <-chan time.Time // nil: nothing can become abandoned before the registry changes
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		select {
		case <-changed:
		case <-timer:
		case <-l.disp.stopped():
		}
		if t != nil {
			t.Stop()
		}
		select {
		case <-l.disp.stopped():
			return
		default:
		}
	}
}

// removeSubscription takes s out of the registry (its held messages are released) and the filter
// out of the session and then the record. An UNSUBSCRIBE that fails leaves the filter recorded:
// its messages keep being released, and the next run of the component tries again.
func (p *PubSub) removeSubscription(l *live, s *subscription) {
	l.subs.session.Lock()
	defer l.subs.session.Unlock()
	if !l.subs.remove(s) {
		return // a stream reopened meanwhile
	}
	if s.mqttFilter == "" {
		p.log.Errorf("mqttv5 pub/sub: messages carry subscription identifier %d, which matches no subscription of the app and no filter in the record (%s): they are released (to the dead-letter topic, or acknowledged and counted) and keep arriving; the filter cannot be removed from the broker session without its name", s.subID, l.subs.rec.path)
		return
	}
	conn := l.conn.Load()
	if conn == nil {
		p.log.Warnf("mqttv5 pub/sub: %q is no longer subscribed by the app; not connected yet to remove it from the session (done once connected)", s.mqttFilter)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := context.AfterFunc(l.disp.hard, cancel)
	defer stop()
	if err := p.sendUnsubscribe(ctx, conn.Manager(), l.subs, s.mqttFilter); err != nil {
		p.log.Warnf("mqttv5 pub/sub: %v (its messages are released meanwhile; retried on reconnection and at the next start)", err)
		return
	}
	p.log.Infof("mqttv5 pub/sub: the app no longer subscribes to %q: removed from the session", s.mqttFilter)
}

// sendUnsubscribe removes filter from the session and, once the broker answered (0x11 "no
// subscription existed" included), from the record. Call with subs.session held.
func (p *PubSub) sendUnsubscribe(ctx context.Context, cm *autopaho.ConnectionManager, subs *registry, filter string) error {
	ack, err := cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}})
	if err != nil && (ack == nil || len(ack.Reasons) == 0) {
		return fmt.Errorf("unsubscribing %q: %w", filter, err)
	}
	if err := subs.rec.remove(subs.clientID, filter); err != nil {
		p.log.Warnf("mqttv5 pub/sub: %v", err)
	}
	return nil
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

// resubscribe renews the app's subscriptions after a (re)connection, without blocking paho, and
// sends the UNSUBSCRIBEs that failed while the connection was down. Filters known only from the
// record are not renewed: they are on their way out.
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
	for _, s := range subs.active() {
		// Under the session lock, and only while s is still the registry's entry: a filter removed
		// meanwhile is not added back to the session.
		subs.session.Lock()
		subs.mu.Lock()
		current := subs.subs[s.key()] == s
		subs.mu.Unlock()
		if current {
			if err := p.sendSubscribe(ctx, cm, s); err != nil && ctx.Err() == nil {
				p.log.Errorf("mqttv5 pub/sub: re-subscribing after reconnect: %v", err)
			}
		}
		subs.session.Unlock()
	}
	// Filters removed while the connection was down are still in the session: remove them now.
	for _, f := range subs.rec.list() {
		subs.session.Lock()
		subs.mu.Lock()
		_, gone := subs.removed[f]
		_, back := subs.subs[f]
		subs.mu.Unlock()
		if gone && !back {
			if err := p.sendUnsubscribe(ctx, cm, subs, f); err != nil && ctx.Err() == nil {
				p.log.Warnf("mqttv5 pub/sub: after reconnect: %v", err)
			}
		}
		subs.session.Unlock()
	}
}
