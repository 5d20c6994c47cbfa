package dedup

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
)

// Defaults of the background committer.
const (
	// DefaultMaxPendingDone bounds the done marks waiting for the store; beyond it CommitLater
	// marks inline (back pressure instead of unbounded memory).
	DefaultMaxPendingDone = 4096
	// doneWorkers is how many calls writing done marks run at a time, each with up to doneBatch
	// marks: a durable state write takes milliseconds, so one mark per call at a time would cap
	// the connector at a few hundred rows/s, and a call per mark costs daprd and the component
	// CPU that the deliveries need.
	doneWorkers = 4
	doneBatch   = 64
	// doneAttempts is how often a mark is tried before it is given up (logged by OnDoneError).
	doneAttempts = 5
)

// laterDone is a done mark waiting for the store.
type laterDone struct {
	key      string
	rec      Record
	attempts int
}

// committer writes done marks in the background, after their rows are durable and their
// messages acked: the ack waits for the lake's fsync, not for a state store write. A mark that is
// never written (a crash, a store failure) leaves the record pending with its file: a redelivery
// then takes the claim over and finds the row by scanning, exactly as after a crash between the
// fsync and a synchronous mark, so no row is written twice.
type committer struct {
	d *Deduper

	mu      sync.Mutex // guards queue and running
	queue   []laterDone
	running int           // workers writing marks
	idle    chan struct{} // closed (and replaced) when queue is empty and no worker runs
}

func (m *committer) init(d *Deduper) {
	m.d = d
	m.idle = make(chan struct{})
	close(m.idle)
}

// add queues a mark; false when the queue is full (the caller marks inline).
func (m *committer) add(key string, rec Record) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) >= m.d.opts.MaxPendingDone {
		return false
	}
	if len(m.queue) == 0 && m.running == 0 {
		m.idle = make(chan struct{})
	}
	m.queue = append(m.queue, laterDone{key: key, rec: rec})
	if m.running < doneWorkers {
		m.running++
		go m.work()
	}
	return true
}

// work writes queued marks until the queue is empty, then ends.
func (m *committer) work() {
	for {
		m.mu.Lock()
		if len(m.queue) == 0 {
			m.running--
			if m.running == 0 {
				close(m.idle)
			}
			m.mu.Unlock()
			return
		}
		batch := m.queue[:min(len(m.queue), doneBatch)]
		m.queue = m.queue[len(batch):]
		m.mu.Unlock()

		items := make([]kv.Item, len(batch))
		for i, b := range batch {
			items[i] = kv.Item{Key: b.key, Value: b.rec.encode()}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.d.opts.Store.PutMany(ctx, items, m.d.opts.DoneTTL)
		cancel()
		if err == nil {
			continue
		}
		var retry []laterDone
		for _, b := range batch {
			if b.attempts++; b.attempts >= doneAttempts {
				// The record stays pending: a redelivery reconciles it; none is needed otherwise.
				m.d.opts.OnDoneError(b.key, fmt.Errorf("dedup: marking %s done: %w", b.key, err))
				continue
			}
			retry = append(retry, b)
		}
		time.Sleep(time.Duration(batch[0].attempts) * 100 * time.Millisecond) // back off, then requeue
		m.mu.Lock()
		m.queue = append(m.queue, retry...)
		m.mu.Unlock()
	}
}

// flush waits until every queued mark was written or given up, or ctx ends.
func (m *committer) flush(ctx context.Context) error {
	m.mu.Lock()
	idle := m.idle
	m.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
