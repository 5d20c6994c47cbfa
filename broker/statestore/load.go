package statestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// Load reads the persisted keys from Options.Store into the engine; call it once, before serving.
// Records whose absolute deadline has passed are deleted from the store instead of loaded (nobody can
// be watching them yet, so no notification is produced). Every loaded version is observed by the
// clock, so versions issued afterwards are higher even if the wall clock went back across a restart.
// A loaded record replaces an in-memory key of the same name. With no Store it does nothing.
//
// Errors wrap ErrLoad (store failure or a record with an empty key) or are ErrClosed; keys loaded
// before the failure stay loaded.
func (e *Engine) Load(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.opts.Store == nil {
		return nil
	}
	now := e.now()
	var expired [][]byte
	err := e.opts.Store.Load(ctx, func(rec Record) error {
		if len(rec.Key) == 0 {
			return errors.New("record with an empty key")
		}
		if !rec.ExpiresAt.IsZero() && !rec.ExpiresAt.After(now) {
			expired = append(expired, bytes.Clone(rec.Key))
			return nil
		}
		key := string(rec.Key)
		if old := e.keys[key]; old != nil {
			e.remove(old)
		}
		ent := &entry{
			key:     key,
			value:   bytes.Clone(rec.Value),
			version: rec.Version,
			fence:   rec.FencingToken,
			fenced:  rec.Fenced,
			expires: rec.ExpiresAt,
			persist: true,
			heapIdx: -1,
		}
		if ent.value == nil {
			ent.value = []byte{}
		}
		e.keys[key] = ent
		e.deadlines.set(ent)
		e.clock.Observe(rec.Version)
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLoad, err)
	}
	for _, key := range expired {
		if err := e.opts.Store.Delete(ctx, key); err != nil {
			return fmt.Errorf("deleting a key that expired while stopped: %w: %w", ErrLoad, err)
		}
	}
	return nil
}
