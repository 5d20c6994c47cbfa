package broker

import "time"

func (sub *subscription) key() string {
	if sub.Group != "" {
		return "$share/" + sub.Group + "/" + sub.Filter
	}
	return sub.Filter
}

// addSub adds or replaces a subscription of s [MQTT-3.8.4-3]. Caller holds b.mu.
func (b *Broker) addSub(s *session, sub *subscription) (existed bool) {
	k := sub.key()
	if old := s.subs[k]; old != nil {
		*old = *sub // same filter: options replaced, membership kept
		return true
	}
	s.subs[k] = sub
	fs := b.index.get(sub.Filter, true)
	if sub.Group == "" {
		fs.subs = append(fs.subs, sub)
		return false
	}
	g := b.group(sub.Group, sub.Filter)
	g.members = append(g.members, sub)
	return false
}

// removeSub removes s's subscription k; a group left without members is dropped with its queue.
// Caller holds b.mu.
func (b *Broker) removeSub(s *session, k string, ops *[]op) bool {
	sub := s.subs[k]
	if sub == nil {
		return false
	}
	delete(s.subs, k)
	fs := b.index.get(sub.Filter, false)
	if sub.Group == "" {
		fs.subs = removeItem(fs.subs, sub)
		b.index.drop(sub.Filter)
		return true
	}
	gk := sub.Group + "\x00" + sub.Filter
	g := b.groups[gk]
	b.releaseEntriesOf(s, g, ops)
	g.members = removeItem(g.members, sub)
	b.dropIfIdle(g)
	return true
}

// group returns the group name/filter, creating and indexing it if needed. Caller holds b.mu.
func (b *Broker) group(name, filter string) *group {
	gk := name + "\x00" + filter
	g := b.groups[gk]
	if g == nil {
		g = &group{name: name, filter: filter}
		b.groups[gk] = g
		fs := b.index.get(filter, true)
		fs.groups = append(fs.groups, g)
	}
	return g
}

// dropIfIdle forgets a group with neither members nor kept messages. A group whose members all left
// keeps its messages for the next member. Caller holds b.mu.
func (b *Broker) dropIfIdle(g *group) {
	if len(g.members) > 0 || len(g.queue) > 0 {
		return
	}
	delete(b.groups, g.name+"\x00"+g.filter)
	fs := b.index.get(g.filter, false)
	fs.groups = removeItem(fs.groups, g)
	b.index.drop(g.filter)
}

func removeItem[T comparable](list []T, x T) []T {
	for i, v := range list {
		if v == x {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// endSession discards s: its shared-subscription messages go back to their groups, the rest is
// dropped. Caller holds b.mu and removes s from b.sessions.
func (b *Broker) endSession(s *session, ops *[]op) {
	b.releaseGroupEntries(s, true, ops)
	for _, e := range s.inflight {
		b.account(e, -1)
	}
	for _, e := range s.queued[s.qhead:] {
		b.account(e, -1)
	}
	for k := range s.subs {
		b.removeSub(s, k, ops)
	}
	if s.persistent {
		*ops = append(*ops, op{kind: opDelSession, owner: s.id})
	}
	s.inflight, s.queued, s.qhead = nil, nil, 0
	s.pids = map[uint16]*entry{}
	b.dispatchGroups(time.Now(), ops)
}

// dispatchGroups lets connected members pull from group queues (after entries came back).
func (b *Broker) dispatchGroups(now time.Time, ops *[]op) {
	for _, g := range b.groups {
		if len(g.queue) == 0 {
			continue
		}
		for _, mem := range g.members {
			if mem.sess.conn != nil {
				b.pump(mem.sess, now, ops)
			}
		}
	}
}

// detach ends c's hold on its session when the connection closes. Caller does not hold b.mu.
func (b *Broker) detach(c *conn) {
	now := time.Now()
	var ops []op
	var willNow *Message
	b.mu.Lock()
	s := c.sess
	if s == nil || s.conn != c {
		b.mu.Unlock()
		b.connectionClosed(c, false)
		return // taken over: the new connection owns the session
	}
	willNow = b.offline(s, c, now, &ops)
	if len(ops) > 0 {
		b.store.submit(ops, nil)
	}
	b.mu.Unlock()
	if willNow != nil {
		b.publish(willNow, nil, func(int, error) {})
	}
	b.connectionClosed(c, true)
}

// offline marks s disconnected from c and returns a will to publish now. Caller holds b.mu.
func (b *Broker) offline(s *session, c *conn, now time.Time, ops *[]op) *Message {
	s.conn, s.offlineAt = nil, now
	c.sess = nil
	b.releaseGroupEntries(s, false, ops)
	var willNow *Message
	if s.will != nil && !c.cleanDisc {
		delay := min(s.will.delay, time.Duration(s.expiry)*time.Second) // [MQTT-3.1.3-9]
		if delay <= 0 {
			willNow = s.will.msg
			s.will = nil
		} else {
			s.willAt = now.Add(delay)
		}
	} else {
		s.will = nil
	}
	if s.expiry == 0 {
		b.endSession(s, ops) // [MQTT-3.1.2-23] expiry 0: the session ends with the connection
		delete(b.sessions, s.id)
		if willNow == nil && s.will != nil {
			willNow = s.will.msg
		}
	} else {
		if s.persistent {
			*ops = append(*ops, op{kind: opPutSession, owner: s.id, val: s.record()})
		}
		b.dispatchGroups(now, ops)
	}
	return willNow
}
