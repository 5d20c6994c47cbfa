package broker

import (
	"sort"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// group is a shared-subscription group: "$share/<name>/<filter>". Messages go round robin to connected
// members with send quota; with none available they wait in queue.
type group struct {
	name, filter string
	members      []*subscription
	rr           int
	queue        []*entry
}

func (g *group) key() string { return string(ownerGroup) + g.name + "\x00" + g.filter }

// filterSubs are the subscriptions and groups with one filter.
type filterSubs struct {
	subs   []*subscription
	groups []*group
}

// index finds the subscriptions matching a topic: a trie of filter levels, so a publish visits only
// the branches its topic can match ('+' and '#' children besides the literal level).
type index struct {
	root *node
}

type node struct {
	parent   *node
	level    string
	children map[string]*node
	fs       *filterSubs // subscriptions and groups whose filter ends here
}

func newIndex() *index { return &index{root: &node{children: map[string]*node{}}} }

func (ix *index) get(filter string, create bool) *filterSubs {
	n := ix.root
	for _, l := range strings.Split(filter, "/") {
		c := n.children[l]
		if c == nil {
			if !create {
				return nil
			}
			c = &node{parent: n, level: l, children: map[string]*node{}}
			n.children[l] = c
		}
		n = c
	}
	if n.fs == nil && create {
		n.fs = &filterSubs{}
	}
	return n.fs
}

// drop forgets filter's node when nothing subscribes to it any more, pruning empty branches.
func (ix *index) drop(filter string) {
	n := ix.root
	for _, l := range strings.Split(filter, "/") {
		if n = n.children[l]; n == nil {
			return
		}
	}
	if n.fs != nil && (len(n.fs.subs) > 0 || len(n.fs.groups) > 0) {
		return
	}
	n.fs = nil
	for n.parent != nil && n.fs == nil && len(n.children) == 0 {
		delete(n.parent.children, n.level)
		n = n.parent
	}
}

// match calls fn for every filter matching topic. Topics starting with '$' are not matched by a
// wildcard in the first level [MQTT-4.7.2-1].
func (ix *index) match(topic string, fn func(*filterSubs)) {
	ix.root.match(strings.Split(topic, "/"), 0, strings.HasPrefix(topic, "$"), fn)
}

func (n *node) match(levels []string, i int, dollar bool, fn func(*filterSubs)) {
	wild := !(i == 0 && dollar)
	if wild {
		if c := n.children["#"]; c != nil && c.fs != nil {
			fn(c.fs) // '#' matches this level and below, and the parent level [MQTT-4.7.1-2]
		}
	}
	if i == len(levels) {
		if n.fs != nil {
			fn(n.fs)
		}
		return
	}
	if wild {
		if c := n.children["+"]; c != nil {
			c.match(levels, i+1, dollar, fn)
		}
	}
	if c := n.children[levels[i]]; c != nil {
		c.match(levels, i+1, dollar, fn)
	}
}

// target is one delivery decided by route.
type target struct {
	sess *session
	grp  *group
	sub  *subscription
	qos  byte
	// more are further subscription identifiers and merged says sub is a copy: set by
	// mergeOverlaps (OverlapSingle).
	more   []int
	merged bool
}

// route delivers m to every matching subscription and group, or to none when a queue limit would be
// exceeded (ErrQuotaExceeded). It returns the number of matches and the entries created (not yet
// committed); ops receives the store changes. Caller holds b.mu.
func (b *Broker) route(m *Message, now time.Time, ops *[]op) (int, []*entry, error) {
	var targets []target
	b.index.match(m.Topic, func(fs *filterSubs) {
		for _, sub := range fs.subs {
			if sub.NoLocal && sub.sess.id == m.from {
				continue // [MQTT-3.8.3-3]
			}
			targets = append(targets, target{sess: sub.sess, sub: sub, qos: min(m.QoS, sub.QoS)}) // [MQTT-3.8.4-8]
		}
		for _, g := range fs.groups {
			targets = append(targets, target{grp: g, qos: m.QoS})
		}
	})
	if len(targets) > 1 {
		targets = mergeOverlaps(targets, b.opts.OverlapDelivery == OverlapSingle)
	}
	// Check every limit first: refuse rather than acknowledge and drop.
	if m.QoS > 0 && b.queuedBytes+int64(len(targets))*entrySize(m) > b.opts.MaxQueuedBytes {
		b.stats.refuse(CodeQuotaExceeded)
		return 0, nil, ErrQuotaExceeded
	}
	extra := map[*session]int{}
	for _, t := range targets {
		if t.qos == 0 {
			continue
		}
		if t.sess != nil {
			extra[t.sess]++
			if t.sess.queueLen()+extra[t.sess] > b.opts.MaxSessionQueue {
				b.stats.refuse(CodeQuotaExceeded)
				return 0, nil, ErrQuotaExceeded
			}
		} else if len(t.grp.queue) >= b.opts.MaxGroupQueue {
			b.stats.refuse(CodeQuotaExceeded)
			return 0, nil, ErrQuotaExceeded
		}
	}
	if m.Retain && len(m.Payload) > 0 && len(b.retained) >= b.opts.MaxRetained {
		if _, replaces := b.retained[m.Topic]; !replaces {
			b.stats.refuse(CodeQuotaExceeded)
			return 0, nil, ErrQuotaExceeded
		}
	}
	if m.Retain {
		b.retain(m, ops)
	}
	var ents []*entry
	for _, t := range targets {
		if t.grp != nil {
			mem := b.pickMember(t.grp, m)
			if mem == nil {
				if t.qos == 0 {
					continue // QoS 0 is not kept for absent groups
				}
				e := b.newEntry(m, t.qos, false, 0, t.grp)
				t.grp.queue = append(t.grp.queue, e)
				*ops = append(*ops, op{kind: opPutEntry, owner: t.grp.key(), seq: e.seq, val: e.encode()})
				ents = append(ents, e)
				continue
			}
			t.sess, t.sub = mem.sess, mem
			t.qos = min(m.QoS, mem.QoS)
		}
		retain := m.Retain && t.sub.RAP // [MQTT-3.3.1-12] [MQTT-3.3.1-13]
		if t.qos == 0 {
			if c := t.sess.conn; c != nil {
				if c.sendQoS0Packet(publishPacket(m.toPublish(0, retain, t.sub.SubID, now), t.more)) {
					b.stats.out(0)
				} else {
					b.stats.DroppedQoS0.Add(1)
				}
			}
			continue
		}
		e := b.newEntry(m, t.qos, retain, t.sub.SubID, t.grp)
		e.moreIDs = t.more
		e.sess = t.sess
		t.sess.pushQueued(e)
		switch {
		case t.sess.persistent:
			*ops = append(*ops, op{kind: opPutEntry, owner: t.sess.ownerKey(), seq: e.seq, val: e.encode()})
		case t.grp != nil && !b.memory:
			e.groupKept = true
			*ops = append(*ops, op{kind: opPutEntry, owner: t.grp.key(), seq: e.seq, val: e.encode()})
		default:
			e.committed = true
		}
		ents = append(ents, e)
	}
	return len(targets), ents, nil
}

func (b *Broker) newEntry(m *Message, qos byte, retain bool, subID int, g *group) *entry {
	b.seq++
	e := &entry{seq: b.seq, msg: m, qos: qos, retain: retain, subID: subID, group: g, committed: b.memory}
	b.account(e, 1)
	return e
}

// entrySize approximates the memory an entry holds (its message is shared but counted per entry).
func entrySize(m *Message) int64 {
	return int64(len(m.Topic)+len(m.Payload)+len(m.ContentType)+len(m.ResponseTopic)+len(m.CorrelationData)) + 128
}

// account adds (delta 1) or removes (-1) an entry from the queued counters. Caller holds b.mu.
func (b *Broker) account(e *entry, delta int64) {
	b.stats.Queued.Add(delta)
	b.queuedBytes += delta * entrySize(e.msg)
}

// pickMember chooses the next connected member of g round robin, preferring members with send
// quota: fewer messages in flight and queued than its Receive Maximum [MQTT-3.3.4-7]. A message
// queued until its commit counts towards that bound, so a member with a commit pending keeps its
// turn (it used to lose it, and a burst went whole to one member). Returns nil when no member is
// connected.
func (b *Broker) pickMember(g *group, m *Message) *subscription {
	var fallback *subscription
	for i := 0; i < len(g.members); i++ {
		g.rr = (g.rr + 1) % len(g.members)
		mem := g.members[g.rr]
		c := mem.sess.conn
		if c == nil || mem.sess.queueLen() >= b.opts.MaxSessionQueue {
			continue
		}
		if mem.sess.queueLen() < int(c.recvMax) {
			return mem
		}
		if fallback == nil && m.QoS == 0 {
			fallback = mem
		}
	}
	return fallback
}

// retain stores or clears the retained message for m.Topic [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-7].
func (b *Broker) retain(m *Message, ops *[]op) {
	if len(m.Payload) == 0 {
		if _, ok := b.retained[m.Topic]; ok {
			delete(b.retained, m.Topic)
			*ops = append(*ops, op{kind: opDelRetained, owner: m.Topic})
		}
		return
	}
	b.retained[m.Topic] = m
	if !b.memory {
		*ops = append(*ops, op{kind: opPutRetained, owner: m.Topic, val: m.appendTo(nil)})
	}
}

// pump sends queued entries of s, then entries waiting in its groups, while the client's Receive
// Maximum allows [MQTT-3.3.4-7]. Sends that must wait for a commit are returned in a batch.
func (b *Broker) pump(s *session, now time.Time, ops *[]op) {
	c := s.conn
	if c == nil {
		return
	}
	var pkts []*packets.ControlPacket
	deferSend := false
	// send sends e; stored says that e is already stored under s (from s's queue), not under a group.
	send := func(e *entry, stored bool) {
		e.pid = s.allocPID()
		e.state = stSent
		s.pids[e.pid] = e
		s.inflight = append(s.inflight, e)
		// A QoS 1 message stored under s stays stored as queued: after a crash it is sent again
		// with a new packet identifier, which at least once allows (its receiver keeps no state for
		// it), and delivering one costs no store write but its deletion when acknowledged. A QoS 2
		// packet id must be durable before the client can PUBREC it [MQTT-4.3.3-10]; a message from
		// a group changes owner here.
		if s.persistent && (e.qos == 2 || !stored) {
			*ops = append(*ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
			deferSend = deferSend || (e.qos == 2 && !b.memory)
		}
		pkts = append(pkts, e.publishPacket(now, false))
		b.stats.out(e.qos)
	}
	if s.resending {
		var all bool
		if pkts, all = b.resendInflight(s, now, ops); !all {
			if len(pkts) > 0 {
				c.sendAll(pkts)
			}
			return // nothing new before every earlier in-flight message is resent
		}
	}
	for len(s.inflight) < int(c.recvMax) {
		e := s.peekQueued()
		if e == nil || !e.committed {
			break
		}
		s.popQueued()
		if b.dropUnsendable(s, e, now, ops) {
			continue
		}
		send(e, true)
	}
	if s.peekQueued() == nil {
		for _, sub := range s.subs {
			g := sub.sessGroup(b)
			for g != nil && len(g.queue) > 0 && len(s.inflight) < int(c.recvMax) && g.queue[0].committed {
				e := g.queue[0]
				g.queue = g.queue[1:]
				if s.persistent {
					*ops = append(*ops, op{kind: opDelEntry, owner: g.key(), seq: e.seq})
				} else {
					e.groupKept = !b.memory
				}
				e.qos = min(e.msg.QoS, sub.QoS)
				e.subID, e.moreIDs, e.retain = sub.SubID, nil, e.msg.Retain && sub.RAP
				e.sess = s
				if e.msg.expired(now) || !c.fits(e, now) {
					b.forget(s, e, ops)
					continue
				}
				if e.qos == 0 {
					b.forget(s, e, ops)
					p := e.msg.toPublish(0, false, e.subID, now)
					pkts = append(pkts, p.ToControlPacket())
					continue
				}
				send(e, false)
			}
		}
	}
	if len(pkts) == 0 {
		return
	}
	if deferSend {
		// Submit what is pending now (in order) and send once it, with the new packet ids, is durable.
		b.store.submit(*ops, func(error) { c.sendAll(pkts) })
		*ops = (*ops)[:0:0]
		return
	}
	c.sendAll(pkts)
}

// resendInflight returns the packets that resend, in order, the in-flight entries of s from an earlier
// connection: PUBLISH with DUP set or PUBREL, with their packet identifiers [MQTT-4.4.0-1]
// [MQTT-4.6.0-1], only as many as the client's Receive Maximum allows [MQTT-3.3.4-7] (every entry
// waiting for an acknowledgement counts); the rest follow as acknowledgements come in. A PUBLISH
// larger than the client's Maximum Packet Size is not sent and counts as sent [MQTT-3.1.2-25]: QoS 1
// is done; QoS 2 goes on with PUBREL, which also releases the packet identifier in case the client
// received the PUBLISH on the earlier connection. It reports whether no entry waits any more. Caller
// holds b.mu; s is connected.
func (b *Broker) resendInflight(s *session, now time.Time, ops *[]op) ([]*packets.ControlPacket, bool) {
	c := s.conn
	wire := 0
	for _, e := range s.inflight {
		if !e.resend {
			wire++
		}
	}
	var pkts []*packets.ControlPacket
	var done []*entry
	s.resending = false
	for _, e := range s.inflight {
		if !e.resend {
			continue
		}
		if wire >= int(c.recvMax) {
			s.resending = true
			break
		}
		e.resend = false
		if e.state == stSent && !c.fits(e, now) {
			if e.qos == 1 {
				done = append(done, e)
				continue
			}
			e.state = stPubrelSent
			if s.persistent {
				*ops = append(*ops, op{kind: opPutEntry, owner: s.ownerKey(), seq: e.seq, val: e.encode()})
			}
		}
		wire++
		pkts = append(pkts, e.resendPacket(now))
	}
	for _, e := range done {
		s.removeInflight(e)
		b.forget(s, e, ops)
	}
	return pkts, !s.resending
}

// dropUnsendable discards a queued entry whose message expired [MQTT-3.3.2-5] or that exceeds the
// client's Maximum Packet Size [MQTT-3.1.2-25]; it reports whether e was dropped.
func (b *Broker) dropUnsendable(s *session, e *entry, now time.Time, ops *[]op) bool {
	if !e.msg.expired(now) && s.conn.fits(e, now) {
		return false
	}
	b.forget(s, e, ops)
	return true
}

// forget removes a finished or discarded entry of s from the store and the queued count.
func (b *Broker) forget(s *session, e *entry, ops *[]op) {
	b.account(e, -1)
	switch {
	case s.persistent:
		*ops = append(*ops, op{kind: opDelEntry, owner: s.ownerKey(), seq: e.seq})
	case e.groupKept:
		*ops = append(*ops, op{kind: opDelEntry, owner: e.group.key(), seq: e.seq})
	}
}

// sessGroup returns the group of a shared subscription, nil otherwise.
func (sub *subscription) sessGroup(b *Broker) *group {
	if sub.Group == "" {
		return nil
	}
	return b.groups[sub.Group+"\x00"+sub.Filter]
}

// releaseGroupEntries returns s's entries that came through shared subscriptions to their groups when
// s's connection ends: unsent ones always, in-flight QoS 1 ones too (MQTT v5 §4.8.2 allows sending
// them to another member); in-flight QoS 2 ones stay with s, which must complete them. all=true
// (session ended) returns every one.
func (b *Broker) releaseGroupEntries(s *session, all bool, ops *[]op) {
	b.release(s, func(e *entry) bool { return e.qos == 1 || all }, nil, ops)
}

// releaseEntriesOf returns the entries of s that came through group g and were not sent yet, when s
// leaves g (UNSUBSCRIBE). In-flight ones, QoS 1 and 2, stay with s, which completes them
// [MQTT-3.10.4-3]: sending them to another member would deliver them twice, and s's acknowledgements
// would find no packet identifier. They go back to the group if the connection ends before that.
func (b *Broker) releaseEntriesOf(s *session, g *group, ops *[]op) {
	b.release(s, func(*entry) bool { return false }, g, ops)
}

// release moves s's group entries back to their groups: in-flight ones when inflight(e) says so,
// unsent ones always; only group only (nil: any group).
func (b *Broker) release(s *session, inflight func(*entry) bool, only *group, ops *[]op) {
	var back []*entry
	keep := s.inflight[:0]
	for _, e := range s.inflight {
		if e.group != nil && (only == nil || e.group == only) && inflight(e) && b.groups[e.group.name+"\x00"+e.group.filter] == e.group {
			delete(s.pids, e.pid)
			back = append(back, e)
			continue
		}
		keep = append(keep, e)
	}
	s.inflight = keep
	var rest []*entry
	for _, e := range s.queued[s.qhead:] {
		if e.group != nil && (only == nil || e.group == only) && b.groups[e.group.name+"\x00"+e.group.filter] == e.group {
			back = append(back, e)
			continue
		}
		rest = append(rest, e)
	}
	s.queued, s.qhead = rest, 0
	touched := map[*group]bool{}
	for _, e := range back {
		if s.persistent {
			*ops = append(*ops, op{kind: opDelEntry, owner: s.ownerKey(), seq: e.seq})
		}
		e.state, e.pid, e.resend = stQueued, 0, false
		e.qos = e.msg.QoS
		e.committed = true
		e.sess, e.groupKept = nil, false
		e.group.queue = append(e.group.queue, e)
		touched[e.group] = true
		*ops = append(*ops, op{kind: opPutEntry, owner: e.group.key(), seq: e.seq, val: e.encode()})
	}
	for g := range touched {
		sort.SliceStable(g.queue, func(i, j int) bool { return g.queue[i].seq < g.queue[j].seq })
	}
}
