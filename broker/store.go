package broker

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
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

// committer applies submitted batches in order, many per backend transaction (group commit), and
// then calls each batch's done, in order, from its own goroutine.
type committer struct {
	be       backend
	interval time.Duration // minimum time between two transactions (more batching), 0 for none
	commits  atomic.Int64  // backend transactions applied (fsyncs with bbolt)
	ops      atomic.Int64  // ops applied

	mu      sync.Mutex // guards pending and closed
	pending []batch
	closed  bool
	wake    chan struct{}
	stopped chan struct{}
}

func newCommitter(be backend, interval time.Duration) *committer {
	c := &committer{be: be, interval: interval, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go c.run()
	return c
}

// submit queues ops; done (may be nil) runs after they are durable. It never blocks on I/O, so it may be
// called under the broker lock, which keeps the store's order equal to the broker's. done never runs on
// the caller's goroutine (it may take the lock the caller holds): after close it gets ErrClosed on a
// goroutine of its own.
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
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.stopped)
	var all []op
	var last time.Time
	for {
		if c.interval > 0 {
			// Let more writes join the next transaction; bounded by the interval.
			time.Sleep(time.Until(last.Add(c.interval)))
		}
		c.mu.Lock()
		batches, closed := c.pending, c.closed
		c.pending = nil
		c.mu.Unlock()
		if len(batches) == 0 {
			if closed {
				return
			}
			<-c.wake
			continue
		}
		all = all[:0]
		for _, b := range batches {
			all = append(all, b.ops...)
		}
		var err error
		if len(all) > 0 {
			err = c.be.apply(all)
			c.commits.Add(1)
			c.ops.Add(int64(len(all)))
			last = time.Now()
		}
		for _, b := range batches {
			if b.done != nil {
				b.done(err)
			}
		}
	}
}

// close applies what is pending and stops; submit after close fails with ErrClosed.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.stopped
}
