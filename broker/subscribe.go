package broker

import (
	"time"

	"github.com/eclipse/paho.golang/packets"
)

func (c *conn) handleSubscribe(p *packets.Subscribe) error {
	b := c.b
	if len(p.Subscriptions) == 0 {
		return reasonf(CodeProtocolError, "SUBSCRIBE without topic filters") // [MQTT-3.8.3-2]
	}
	if p.PacketID == 0 {
		return reasonf(CodeProtocolError, "packet identifier 0") // [MQTT-2.2.1-3]
	}
	subID := 0
	if p.Properties != nil && p.Properties.SubscriptionIdentifier != nil {
		subID = *p.Properties.SubscriptionIdentifier
		if subID == 0 {
			return reasonf(CodeProtocolError, "subscription identifier 0") // [MQTT-3.8.2-?]
		}
	}
	reasons := make([]byte, len(p.Subscriptions))
	subs := make([]*subscription, len(p.Subscriptions))
	rhs := make([]byte, len(p.Subscriptions))
	for i, o := range p.Subscriptions {
		if o.QoS > 2 || o.RetainHandling > 2 {
			return reasonf(CodeMalformedPacket, "invalid subscription options") // [MQTT-3.8.3-5]
		}
		if !validUTF8(o.Topic) {
			return reasonf(CodeMalformedPacket, "topic filter is not valid UTF-8") // [MQTT-1.5.4-1]
		}
		group, filter, shared, valid := parseShared(o.Topic)
		if shared && valid && o.NoLocal {
			return reasonf(CodeProtocolError, "no local on a shared subscription") // [MQTT-3.8.3-4]
		}
		if !valid || !validTopicFilter(filter) {
			reasons[i] = CodeTopicFilterInvalid
			b.stats.refuse(CodeTopicFilterInvalid)
			continue
		}
		if az := b.opts.Authorizer; az != nil {
			if err := az.AuthorizeSubscribe(c.ctx, c.client(), o.Topic); err != nil {
				reasons[i] = codeOf(err, CodeNotAuthorized)
				b.stats.refuse(reasons[i])
				continue
			}
		}
		reasons[i] = o.QoS // granted QoS [MQTT-3.9.3-1]
		subs[i] = &subscription{Filter: filter, Group: group, QoS: o.QoS, NoLocal: o.NoLocal, RAP: o.RetainAsPublished, SubID: subID}
		rhs[i] = o.RetainHandling
	}
	now := time.Now()
	var ops []op
	var ents []*entry
	var qos0 []*packets.Publish
	b.mu.Lock()
	s := c.sess
	if s == nil {
		b.mu.Unlock()
		return nil
	}
	prev := make([]*subscription, len(subs)) // what each granted filter replaced, for a rollback
	for i, sub := range subs {
		if sub == nil {
			continue
		}
		sub.sess = s
		if old := s.subs[sub.key()]; old != nil {
			cp := *old
			prev[i] = &cp
		}
		existed := b.addSub(s, sub)
		// Retained messages for a new non-shared subscription [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11].
		if sub.Group != "" || rhs[i] == 2 || (rhs[i] == 1 && existed) {
			continue
		}
		for topic, m := range b.retained {
			if !matchTopic(sub.Filter, topic) || m.expired(now) {
				continue
			}
			qos := min(m.QoS, sub.QoS)
			if qos == 0 {
				qos0 = append(qos0, m.toPublish(0, true, sub.SubID, now))
				continue
			}
			if s.queueLen() >= b.opts.MaxSessionQueue {
				b.stats.refuse(CodeQuotaExceeded)
				continue
			}
			e := b.newEntry(m, qos, true, sub.SubID, nil)
			e.sess = s
			s.pushQueued(e)
			if s.persistent {
				ops = append(ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
			} else {
				e.committed = true
			}
			ents = append(ents, e)
		}
	}
	if s.persistent {
		ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
	}
	cp := packets.NewControlPacket(packets.SUBACK)
	cp.Content = &packets.Suback{PacketID: p.PacketID, Reasons: reasons, Properties: &packets.Properties{}}
	finish := func() { // caller holds b.mu
		c.enqueue(cp) // SUBACK before the retained messages [MQTT-3.8.4-1]
		// Retained QoS 0 messages go like any QoS 0 message: not sent when larger than the client's
		// Maximum Packet Size [MQTT-3.1.2-25], dropped beyond MaxQoS0Buffered waiting, so that a
		// filter matching many never overflows the write queue (which would close the connection).
		for _, p := range qos0 {
			if c.sendQoS0(p) {
				b.stats.out(0)
			} else {
				b.stats.DroppedQoS0.Add(1)
			}
		}
		for _, e := range ents {
			e.committed = true
		}
		var ops2 []op
		if c.sess == s {
			b.pump(s, time.Now(), &ops2)
		}
		if len(ops2) > 0 {
			b.store.submitLazy(ops2)
		}
	}
	if len(ops) == 0 {
		finish()
		b.mu.Unlock()
		return nil
	}
	// The SUBACK waits until the subscription is durable.
	b.store.submit(ops, func(err error) {
		b.mu.Lock()
		if err != nil {
			b.log.Error("store commit failed", "err", err)
			b.undoSubscribe(s, subs, prev, ents, reasons)
			qos0 = nil
		}
		finish()
		b.mu.Unlock()
	})
	b.mu.Unlock()
	return nil
}

// undoSubscribe takes back a SUBSCRIBE whose store commit failed: each granted filter is refused
// with 0x80 and returns to what it was (removed, or its previous options), and the retained
// messages queued for it are dropped. Caller holds b.mu.
func (b *Broker) undoSubscribe(s *session, subs, prev []*subscription, ents []*entry, reasons []byte) {
	var ops []op
	for i := len(subs) - 1; i >= 0; i-- { // last first: a filter may occur twice in one SUBSCRIBE
		sub := subs[i]
		if sub == nil {
			continue
		}
		reasons[i] = CodeUnspecifiedError
		b.stats.refuse(CodeUnspecifiedError)
		k := sub.key()
		switch cur := s.subs[k]; {
		case cur == nil:
		case prev[i] != nil:
			*cur = *prev[i]
		default:
			b.removeSub(s, k, &ops)
		}
	}
	drop := map[*entry]bool{}
	for _, e := range ents {
		drop[e] = true
	}
	var rest []*entry
	for _, e := range s.queued[s.qhead:] {
		if drop[e] {
			b.forget(s, e, &ops)
			continue
		}
		rest = append(rest, e)
	}
	s.queued, s.qhead = rest, 0
	b.dispatchGroups(time.Now(), &ops) // messages given back by a shared subscription taken back
	if s.persistent && b.sessions[s.id] == s {
		ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
	}
	if len(ops) > 0 {
		b.store.submit(ops, nil)
	}
}

func (c *conn) handleUnsubscribe(p *packets.Unsubscribe) error {
	b := c.b
	if len(p.Topics) == 0 {
		return reasonf(CodeProtocolError, "UNSUBSCRIBE without topic filters") // [MQTT-3.10.3-2]
	}
	reasons := make([]byte, len(p.Topics))
	var ops []op
	b.mu.Lock()
	s := c.sess
	if s == nil {
		b.mu.Unlock()
		return nil
	}
	for i, f := range p.Topics {
		if b.removeSub(s, f, &ops) {
			reasons[i] = CodeSuccess // [MQTT-3.11.3-1]
		} else {
			reasons[i] = CodeNoSubscriptionExisted
		}
	}
	if s.persistent {
		ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
	}
	b.dispatchGroups(time.Now(), &ops) // messages given back by a leaving member
	cp := packets.NewControlPacket(packets.UNSUBACK)
	cp.Content = &packets.Unsuback{PacketID: p.PacketID, Reasons: reasons, Properties: &packets.Properties{}}
	b.store.submit(ops, func(error) { c.enqueue(cp) })
	b.mu.Unlock()
	return nil
}
