package kv

import (
	"context"
	"sync/atomic"
	"time"
)

// Counted is a Store that counts its calls (each one round trip to daprd and on to the state
// store) and the keys they carry (a key is one request to the broker in state.mqttkv): the state
// store operations per row, which the load on the machine does not change.
type Counted struct {
	Store
	Calls atomic.Int64
	Keys  atomic.Int64
}

func (c *Counted) count(keys int) {
	c.Calls.Add(1)
	c.Keys.Add(int64(keys))
}

// Get implements Store.
func (c *Counted) Get(ctx context.Context, key string) ([]byte, string, bool, error) {
	c.count(1)
	return c.Store.Get(ctx, key)
}

// Create implements Store.
func (c *Counted) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	c.count(1)
	return c.Store.Create(ctx, key, value, ttl)
}

// CreateMany implements Store.
func (c *Counted) CreateMany(ctx context.Context, items []Item, ttl time.Duration) error {
	c.count(len(items))
	return c.Store.CreateMany(ctx, items, ttl)
}

// Replace implements Store.
func (c *Counted) Replace(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error {
	c.count(1)
	return c.Store.Replace(ctx, key, value, etag, ttl)
}

// Put implements Store.
func (c *Counted) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	c.count(1)
	return c.Store.Put(ctx, key, value, ttl)
}

// PutMany implements Store.
func (c *Counted) PutMany(ctx context.Context, items []Item, ttl time.Duration) error {
	c.count(len(items))
	return c.Store.PutMany(ctx, items, ttl)
}
