package statestore

import (
	"bytes"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
)

// Record is one persisted key.
type Record struct {
	Key   []byte
	Value []byte
	// Version is the key's version (`__ts` on responses).
	Version hlc.HLC
	// FencingToken is the token protecting the key when Fenced
	// (docs/state-store-protocol.md#fencing-tokens).
	FencingToken hlc.HLC
	Fenced       bool
	// ExpiresAt is the absolute PX deadline, or the zero Time for no TTL. It is absolute so that a
	// key's remaining lifetime keeps running while the broker is down.
	ExpiresAt time.Time
}

// Store is the persistence seam. The engine calls Save after a SET of a persisted key and Delete when
// a persisted key is deleted, expires or stops being persisted, before it changes its in-memory
// state, so that a failing store leaves both unchanged (the client gets `__stat` 500). Load is called
// once, by Engine.Load, before serving. A Store that is also a BatchStore gets the changes in groups
// through Apply instead, after they were made in memory; a failing Apply then makes the engine undo
// them and answer every request that could have observed them with `__stat` 500 (see BatchStore),
// so the contract to clients is the same: nothing answered as failed is readable.
//
// Save, Delete and Load are called with the engine's lock held, Apply without it, one call at a time;
// an implementation need not be safe for concurrent use by several engines but must not call back
// into the Engine. Records passed to Save or Apply may be retained: the engine does not modify them
// afterwards.
//
// The broker backs this with its data directory (kvservice.LogStore, a BatchStore): an append-only
// log of save and delete records, each group of them durable (one fdatasync) before Apply returns,
// rewritten from the live keys at every open (write to a temporary file, fsync, rename), so that a crash leaves either the
// old or the new record. MemoryStore is the in-process implementation used by tests and by a broker
// without a data directory.
type Store interface {
	// Save inserts or replaces the record for rec.Key.
	Save(ctx context.Context, rec Record) error
	// Delete removes the record for key; deleting an absent key is not an error.
	Delete(ctx context.Context, key []byte) error
	// Load calls fn for every stored record; it stops at and returns fn's first error.
	Load(ctx context.Context, fn func(Record) error) error
}

// MemoryStore is a Store in memory, safe for concurrent use. Its zero value is not usable; call
// NewMemoryStore.
type MemoryStore struct {
	mu      sync.Mutex // guards records
	records map[string]Record
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{records: make(map[string]Record)}
}

// Save stores a copy of rec.
func (m *MemoryStore) Save(ctx context.Context, rec Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec.Key = bytes.Clone(rec.Key)
	rec.Value = bytes.Clone(rec.Value)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[string(rec.Key)] = rec
	return nil
}

// Delete removes key.
func (m *MemoryStore) Delete(ctx context.Context, key []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.records, string(key))
	return nil
}

// Load calls fn for a copy of every record, in key order, outside the store's lock.
func (m *MemoryStore) Load(ctx context.Context, fn func(Record) error) error {
	for _, rec := range m.Records() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// Records returns copies of all records in key order (for tests and diagnostics).
func (m *MemoryStore) Records() []Record {
	m.mu.Lock()
	out := make([]Record, 0, len(m.records))
	for _, rec := range m.records {
		rec.Key = bytes.Clone(rec.Key)
		rec.Value = bytes.Clone(rec.Value)
		out = append(out, rec)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}
