package kv

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// Mem is an in-memory Store for unit tests: the semantics of state.mqttkv (first-write, ETags that
// change on every write) without a broker. Expiry is not enforced; TTLs are recorded.
type Mem struct {
	mu      sync.Mutex // guards entries and version
	entries map[string]memEntry
	version uint64
	// Hook, when set, runs before each operation with its name ("get", "create", "replace",
	// "put") and key; a non-nil error is returned instead (fault injection).
	Hook func(op, key string) error
}

type memEntry struct {
	value []byte
	etag  string
	ttl   time.Duration
}

// NewMem returns an empty Mem.
func NewMem() *Mem { return &Mem{entries: map[string]memEntry{}} }

func (m *Mem) hook(op, key string) error {
	if m.Hook == nil {
		return nil
	}
	return m.Hook(op, key)
}

// Get implements Store.
func (m *Mem) Get(ctx context.Context, key string) ([]byte, string, bool, error) {
	if err := m.hook("get", key); err != nil {
		return nil, "", false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return append([]byte(nil), e.value...), e.etag, ok, nil
}

// Create implements Store.
func (m *Mem) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := m.hook("create", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[key]; ok {
		return ErrExists
	}
	m.setLocked(key, value, ttl)
	return nil
}

// Replace implements Store.
func (m *Mem) Replace(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error {
	if err := m.hook("replace", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; !ok || e.etag != etag {
		return ErrConflict
	}
	m.setLocked(key, value, ttl)
	return nil
}

// Put implements Store.
func (m *Mem) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := m.hook("put", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setLocked(key, value, ttl)
	return nil
}

// CreateMany implements Store; the hook sees op "createmany" with the first key, then "create"
// for each key. Like state.mqttkv it creates the keys it can and fails when any existed.
func (m *Mem) CreateMany(ctx context.Context, items []Item, ttl time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	if err := m.hook("createmany", items[0].Key); err != nil {
		return err
	}
	var errs []error
	for _, it := range items {
		if err := m.Create(ctx, it.Key, it.Value, ttl); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PutMany implements Store; the hook sees op "put" for each key.
func (m *Mem) PutMany(ctx context.Context, items []Item, ttl time.Duration) error {
	for _, it := range items {
		if err := m.Put(ctx, it.Key, it.Value, ttl); err != nil {
			return err
		}
	}
	return nil
}

// TTL returns the expiry recorded with key's last write.
func (m *Mem) TTL(key string) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.entries[key].ttl
}

// Len returns the number of keys.
func (m *Mem) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func (m *Mem) setLocked(key string, value []byte, ttl time.Duration) {
	m.version++
	m.entries[key] = memEntry{value: append([]byte(nil), value...), etag: strconv.FormatUint(m.version, 10), ttl: ttl}
}
