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

// Writes under a lease lock: a lock on `<key><lockSuffix>` serialises the ETag writers of one key
// with each other and with the writes without an ETag that need it (deletes, writes to a fenced
// key), and the lock's version, presented as the key's fencing token, makes the store refuse a
// write from a writer whose lease has since passed to someone else who already wrote, and refuse
// lock-free writes once an ETag writer has fenced the key. DESIGN.md gives the algorithm, the
// argument and its assumptions.

// lease is a held lock.
type lease struct {
	key       string    // the lock key
	owner     []byte    // the lock's value, unique to this acquisition
	version   string    // the lock's version: the fencing token
	safeUntil time.Time // local time after which no request carrying the token is sent (request.sendBy)
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

// testHooks are test seams; every field is nil in production. They let a test stop a writer at a
// chosen step (the hook blocks) or observe that a writer is waiting for a lock, without sleeps.
type testHooks struct {
	// etagRead is called by an ETag write after its version check passed, before it fences the key
	// or writes.
	etagRead func(key string)
	// etagFenced is called by an ETag Set once the key is fenced with its lease, before the final SET.
	etagFenced func(key string)
	// lockBusy is called each time a writer finds the key's lock held by another writer.
	lockBusy func(key string)
	// releaseWait is called when a writer waits for this store's release of the lock key before
	// taking that lock again.
	releaseWait func(lockKey string)
}

func callHook(h func(string), key string) {
	if h != nil {
		h(key)
	}
}

// casSet writes value only if the key's version still equals etag (DESIGN.md, "ETag writes"):
// lock, probe whether the key is fenced and GET and compare (those two at once), fence an
// unfenced key with `SET key <value read> NEX` and the lease's token, then SET with the token,
// and release.
// A version that does not match, a key that is absent, changed after the read or overtaken by a
// newer lease is an ETag mismatch; nothing is written then.
func (s *Store) casSet(ctx context.Context, r *rpc, md Metadata, key string, value []byte, ttl time.Duration, etag string) error {
	want, err := parseETag(key, etag)
	if err != nil {
		return err
	}
	l, err := s.acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.releaseLater(r, l)
	// The probe and the GET are both reads sent under the lock, and neither depends on the other's
	// answer, so they go out together (one round trip instead of two; DESIGN.md, "ETag Set").
	var fenced bool
	var probeErr error
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		fenced, probeErr = probeFence(ctx, r, key, l.owner)
	}()
	old, err := checkVersion(ctx, r, key, want)
	<-probed
	if probeErr != nil {
		return probeErr
	}
	if err != nil {
		return err
	}
	callHook(s.hooks.etagRead, key)
	if err := l.check(md, key); err != nil {
		return err
	}
	if !fenced {
		// First ETag write since the key was (re)created by writes without an ETag: fence it without
		// changing its value. NEX fails if a write without an ETag changed the value since the GET.
		res, err := r.set(ctx, key, old, nex, 0, &l, true)
		switch {
		case err != nil:
			return err
		case res.fenced != "":
			return mismatch(key, "a concurrent ETag write overtook this one ("+res.fenced+")")
		case !res.applied:
			return mismatch(key, "a write without an ETag changed the key after it was read")
		}
		callHook(s.hooks.etagFenced, key)
		if err := l.check(md, key); err != nil {
			return err
		}
	}
	res, err := r.set(ctx, key, value, always, ttl, &l, true)
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

// casDelete deletes the key only if its version still equals etag: lock, GET and compare, then
// `VDEL key <value read>` with the lease's token (so a write without an ETag that changed the value
// after the GET makes it fail), and release.
func (s *Store) casDelete(ctx context.Context, r *rpc, md Metadata, key, etag string) error {
	want, err := parseETag(key, etag)
	if err != nil {
		return err
	}
	l, err := s.acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.releaseLater(r, l)
	old, err := checkVersion(ctx, r, key, want)
	if err != nil {
		return err
	}
	callHook(s.hooks.etagRead, key)
	if err := l.check(md, key); err != nil {
		return err
	}
	res, err := r.del(ctx, key, old, &l)
	switch {
	case err != nil:
		return err
	case res.fenced != "":
		return mismatch(key, "a concurrent ETag write overtook this delete ("+res.fenced+")")
	case res.n == 0:
		return mismatch(key, "the key was deleted concurrently")
	case res.n == -1:
		return mismatch(key, "a write without an ETag changed the key after it was read")
	}
	return nil
}

// lockedSet is a write without an ETag on a fenced key: under the key's lease lock, so that it
// cannot land between an ETag writer's read and write, with the lease's version as token.
func (s *Store) lockedSet(ctx context.Context, r *rpc, md Metadata, key string, value []byte, ttl time.Duration) error {
	l, err := s.acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.releaseLater(r, l)
	if err := l.check(md, key); err != nil {
		return err
	}
	res, err := r.set(ctx, key, value, always, ttl, &l, true)
	switch {
	case err != nil:
		return err
	case res.fenced != "":
		return fmt.Errorf("%w: key %q: a writer holding a newer lease wrote first (%s); nothing was written", ErrLeaseExpired, key, res.fenced)
	case !res.applied:
		return fmt.Errorf("%w: unconditional SET %q was not applied", ErrUnexpectedResponse, key)
	}
	return nil
}

// lockedDelete is a delete without an ETag: always under the key's lease lock, with the lease's
// version as token (DESIGN.md explains why a delete has no lock-free fast path).
func (s *Store) lockedDelete(ctx context.Context, r *rpc, md Metadata, key string) error {
	l, err := s.acquire(ctx, r, md, key)
	if err != nil {
		return err
	}
	defer s.releaseLater(r, l)
	if err := l.check(md, key); err != nil {
		return err
	}
	res, err := r.del(ctx, key, nil, &l)
	switch {
	case err != nil:
		return err
	case res.fenced != "":
		return fmt.Errorf("%w: key %q: a writer holding a newer lease wrote first (%s); nothing was deleted", ErrLeaseExpired, key, res.fenced)
	}
	return nil
}

// check returns ErrLeaseExpired once the safe part of the lease (lockTTL minus lockMargin) is over:
// a write must not be sent after that.
func (l lease) check(md Metadata, key string) error {
	if time.Now().After(l.safeUntil) {
		return fmt.Errorf("%w: key %q: lockTTL %s minus lockMargin %s elapsed before the write; nothing was written", ErrLeaseExpired, key, md.LockTTL, md.LockMargin)
	}
	return nil
}

// probeFence reports whether the key carries a fencing token, with `VDEL key <owner>` and no token:
// a fenced key answers "a fencing token is required" and is left as it is; an unfenced one answers
// `:-1` (its value is not our unique owner string) and an absent one `:0` (an ETag mismatch). A
// store that compared the value before the token would report a fenced key as unfenced, which only
// costs the fencing SET of casSet.
func probeFence(ctx context.Context, r *rpc, key string, owner []byte) (bool, error) {
	res, err := r.del(ctx, key, owner, nil)
	switch {
	case err != nil:
		return false, err
	case res.fenced != "":
		return true, nil
	case res.n == 0:
		return false, mismatch(key, "the key does not exist")
	case res.n == -1:
		return false, nil
	}
	return false, fmt.Errorf("%w: VDEL %q with a lock owner as value deleted the key", ErrUnexpectedResponse, key)
}

// checkVersion reads the key and returns its value, or an ETag mismatch error unless its version
// equals want.
func checkVersion(ctx context.Context, r *rpc, key string, want hlc.HLC) ([]byte, error) {
	value, version, found, err := r.get(ctx, key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, mismatch(key, "the key does not exist")
	}
	have, err := hlc.Parse(version)
	if err != nil {
		return nil, fmt.Errorf("%w: GET %q: version %q: %w", ErrUnexpectedResponse, key, version, err)
	}
	if hlc.Compare(have, want) != 0 {
		return nil, mismatch(key, "the ETag is not the key's current version")
	}
	if value == nil {
		value = []byte{} // an empty value: VDEL needs a non-nil one
	}
	return value, nil
}

// acquire is acquireNotify with the store's lockBusy hook, once this store's own release of the
// key's lock, if any, is done.
func (s *Store) acquire(ctx context.Context, r *rpc, md Metadata, key string) (lease, error) {
	if err := s.awaitRelease(ctx, key+md.LockSuffix); err != nil {
		return lease{}, err
	}
	return acquireNotify(ctx, r, md, key, s.hooks.lockBusy)
}

// acquire is acquireNotify without a hook.
func acquire(ctx context.Context, r *rpc, md Metadata, key string) (lease, error) {
	return acquireNotify(ctx, r, md, key, nil)
}

// acquireNotify takes the key's lease lock with `SET <key><lockSuffix> <owner> NX PX lockTTL`,
// retrying with jittered backoff while another writer holds it (calling busy, if not nil, each
// time), until requestTimeout (ErrLockTimeout) or ctx ends.
func acquireNotify(ctx context.Context, r *rpc, md Metadata, key string, busy func(string)) (lease, error) {
	id := make([]byte, 16)
	_, _ = crand.Read(id)
	l := lease{key: key + md.LockSuffix, owner: []byte(r.clientID + "/" + hex.EncodeToString(id))}
	wait, cancel := context.WithTimeout(ctx, md.RequestTimeout)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		start := time.Now() // before sending: the store's lease starts later, never earlier
		res, err := r.set(wait, l.key, l.owner, nx, md.LockTTL, nil, false)
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
		callHook(busy, key)
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

// releaseLater releases l on a goroutine of its own: the caller's answer does not wait for the
// release's round trip. The release is sent at once, as before, so for other writers nothing
// changes; a later lock of the same key by this store waits for it (awaitRelease), and Close waits
// for all of them.
func (s *Store) releaseLater(r *rpc, l lease) {
	done := make(chan struct{})
	s.rmu.Lock()
	if s.releasing == nil {
		s.releasing = map[string]chan struct{}{}
	}
	s.releasing[l.key] = done
	s.rmu.Unlock()
	go func() {
		s.release(r, l)
		s.rmu.Lock()
		if s.releasing[l.key] == done {
			delete(s.releasing, l.key)
		}
		s.rmu.Unlock()
		close(done)
	}()
}

// awaitRelease waits until this store's release of the lock key lockKey, if one is under way, has
// its answer, so that its own next lock of the key does not find it held.
func (s *Store) awaitRelease(ctx context.Context, lockKey string) error {
	s.rmu.Lock()
	done := s.releasing[lockKey]
	s.rmu.Unlock()
	if done == nil {
		return nil
	}
	callHook(s.hooks.releaseWait, lockKey)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release deletes the lock if it is still ours (`VDEL lock owner`), on its own short context so that
// a cancelled request still releases it; on failure the lock expires after lockTTL.
func (s *Store) release(r *rpc, l lease) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if _, err := r.del(ctx, l.key, l.owner, nil); err != nil {
		s.log.Warnf("mqttkv state: releasing a key's lock failed (it expires by itself): %v", err)
	}
}
