package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults of the background committer.
const (
	// DefaultMaxPendingDone bounds the identities whose rows are durable but whose done set is
	// not written yet; beyond it CommitLater marks the record done inline (back pressure instead
	// of unbounded memory).
	DefaultMaxPendingDone = 4096
	// setSize is how many claims one done set takes at most: its value lists up to setSize keys
	// (about 40 bytes each).
	setSize = 64
	// setWindow is how long a done set takes claims before it closes (sooner when it is full):
	// the done marks of every row acked in the window cost one state store write together, where
	// a mark per record cost one write per row (one MQTT request in state.mqttkv and one broker
	// commit each). The marks are behind the ack, so the window costs no latency.
	setWindow = 50 * time.Millisecond
	// setWait bounds how long a closed set waits for its last claims to end (their rows written
	// or given up) before it is written with the identities done so far; the rest follow in a
	// later write of the same set.
	setWait = time.Second
	// doneAttempts is how often a set is tried before its identities are given up (logged by
	// OnDoneError; their records stay pending and a redelivery reconciles them).
	doneAttempts = 5
)

// doneSet is one batch of claims of this replica. Every claim made while the set is open names the
// set's key in its record; once the claim's row is durable its key is added to the set, and the
// set (the list of those keys) is written to the store after the acks, in one write. A record
// that is pending and whose set lists its key is done.
type doneSet struct {
	key      string        // state store key, setKey(replica, …)
	assigned int           // claims made with the set
	ended    int           // of which ended (committed, duplicate, failed or released)
	keys     []string      // committed: rows durable, in the order they were committed
	written  int           // keys[:written] are in the store (or given up)
	attempts int           // failed writes in a row
	closedAt time.Time     // zero while the set takes claims
	allEnded chan struct{} // closed once the set is closed and every claim ended
}

// setValue is the stored form of a done set.
type setValue struct {
	Keys []string `json:"keys"`
}

func decodeSet(key string, b []byte) (setValue, error) {
	var v setValue
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%w: done set %s: %w", ErrBadRecord, key, err)
	}
	return v, nil
}

// setKey is the key of a done set: replica, a per-process epoch, and a sequence number.
func setKey(replica, epoch string, n uint64) string {
	return "dedupset/" + replica + "/" + epoch + "-" + strconv.FormatUint(n, 10)
}

// newEpoch names this process's done sets apart from those of the replica's earlier runs.
func newEpoch() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics or blocks rather)
	return strconv.FormatInt(time.Now().UnixNano(), 36) + hex.EncodeToString(b[:])
}

// committer groups done marks into done sets and writes them in the background, after their rows
// are durable and their messages acked: the ack waits for the lake's fsync, not for a state store
// write. A set that is never written (a crash, a store failure) leaves its records pending with
// their files: a redelivery then takes the claim over and finds the row by scanning, exactly as
// after a crash between the fsync and a synchronous mark, so no row is written twice.
type committer struct {
	d      *Deduper
	epoch  string
	window time.Duration // setWindow (tests set it before the first claim)

	mu      sync.Mutex // guards every field below
	n       uint64     // sets opened
	open    *doneSet   // the set new claims go to; nil when none is open
	closed  []*doneSet // closed sets not yet fully written, oldest first
	pending int        // committed keys not yet written nor given up, over all sets
	running bool       // the writer runs
	flushes int        // Flush calls waiting: the writer does not wait for windows
	kick    chan struct{}
	idle    chan struct{} // closed (and replaced) when the writer is not running
}

func (m *committer) init(d *Deduper) {
	m.d = d
	m.epoch = newEpoch()
	m.window = setWindow
	m.kick = make(chan struct{}, 1)
	m.idle = make(chan struct{})
	close(m.idle)
}

func (m *committer) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// assign returns the open set (opening one if none is) for a new claim.
func (m *committer) assign() *doneSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.open == nil {
		m.n++
		m.open = &doneSet{key: setKey(m.d.opts.Replica, m.epoch, m.n), allEnded: make(chan struct{})}
	}
	s := m.open
	s.assigned++
	if s.assigned >= setSize {
		m.closeLocked(s)
		m.wake()
	}
	if !m.running {
		m.running = true
		m.idle = make(chan struct{})
		go m.work()
	}
	return s
}

func (m *committer) closeLocked(s *doneSet) {
	if m.open == s {
		m.open = nil
	}
	s.closedAt = time.Now()
	m.closed = append(m.closed, s)
	if s.ended == s.assigned {
		close(s.allEnded)
	}
}

// end ends one claim of s; key, when not empty, is committed (its row is durable). With commit
// set, false means the set takes no more keys (MaxPendingDone reached): the claim still ends and
// the caller marks the record itself.
func (m *committer) end(s *doneSet, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ok := true
	if key != "" {
		if m.pending >= m.d.opts.MaxPendingDone {
			ok = false
		} else {
			s.keys = append(s.keys, key)
			m.pending++
		}
	}
	s.ended++
	if !s.closedAt.IsZero() && s.ended == s.assigned {
		close(s.allEnded)
	}
	return ok
}

// work closes the open set every setWindow and writes the closed ones, until no set is left.
func (m *committer) work() {
	t := time.NewTimer(m.window)
	defer t.Stop()
	progress := false
	for {
		m.mu.Lock()
		if m.open == nil && len(m.closed) == 0 {
			m.running = false
			close(m.idle)
			m.mu.Unlock()
			return
		}
		hurry := m.flushes > 0 && progress
		m.mu.Unlock()
		if !hurry { // a Flush skips the window, unless the last pass found nothing to do
			t.Reset(m.window)
			select {
			case <-t.C:
			case <-m.kick:
				if !t.Stop() {
					<-t.C
				}
			}
		}
		m.mu.Lock()
		if m.open != nil {
			m.closeLocked(m.open)
		}
		sets := slices.Clone(m.closed)
		m.mu.Unlock()
		progress = false
		for _, s := range sets {
			select {
			case <-s.allEnded:
			case <-time.After(time.Until(s.closedAt.Add(setWait))):
			}
			if m.write(s) {
				progress = true
			}
		}
	}
}

// write stores s with every key committed so far (a later write of the same set is a superset),
// and forgets s once all its claims ended and their keys are written. It reports whether it wrote
// or forgot anything.
func (m *committer) write(s *doneSet) bool {
	m.mu.Lock()
	keys := slices.Clone(s.keys)
	from := s.written
	m.mu.Unlock()
	var err error
	if len(keys) > from {
		b, _ := json.Marshal(setValue{Keys: keys}) // strings only: cannot fail
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = m.d.opts.Store.Put(ctx, s.key, b, m.d.opts.DoneTTL)
		cancel()
	}
	var givenUp []string
	m.mu.Lock()
	switch {
	case err == nil:
		m.pending -= len(keys) - from
		s.written, s.attempts = len(keys), 0
	case s.attempts+1 >= doneAttempts:
		// The records stay pending: a redelivery reconciles them; none is needed otherwise.
		givenUp = keys[from:]
		m.pending -= len(keys) - from
		s.written, s.attempts = len(keys), 0
	default:
		s.attempts++
	}
	attempts := s.attempts
	progress := err == nil && len(keys) > from
	if s.ended == s.assigned && s.written == len(s.keys) {
		if i := slices.Index(m.closed, s); i >= 0 {
			m.closed = slices.Delete(m.closed, i, i+1)
			progress = true
		}
	}
	m.mu.Unlock()
	for _, k := range givenUp {
		m.d.opts.OnDoneError(k, fmt.Errorf("dedup: writing done set %s: %w", s.key, err))
	}
	if err != nil && attempts > 0 {
		time.Sleep(time.Duration(attempts) * 100 * time.Millisecond) // back off before the retry
	}
	return progress || len(givenUp) > 0
}

// committedHere reports whether key is in one of this process's sets not yet written: its row is
// durable (a redelivery of it to this replica is a duplicate).
func (m *committer) committedHere(setKey, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.open != nil && m.open.key == setKey {
		return slices.Contains(m.open.keys, key)
	}
	for _, s := range m.closed {
		if s.key == setKey {
			return slices.Contains(s.keys, key)
		}
	}
	return false
}

// flush writes every set now and waits until all were written or given up, or ctx ends.
func (m *committer) flush(ctx context.Context) error {
	m.mu.Lock()
	m.flushes++
	idle := m.idle
	m.mu.Unlock()
	m.wake()
	defer func() {
		m.mu.Lock()
		m.flushes--
		m.mu.Unlock()
	}()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
