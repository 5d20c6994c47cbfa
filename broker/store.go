package broker

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqdapr/mqdapr/internal/latency"
)

// Key spaces of the store. An entry belongs to an owner: a session (ownerSession + client ID) or a
// shared-subscription group (ownerGroup + group + 0 + filter).
const (
	ownerSession byte = 's'
	ownerGroup   byte = 'g'
)

type opKind byte

const (
	opPutSession opKind = iota + 1
	opDelSession        // deletes the session record, its entries and its inbound ids
	opPutEntry
	opDelEntry
	opPutRetained
	opDelRetained
	opPutInbound
	opDelInbound
)

// op is one change to the durable state; ops are applied in submission order.
type op struct {
	kind  opKind
	owner string // owner key (entries), client ID (sessions, inbound) or topic (retained)
	seq   uint64 // entry sequence or inbound packet id
	val   []byte
}

func entryKey(owner string, seq uint64) []byte {
	k := make([]byte, 0, len(owner)+9)
	k = append(k, owner...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// snapshot is the durable state read at start.
type snapshot struct {
	sessions map[string][]byte          // client ID -> session record
	entries  map[string][]storedEntry   // owner key -> entries in seq order
	retained map[string][]byte          // topic -> message
	inbound  map[string]map[uint16]bool // client ID -> QoS 2 packet ids awaiting PUBREL
}

type storedEntry struct {
	seq uint64
	val []byte
}

// backend persists batches of ops; apply is called from the committer goroutine only.
type backend interface {
	load() (*snapshot, error)
	apply(ops []op) error
	close() error
}

// memBackend keeps nothing: the broker's in-memory state is the only copy.
type memBackend struct{}

func (memBackend) load() (*snapshot, error) { return &snapshot{}, nil }
func (memBackend) apply([]op) error         { return nil }
func (memBackend) close() error             { return nil }

type batch struct {
	ops  []op
	done func(error)
}

// lazyDelay bounds how long ops submitted with submitLazy wait for a commit when nothing durable
// follows them; lazyMaxOps bounds how many may wait.
const (
	lazyDelay  = 50 * time.Millisecond
	lazyMaxOps = 4096
)

// committer applies submitted batches in order, many per backend transaction (group commit), and
// then calls each batch's done, in order, from a goroutine of its own while the next transaction
// runs (the callbacks take the broker lock and write to connections: they never delay a commit). A transaction starts as soon as a
// batch from submit is pending; batches from submitLazy only ride along with it (or, with nothing
// else to do, start one after lazyDelay), so that what no one waits for never costs an fsync of
// its own.
type committer struct {
	be       backend
	interval time.Duration // minimum time between two transactions (more batching), 0 for none
	commits  atomic.Int64  // backend transactions applied (one fdatasync each with a data directory)
	ops      atomic.Int64  // ops applied

	latency *latency.Histogram // time each transaction took (apply: write and fsync)

	mu      sync.Mutex // guards pending, lazyOps, urgent, since and closed
	pending []batch
	lazyOps int       // ops of pending lazy batches
	urgent  bool      // a pending batch came from submit
	since   time.Time // when the oldest pending lazy batch came
	closed  bool
	wake    chan struct{}
	applied chan applied // transactions whose callbacks are due, to the callback goroutine
	stopped chan struct{}
}

// applied is one transaction's batches and its result.
type applied struct {
	batches []batch
	err     error
}

func newCommitter(be backend, interval time.Duration) *committer {
	c := &committer{be: be, interval: interval, wake: make(chan struct{}, 1), applied: make(chan applied, 1), stopped: make(chan struct{}), latency: latency.New(CommitBuckets)}
	go c.run()
	go c.callbacks()
	return c
}

// submit queues ops for the next transaction, which starts at once; done (may be nil) runs after
// they are durable. It never blocks on I/O, so it may be called under the broker lock, which keeps
// the store's order equal to the broker's. done never runs on the caller's goroutine (it may take
// the lock the caller holds): after close it gets ErrClosed on a goroutine of its own.
func (c *committer) submit(ops []op, done func(error)) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if done != nil {
			go done(ErrClosed)
		}
		return
	}
	c.pending = append(c.pending, batch{ops, done})
	c.urgent = true
	c.mu.Unlock()
	c.signal()
}

// submitLazy queues ops whose loss in a crash costs only a redelivery (a subscriber's
// acknowledgement, the packet identifier of a QoS 1 message sent): they are applied in order with
// the next transaction that submit starts, or after lazyDelay (lazyMaxOps pending ops start one at
// once). Nothing may wait for them: an acknowledgement to a client never depends on them.
func (c *committer) submitLazy(ops []op) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	first := len(c.pending) == 0
	if c.since.IsZero() {
		c.since = time.Now()
	}
	c.pending = append(c.pending, batch{ops: ops})
	c.lazyOps += len(ops)
	if c.lazyOps >= lazyMaxOps {
		c.urgent = true
	}
	urgent := c.urgent
	c.mu.Unlock()
	if first || urgent {
		c.signal() // the committer may be idle: it arms its timer (or starts at once)
	}
}

func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.applied)
	var all []op
	puts := map[entryID]int{}
	var last time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if c.interval > 0 {
			// Let more writes join the next transaction; bounded by the interval.
			time.Sleep(time.Until(last.Add(c.interval)))
		}
		c.mu.Lock()
		batches, closed := c.pending, c.closed
		if len(batches) == 0 {
			c.mu.Unlock()
			if closed {
				return
			}
			<-c.wake
			continue
		}
		if !c.urgent && !closed {
			if wait := lazyDelay - time.Since(c.since); wait > 0 {
				// Only lazy batches: wait for a batch from submit to ride along with, or lazyDelay.
				c.mu.Unlock()
				timer.Reset(wait)
				select {
				case <-c.wake:
					timer.Stop()
				case <-timer.C:
				}
				continue
			}
		}
		c.pending, c.lazyOps, c.urgent, c.since = nil, 0, false, time.Time{}
		c.mu.Unlock()
		all = all[:0]
		for _, b := range batches {
			all = append(all, b.ops...)
		}
		all = coalesce(all, puts)
		var err error
		if len(all) > 0 {
			t0 := time.Now()
			err = c.be.apply(all)
			c.commits.Add(1)
			c.ops.Add(int64(len(all)))
			last = time.Now()
			c.latency.Observe(last.Sub(t0))
		}
		c.applied <- applied{batches, err}
	}
}

// callbacks runs the done of every applied batch, in order.
func (c *committer) callbacks() {
	defer close(c.stopped)
	for a := range c.applied {
		for _, b := range a.batches {
			if b.done != nil {
				b.done(a.err)
			}
		}
	}
}

// entryID names a stored entry.
type entryID struct {
	owner string
	seq   uint64
}

// coalesce drops from all, in place, every opPutEntry that a later put or delete of the same entry
// in all overrides: the transaction ends in the same state with less work. The common case is a
// QoS 1 message's packet id, written when it is sent, and its deletion when the subscriber
// acknowledges it, both lazy and so in one transaction. puts is scratch space.
func coalesce(all []op, puts map[entryID]int) []op {
	clear(puts)
	dropped := false
	for i := range all {
		switch o := &all[i]; o.kind {
		case opPutEntry, opDelEntry:
			id := entryID{o.owner, o.seq}
			if j, ok := puts[id]; ok {
				all[j].kind, dropped = 0, true
			}
			if o.kind == opPutEntry {
				puts[id] = i
			} else {
				delete(puts, id)
			}
		}
	}
	if !dropped {
		return all
	}
	out := all[:0]
	for _, o := range all {
		if o.kind != 0 {
			out = append(out, o)
		}
	}
	clear(all[len(out):]) // no stale references to values
	return out
}

// close applies what is pending, runs its callbacks and stops; submit after close fails with
// ErrClosed.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
	<-c.stopped
}
