// Package kv is the narrow key-value interface that the connector needs from a Dapr state store
// (state.mqttkv), with an adapter over the Dapr Go SDK client and an in-memory implementation for
// unit tests.
package kv

import (
	"context"
	"errors"
	"time"
)

// ErrExists is returned by Create when the key already exists.
var ErrExists = errors.New("kv: key already exists")

// ErrConflict is returned by Replace when the key's ETag is no longer the given one (another
// writer won, or the key is gone).
var ErrConflict = errors.New("kv: etag mismatch")

// ErrStore wraps every other failure of the store (unreachable, time-out); callers retry.
var ErrStore = errors.New("kv: state store failure")

// Store is what the connector uses. Every method blocks until the store answered or ctx ended.
type Store interface {
	// Get returns the value and ETag of key; found is false (and err nil) when it is absent.
	Get(ctx context.Context, key string) (value []byte, etag string, found bool, err error)
	// Create writes key only if it does not exist (first-write); ErrExists otherwise. ttl > 0
	// sets an expiry, 0 none.
	Create(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Replace writes key only if its ETag is still etag; ErrConflict otherwise. ttl > 0 sets an
	// expiry, 0 none.
	Replace(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error
	// Put writes key unconditionally (last write wins). ttl > 0 sets an expiry, 0 none.
	Put(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// CreateMany is Create of every item in one call. nil: every key was created. On error any
	// subset may have been created (the protocol cannot say which): the caller must find out,
	// for example with Create and Get per key.
	CreateMany(ctx context.Context, items []Item, ttl time.Duration) error
	// PutMany writes every item unconditionally in one call (not atomically: on error any subset
	// may be written). ttl > 0 sets an expiry, 0 none.
	PutMany(ctx context.Context, items []Item, ttl time.Duration) error
}

// Item is one key and value of PutMany.
type Item struct {
	Key   string
	Value []byte
}
