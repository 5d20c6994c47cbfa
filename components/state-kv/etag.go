package statekv

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dapr/components-contrib/state"

	"github.com/mqdapr/mqdapr/internal/hlc"
)

// ETag writes: a lease lock on `<key><lockSuffix>` serialises the writers of one key, and the
// lock's version, presented as the key's fencing token, makes the store refuse a write from a
// writer whose lease has since passed to someone else who already wrote. DESIGN.md gives the
// algorithm and its assumptions.

// lease is a held lock.
type lease struct {
	key       string    // the lock key
	owner     []byte    // the lock's value, unique to this acquisition
	version   string    // the lock's version: the fencing token
	safeUntil time.Time // local time after which the final write must not be sent
}

// parseETag checks that an ETag is a version the store could have issued.
func parseETag(key, etag string) (hlc.HLC, error) {
	v, err := hlc.Parse(etag)
	if err != nil {
		return hlc.HLC{}, state.NewETagError(state.ETagInvalid, fmt.Errorf("key %q: ETag %q is not a version of this store ({wallClockMs}:{counter}:{nodeId}): %w", key, etag, err))
	}
	return v, nil
}

func mismatch(key, why string) error {
	return state.NewETagError(state.ETagMismatch, fmt.Errorf("key %q: %s", key, why))
}

// casSet writes value only if the key's version still equals etag.
func (s *Store) casSet(ctx context.Context, r *rpc, md Metadata, key string, value []byte, ttl time.Duration, etag string) error {
	want, err := parseETag(key, etag)
	if err != nil {
		return err
	}
	l, err := acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.release(r, l)
	if err := checkVersion(ctx, r, key, want); err != nil {
		return err
	}
	if time.Now().After(l.safeUntil) {
		return fmt.Errorf("%w: key %q: lockTTL %s minus lockMargin %s elapsed before the write; nothing was written", ErrLeaseExpired, key, md.LockTTL, md.LockMargin)
	}
	res, err := r.set(ctx, key, value, always, ttl, l.version, true)
	switch {
	case err != nil:
		return err
	case res.fenced != "":
		// Only a writer holding a newer lease raises the token past ours: it wrote after our read.
		return mismatch(key, "a concurrent ETag write overtook this one ("+res.fenced+")")
	case !res.applied:
		return fmt.Errorf("%w: unconditional SET %q was not applied", ErrUnexpectedResponse, key)
	}
	return nil
}

// casDelete deletes the key only if its version still equals etag.
func (s *Store) casDelete(ctx context.Context, r *rpc, md Metadata, key, etag string) error {
	want, err := parseETag(key, etag)
	if err != nil {
		return err
	}
	l, err := acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.release(r, l)
	if err := checkVersion(ctx, r, key, want); err != nil {
		return err
	}
	if time.Now().After(l.safeUntil) {
		return fmt.Errorf("%w: key %q: lockTTL %s minus lockMargin %s elapsed before the delete; nothing was deleted", ErrLeaseExpired, key, md.LockTTL, md.LockMargin)
	}
	res, err := r.del(ctx, key, nil, l.version)
	switch {
	case err != nil:
		return err
	case res.fenced != "":
		return mismatch(key, "a concurrent ETag write overtook this delete ("+res.fenced+")")
	case res.n == 0:
		return mismatch(key, "the key was deleted concurrently")
	}
	return nil
}

// checkVersion reads the key and returns an ETag mismatch error unless its version equals want.
func checkVersion(ctx context.Context, r *rpc, key string, want hlc.HLC) error {
	_, version, found, err := r.get(ctx, key)
	if err != nil {
		return err
	}
	if !found {
		return mismatch(key, "the key does not exist")
	}
	have, err := hlc.Parse(version)
	if err != nil {
		return fmt.Errorf("%w: GET %q: version %q: %w", ErrUnexpectedResponse, key, version, err)
	}
	if hlc.Compare(have, want) != 0 {
		return mismatch(key, "the ETag is not the key's current version")
	}
	return nil
}

// acquire takes the key's lease lock with `SET <key><lockSuffix> <owner> NX PX lockTTL`, retrying
// with jittered backoff while another writer holds it, until requestTimeout or ctx ends.
func acquire(ctx context.Context, r *rpc, md Metadata, key string) (lease, error) {
	id := make([]byte, 16)
	_, _ = crand.Read(id)
	l := lease{key: key + md.LockSuffix, owner: []byte(r.clientID + "/" + hex.EncodeToString(id))}
	wait, cancel := context.WithTimeout(ctx, md.RequestTimeout)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		start := time.Now() // before sending: the store's lease starts later, never earlier
		res, err := r.set(wait, l.key, l.owner, nx, md.LockTTL, "", false)
		if err != nil {
			if ctx.Err() == nil && wait.Err() != nil {
				return lease{}, fmt.Errorf("%w: key %q for %s: %w", ErrLockTimeout, key, md.RequestTimeout, err)
			}
			return lease{}, err
		}
		if res.applied {
			l.version = res.version
			l.safeUntil = start.Add(md.LockTTL - md.LockMargin)
			return l, nil
		}
		if res.fenced != "" {
			return lease{}, fmt.Errorf("%w: lock key %q is fenced (%s); lock keys must only be written by this component", ErrStoreError, l.key, res.fenced)
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff))
		select {
		case <-t.C:
		case <-wait.Done():
			t.Stop()
			if ctx.Err() != nil {
				return lease{}, ctx.Err()
			}
			return lease{}, fmt.Errorf("%w: key %q stayed locked for %s (requestTimeout)", ErrLockTimeout, key, md.RequestTimeout)
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// release deletes the lock if it is still ours (`VDEL lock owner`), on its own short context so that
// a cancelled request still releases it; on failure the lock expires after lockTTL.
func (s *Store) release(r *rpc, l lease) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if _, err := r.del(ctx, l.key, l.owner, ""); err != nil {
		s.log.Warnf("mqttkv state: releasing an ETag lock failed (it expires by itself): %v", err)
	}
}
