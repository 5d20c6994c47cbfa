package statekv

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/dapr/components-contrib/state"
)

// The protocol has no multi-key command (docs/state-store-protocol.md#not-in-the-protocol-yet: MGET
// deliberately absent), so bulk operations fan out single-key requests, at most bulkParallelism at
// once (or opts.Parallelism when it is smaller and above 1; the pluggable SDK always passes 1,
// which would serialise them).

func parallelism(md Metadata, requested int) int {
	if requested > 1 && requested < md.BulkParallelism {
		return requested
	}
	return md.BulkParallelism
}

// fanOut runs fn(i) for i in [0, n) with at most limit running at once and waits for all: limit
// workers (the caller's goroutine one of them) take the next index until none is left. One
// goroutine per index cost a goroutine and its stack growth (paho's publish path is deep) per key.
func fanOut(n, limit int, fn func(i int)) {
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			fn(i)
		}
	}
	var wg sync.WaitGroup
	for range min(n, limit) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

// BulkGet reads every key; a per-key failure is reported in that item's Error and does not fail
// the call. It returns an error only before anything was sent (not initialised).
func (s *Store) BulkGet(ctx context.Context, reqs []state.GetRequest, opts state.BulkGetOpts) ([]state.BulkGetResponse, error) {
	_, md, err := s.state()
	if err != nil {
		return nil, err
	}
	out := make([]state.BulkGetResponse, len(reqs))
	fanOut(len(reqs), parallelism(md, opts.Parallelism), func(i int) {
		out[i].Key = reqs[i].Key
		res, err := s.Get(ctx, &reqs[i])
		if err != nil {
			out[i].Error = err.Error()
			return
		}
		out[i].Data, out[i].ETag, out[i].Metadata = res.Data, res.ETag, res.Metadata
	})
	return out, nil
}

// BulkSet sets every key independently (no atomicity). Failures come back joined, one
// state.BulkStoreError per failed key (carrying its ETag error, if any).
func (s *Store) BulkSet(ctx context.Context, reqs []state.SetRequest, opts state.BulkStoreOpts) error {
	_, md, err := s.state()
	if err != nil {
		return err
	}
	errs := make([]error, len(reqs))
	fanOut(len(reqs), parallelism(md, opts.Parallelism), func(i int) {
		if err := s.Set(ctx, &reqs[i]); err != nil {
			errs[i] = state.NewBulkStoreError(reqs[i].Key, err)
		}
	})
	return errors.Join(errs...)
}

// BulkDelete deletes every key independently, reporting failures like BulkSet.
func (s *Store) BulkDelete(ctx context.Context, reqs []state.DeleteRequest, opts state.BulkStoreOpts) error {
	_, md, err := s.state()
	if err != nil {
		return err
	}
	errs := make([]error, len(reqs))
	fanOut(len(reqs), parallelism(md, opts.Parallelism), func(i int) {
		if err := s.Delete(ctx, &reqs[i]); err != nil {
			errs[i] = state.NewBulkStoreError(reqs[i].Key, err)
		}
	})
	return errors.Join(errs...)
}
