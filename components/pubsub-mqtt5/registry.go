package pubsubmqtt5

// The registry of the session's subscriptions: which Dapr stream (or partition of one) a received
// PUBLISH goes to, subscriptions kept from an earlier run's record, and those the app abandoned.

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dapr/components-contrib/pubsub"

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
)

// subscription is one MQTT subscription of the session: a Dapr subscription (one PullMessages
// stream in daprd, or K of them for a partitioned subscription), or a filter known only from the
// record of an earlier run, or (placeholder) a subscription identifier that messages carry but
// whose filter nobody knows.
type subscription struct {
	topic      string // the filter as Dapr gave it, without $share and $partition
	mqttFilter string // what is sent in SUBSCRIBE ($share/<group>/<topic> when shared); "" for a placeholder
	daprFilter string // the Dapr topic without its $partition prefix: names the partitions
	// partitioned: the app subscribed with $partition/<i>of<K>/ names; a message then carries its
	// partition's Dapr topic as topic (the MQTT topic is in the mqtt-topic metadata).
	partitioned bool
	subID       int // MQTT v5 subscription identifier: a hash of mqttFilter, so stable across restarts
	qos         byte

	// parts are the Dapr streams, one per partition (one for a plain subscription, none for a
	// filter known only from the record or a placeholder). A part without a handler has no stream
	// open: its messages are held for up to unsubscribeGrace (see pick), then go to the open parts;
	// while none is open, they are held.
	parts     []part
	active    bool      // the app subscribed to it since Init (renewed on reconnect)
	idleSince time.Time // when it last had no stream open (its last stream closed, or it was created without one)
}

// part is the stream of one partition of a subscription.
type part struct {
	handler   pubsub.Handler  // nil while no stream is open
	stream    context.Context // the open stream's context
	idleSince time.Time       // while no stream is open: since when (its stream closed, or the subscription started without it)
}

// open reports whether at least one of s's streams is open.
func (s *subscription) open() bool {
	for _, p := range s.parts {
		if p.handler != nil {
			return true
		}
	}
	return false
}

// missing returns the Dapr topics of s's partitions that have no stream open.
func (s *subscription) missing() []string {
	var out []string
	for i, p := range s.parts {
		if p.handler == nil {
			out = append(out, partition.Topic(s.daprFilter, i, len(s.parts)))
		}
	}
	return out
}

// destination is the stream one message is handed to.
type destination struct {
	handler pubsub.Handler // nil: hold the message (no stream for it yet)
	stream  context.Context
	filter  string    // the subscription's MQTT filter
	retry   time.Time // when handler is nil: look again then, even if nothing changed (zero: only on a change)
	// topic is the topic the message carries to daprd: the partition's Dapr topic for a
	// partitioned subscription (so daprd, and an SDK routing by topic, find the subscription),
	// "" for the MQTT topic.
	topic string
}

// pick returns the partition for a message of hash: its home partition, hash mod K, when its
// stream is open. A home partition without a stream gets its messages held for grace since it
// had none (daprd opens streams one by one, and reopens a closed one), so that a key keeps to its
// partition; after that they go to one of the open partitions, chosen by hash, so that nothing
// waits for a partition the app does not subscribe to. Order never depends on the choice: the
// dispatcher hands the messages of one ordering key over one at a time. It returns -1 to hold
// the message (until retry when that is not zero).
func (s *subscription) pick(hash uint32, now time.Time, grace time.Duration) (i int, retry time.Time) {
	if len(s.parts) == 0 {
		return -1, time.Time{}
	}
	home := s.parts[hash%uint32(len(s.parts))]
	if home.handler != nil {
		return int(hash % uint32(len(s.parts))), time.Time{}
	}
	if until := home.idleSince.Add(grace); until.After(now) {
		return -1, until
	}
	var open []int
	for i, p := range s.parts {
		if p.handler != nil {
			open = append(open, i)
		}
	}
	if len(open) == 0 {
		return -1, time.Time{}
	}
	return open[hash%uint32(len(open))], time.Time{}
}

// key is the registry key of s.
func (s *subscription) key() string {
	if s.mqttFilter == "" {
		return placeholderKey(s.subID)
	}
	return s.mqttFilter
}

func placeholderKey(id int) string { return "#" + strconv.Itoa(id) } // never a valid filter

// registry holds the subscriptions. Entries outlive their streams: the MQTT subscription stays in
// the broker session, and messages that arrive while no stream is open are held until one opens,
// or until the subscription is found abandoned (see abandoned).
type registry struct {
	// session serialises changes of the broker session (SUBSCRIBE, UNSUBSCRIBE) with the record
	// and the entries they concern. Taken before mu, never from the receive path.
	session  sync.Mutex
	rec      *filterRecord
	clientID string
	grace    time.Duration // unsubscribeGrace: how long a partition's messages wait for its stream

	mu      sync.Mutex // guards everything below
	subs    map[string]*subscription
	removed map[string]*subscription // unsubscribed filters: their held messages are released
	upSince time.Time                // when the number of open streams last went from 0 to 1
	changed chan struct{}            // closed and replaced on every change, to wake held messages

	// subscribing counts the Subscribe calls in progress and subscribes those that ended
	// (subscribing.go: a publish that raced one of them is sent again).
	subscribing int
	subscribes  atomic.Uint64 // read without mu on every publish
	// onPublishWait, when set (tests only), is called when a publish starts waiting for the
	// Subscribe calls in progress.
	onPublishWait func()
}

// newRegistry returns a registry holding, without streams, the filters of rec: the subscriptions
// an earlier run may have left in the broker session.
func newRegistry(rec *filterRecord, clientID string, qos byte, grace time.Duration) *registry {
	r := &registry{rec: rec, clientID: clientID, grace: grace, subs: map[string]*subscription{}, removed: map[string]*subscription{}, changed: make(chan struct{})}
	now := time.Now()
	for _, f := range rec.list() {
		topic := f
		if _, t, shared, err := splitShared(f); err == nil && shared {
			topic = t
		}
		r.subs[f] = &subscription{topic: topic, mqttFilter: f, subID: subscriptionID(f), qos: qos, idleSince: now}
	}
	return r
}

func (r *registry) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *registry) openStreamsLocked() int {
	n := 0
	for _, s := range r.subs {
		if s.open() {
			n++
		}
	}
	return n
}

// abandoned returns the subscriptions without a stream that have had none for grace since the app
// was last seen subscribing: while at least one stream is open, a subscription is abandoned once
// grace has passed since both its stream closed (or it was found without one) and the first
// stream reopened after an interval with none (daprd restarting reopens its streams one by one).
// While no stream is open (daprd away) nothing is abandoned. next is the earliest time another
// may become abandoned (zero: none can until something changes). The condition is re-evaluated
// on every change, not once per closed stream.
func (r *registry) abandoned(now time.Time, grace time.Duration) (due []*subscription, next time.Time, wait <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.openStreamsLocked() == 0 {
		return nil, time.Time{}, r.changed
	}
	for _, s := range r.subs {
		if s.open() {
			continue
		}
		at := s.idleSince
		if r.upSince.After(at) {
			at = r.upSince
		}
		at = at.Add(grace)
		if !at.After(now) {
			due = append(due, s)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next, r.changed
}

// remove moves s (if it is still the entry for its key and still has no stream) to removed:
// messages held for it are released. It reports false when s came back meanwhile.
func (r *registry) remove(s *subscription) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur, ok := r.subs[s.key()]; !ok || cur != s || cur.open() {
		return false
	}
	delete(r.subs, s.key())
	r.removed[s.key()] = s
	r.notifyLocked()
	return true
}

// target names one subscription a message is for: by subscription identifier, or (from a broker
// that sends none) by the filter that matched its topic.
type target struct {
	id     int    // > 0: the subscription with this identifier
	filter string // otherwise: the subscription with this MQTT filter
}

// targets lists the subscriptions m is for. A broker sends one copy of a message carrying the
// identifiers of every matching subscription of the session, or one copy per subscription with
// its own identifier [MQTT-3.3.4-3], [MQTT-3.3.4-4]: either way every identifier is one target,
// and a copy is never delivered to a subscription it does not name. Without identifiers (a broker
// that refused them with 0xA1) every subscription whose filter matches the topic is a target, as
// the registry stands when the message arrives; a subscription added later does not get it. ok
// is empty when nothing matches yet; gone is true when what matched was removed by the app.
func (r *registry) targets(m *inbound) (ts []target, gone bool) {
	if len(m.subIDs) > 0 {
		for i, id := range m.subIDs {
			if !slices.Contains(m.subIDs[:i], id) {
				ts = append(ts, target{id: id})
			}
		}
		return ts, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.subs {
		if s.mqttFilter != "" && topicMatches(s.topic, m.pub.Topic) {
			ts = append(ts, target{filter: s.mqttFilter})
		}
	}
	if len(ts) > 0 {
		return ts, false
	}
	for _, s := range r.removed {
		if s.mqttFilter != "" && topicMatches(s.topic, m.pub.Topic) {
			return nil, true
		}
	}
	return nil, false
}

// lookup finds t's subscription and, for a message of hash, the stream to hand it to (see pick):
// d.handler is nil while no stream of the subscription is open (hold the message), and gone is
// true when the app removed it. wait is closed when that may change.
func (r *registry) lookup(t target, hash uint32) (d destination, gone bool, wait <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	match := func(c *subscription) bool {
		return (t.id > 0 && c.subID == t.id) || (t.id == 0 && c.mqttFilter == t.filter)
	}
	for _, c := range r.subs {
		if match(c) {
			d.filter = c.mqttFilter
			i, retry := c.pick(hash, time.Now(), r.grace)
			if i >= 0 {
				d.handler, d.stream = c.parts[i].handler, c.parts[i].stream
				if c.partitioned {
					d.topic = partition.Topic(c.daprFilter, i, len(c.parts))
				}
			}
			d.retry = retry
			return d, false, r.changed
		}
	}
	for _, c := range r.removed {
		if match(c) {
			return destination{filter: c.mqttFilter}, true, r.changed
		}
	}
	if t.id > 0 {
		// A subscription of the session that neither the app nor the record knows (yet): hold its
		// messages under a placeholder, which abandoned finds like any subscription without a stream.
		ph := &subscription{subID: t.id, idleSince: time.Now()}
		r.subs[ph.key()] = ph
		r.notifyLocked()
		return destination{}, false, r.changed
	}
	return destination{}, false, r.changed
}

// active returns the subscriptions the app made since Init (the ones to renew on reconnect).
func (r *registry) active() []*subscription {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*subscription
	for _, s := range r.subs {
		if s.active {
			out = append(out, s)
		}
	}
	return out
}
