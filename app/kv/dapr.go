package kv

import (
	"context"
	"fmt"
	"strconv"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// StateClient is the part of the Dapr SDK client that Dapr uses.
type StateClient interface {
	GetState(ctx context.Context, storeName, key string, meta map[string]string) (*dapr.StateItem, error)
	SaveStateWithETag(ctx context.Context, storeName, key string, data []byte, etag string, meta map[string]string, so ...dapr.StateOption) error
	SaveBulkState(ctx context.Context, storeName string, items ...*dapr.SetStateItem) error
}

// Dapr is a Store over a Dapr state store reached through daprd.
type Dapr struct {
	client StateClient
	store  string
}

// NewDapr returns a Store over the state store named store.
func NewDapr(client StateClient, store string) *Dapr { return &Dapr{client: client, store: store} }

// Get implements Store.
func (d *Dapr) Get(ctx context.Context, key string) ([]byte, string, bool, error) {
	item, err := d.client.GetState(ctx, d.store, key, nil)
	if err != nil {
		return nil, "", false, fmt.Errorf("%w: get %q: %w", ErrStore, key, err)
	}
	if item == nil || (item.Etag == "" && len(item.Value) == 0) {
		return nil, "", false, nil
	}
	return item.Value, item.Etag, true, nil
}

// Create implements Store with first-write concurrency and no ETag (state.mqttkv: SET NX).
func (d *Dapr) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := d.client.SaveStateWithETag(ctx, d.store, key, value, "", ttlMeta(ttl),
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
	return d.mapErr("create", key, err, ErrExists)
}

// Replace implements Store with first-write concurrency and the ETag.
func (d *Dapr) Replace(ctx context.Context, key string, value []byte, etag string, ttl time.Duration) error {
	err := d.client.SaveStateWithETag(ctx, d.store, key, value, etag, ttlMeta(ttl),
		dapr.WithConcurrency(dapr.StateConcurrencyFirstWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
	return d.mapErr("replace", key, err, ErrConflict)
}

// Put implements Store (last write wins).
func (d *Dapr) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := d.client.SaveStateWithETag(ctx, d.store, key, value, "", ttlMeta(ttl),
		dapr.WithConcurrency(dapr.StateConcurrencyLastWrite), dapr.WithConsistency(dapr.StateConsistencyStrong))
	return d.mapErr("put", key, err, nil)
}

// CreateMany implements Store with one SaveState call of many first-write items (state.mqttkv: a
// SET NX per key, sent together). Any error is ErrStore: daprd and the pluggable protocol carry one
// error for the call, not one per key.
func (d *Dapr) CreateMany(ctx context.Context, items []Item, ttl time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	opts := &dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite, Consistency: dapr.StateConsistencyStrong}
	md := ttlMeta(ttl)
	set := make([]*dapr.SetStateItem, len(items))
	for i, it := range items {
		set[i] = &dapr.SetStateItem{Key: it.Key, Value: it.Value, Metadata: md, Options: opts}
	}
	return d.mapErr("create", fmt.Sprintf("%s and %d more", items[0].Key, len(items)-1), d.client.SaveBulkState(ctx, d.store, set...), nil)
}

// PutMany implements Store with one SaveState call of many items (last write wins): one round
// trip to daprd and one to the component (state.mqttkv writes the keys in parallel) instead of
// one each per key.
func (d *Dapr) PutMany(ctx context.Context, items []Item, ttl time.Duration) error {
	if len(items) == 0 {
		return nil
	}
	opts := &dapr.StateOptions{Concurrency: dapr.StateConcurrencyLastWrite, Consistency: dapr.StateConsistencyStrong}
	md := ttlMeta(ttl)
	set := make([]*dapr.SetStateItem, len(items))
	for i, it := range items {
		set[i] = &dapr.SetStateItem{Key: it.Key, Value: it.Value, Metadata: md, Options: opts}
	}
	return d.mapErr("put", fmt.Sprintf("%s and %d more", items[0].Key, len(items)-1), d.client.SaveBulkState(ctx, d.store, set...), nil)
}

// mapErr turns daprd's ETag mismatch (gRPC Aborted; FailedPrecondition from some versions) into
// conflict, everything else into ErrStore.
func (d *Dapr) mapErr(op, key string, err, conflict error) error {
	if err == nil {
		return nil
	}
	if conflict != nil {
		if c := status.Code(err); c == codes.Aborted || c == codes.FailedPrecondition {
			return fmt.Errorf("%w: %s %q: %w", conflict, op, key, err)
		}
	}
	return fmt.Errorf("%w: %s %q: %w", ErrStore, op, key, err)
}

func ttlMeta(ttl time.Duration) map[string]string {
	if ttl <= 0 {
		return nil
	}
	secs := int64(ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	return map[string]string{"ttlInSeconds": strconv.FormatInt(secs, 10)}
}
