package dedup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
)

// Finder looks for a row in a lake file (lake.Lake implements it).
type Finder interface {
	Find(rel string, match func(line []byte) bool) (bool, error)
}

// Options configure a Deduper.
type Options struct {
	Store   kv.Store
	Rows    Finder
	Replica string // this replica's name, unique among replicas and stable across restarts
	// ClaimTTL is how long a pending claim of another replica is respected before it is taken
	// over; an owner writes only within ClaimTTL/2 of its claim. Default 20 s: it must be shorter
	// than the pub/sub's total retry time (pubsub.mqttv5 defaults: 10 attempts ≈ 33 s), else a
	// message whose owner crashed is dead-lettered by the component before it can be taken over.
	ClaimTTL time.Duration
	// DoneTTL is how long a done record is kept: redeliveries later than that write a second
	// row. 0 keeps it for ever. Default 7 days.
	DoneTTL time.Duration
	Now     func() time.Time // default time.Now
	// MaxPendingDone bounds the marks CommitLater keeps waiting for the store (default
	// DefaultMaxPendingDone); beyond it CommitLater marks inline.
	MaxPendingDone int
	// OnDoneError is told about a background done mark given up after its attempts (the record
	// stays pending; a redelivery reconciles it). Default: nothing.
	OnDoneError func(key string, err error)
}

// Deduper claims message identities. Safe for concurrent use.
type Deduper struct {
	opts     Options
	locks    keyLocks
	later    committer
	creates  creator
	attempts atomic.Uint64 // claim attempts of this process, numbering the records
}

// New returns a Deduper; it does no I/O.
func New(opts Options) *Deduper {
	if opts.ClaimTTL <= 0 {
		opts.ClaimTTL = 20 * time.Second
	}
	if opts.DoneTTL < 0 {
		opts.DoneTTL = 0
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxPendingDone <= 0 {
		opts.MaxPendingDone = DefaultMaxPendingDone
	}
	if opts.OnDoneError == nil {
		opts.OnDoneError = func(string, error) {}
	}
	d := &Deduper{opts: opts, locks: keyLocks{held: map[string]chan struct{}{}}}
	d.later.init(d)
	d.creates = creator{store: opts.Store, ttl: opts.DoneTTL}
	return d
}

// Flush waits until the done marks of CommitLater were written (or given up), or ctx ends: call
// it at shutdown, after the last delivery, so that a clean stop leaves no record pending.
func (d *Deduper) Flush(ctx context.Context) error { return d.later.flush(ctx) }

// Claim is the right to write one row. Exactly one of Duplicate or the write path applies.
type Claim struct {
	d     *Deduper
	key   string
	file  string
	start time.Time
	// Duplicate is true when the row already exists (record done, or found in the previous
	// owner's file and the record completed): the caller must not write and must ack.
	Duplicate bool
	// Reconciled is true when Duplicate was established by scanning a file after a pending claim.
	Reconciled bool
	release    func()
	set        *doneSet // the done set of the claim's record; nil for duplicates
	ended      bool     // the claim's place in set is ended (committed or released)
}

const maxAttempts = 5

// Claim acquires key for writing a row to file (lake-relative). match recognises the row of this
// message in a lake file. The caller must call Release (after Commit, or on failure). Errors:
// ErrClaimedElsewhere, ErrContention, ErrBadRecord, kv.ErrStore, ctx errors; all retriable.
func (d *Deduper) Claim(ctx context.Context, key, file string, match func(line []byte) bool) (*Claim, error) {
	release, err := d.locks.lock(ctx, key)
	if err != nil {
		return nil, err
	}
	c, err := d.claim(ctx, key, file, match)
	if err != nil {
		release()
		return nil, err
	}
	c.release = release
	return c, nil
}

func (d *Deduper) claim(ctx context.Context, key, file string, match func(line []byte) bool) (c *Claim, err error) {
	me := d.opts.Replica
	set := d.later.assign()
	defer func() {
		if c == nil || c.Duplicate { // no row will be written under this claim
			d.later.end(set, "")
		} else {
			c.set = set
		}
	}()
	for range maxAttempts {
		start := d.opts.Now()
		mine := Record{State: StatePending, Owner: me, File: file, At: start, Set: set.key, Attempt: d.attempts.Add(1)}
		// The record is created with the done TTL: it may stay pending for good (its set says
		// whether it is done), so it must expire like a done record.
		err := d.creates.create(ctx, key, mine.encode())
		if err == nil {
			return &Claim{d: d, key: key, file: file, start: start}, nil
		}
		if !errors.Is(err, kv.ErrExists) {
			return nil, err
		}
		val, etag, found, err := d.opts.Store.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if !found {
			continue // expired or deleted in between: create again
		}
		rec, err := decodeRecord(key, val)
		if err != nil {
			return nil, err
		}
		if rec.State == StateDone {
			return &Claim{d: d, key: key, Duplicate: true}, nil
		}
		if done, err := d.inSet(ctx, rec, key); err != nil {
			return nil, err
		} else if done {
			return &Claim{d: d, key: key, Duplicate: true}, nil
		}
		if rec.Owner != me && d.opts.Now().Sub(rec.At) < d.opts.ClaimTTL {
			return nil, fmt.Errorf("%w: %s by %s since %s", ErrClaimedElsewhere, key, rec.Owner, rec.At.Format(time.RFC3339Nano))
		}
		// Our own earlier attempt (crash or failure after the claim), or a stale foreign claim:
		// take it over, then look for the row where the previous owner would have written it.
		start = d.opts.Now()
		mine.At, mine.Attempt = start, d.attempts.Add(1)
		if err := d.opts.Store.Replace(ctx, key, mine.encode(), etag, d.opts.DoneTTL); errors.Is(err, kv.ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		found, err = d.opts.Rows.Find(rec.File, match)
		if err != nil {
			return nil, fmt.Errorf("dedup: reconciling %s in %s: %w", key, rec.File, err)
		}
		c := &Claim{d: d, key: key, file: file, start: start}
		if found {
			if err := d.markDone(ctx, key, Record{State: StateDone, Owner: rec.Owner, File: rec.File, At: rec.At}); err != nil {
				return nil, err
			}
			c.Duplicate, c.Reconciled = true, true
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: %s after %d attempts", ErrContention, key, maxAttempts)
}

// inSet reports whether the pending record rec of key is done: its done set lists it (in this
// process's memory, for a set not written yet, or in the store).
func (d *Deduper) inSet(ctx context.Context, rec Record, key string) (bool, error) {
	if rec.Set == "" {
		return false, nil
	}
	if rec.Owner == d.opts.Replica && d.later.committedHere(rec.Set, key) {
		return true, nil
	}
	val, _, found, err := d.opts.Store.Get(ctx, rec.Set)
	if err != nil || !found {
		return false, err
	}
	set, err := decodeSet(rec.Set, val)
	if err != nil {
		return false, err
	}
	return slices.Contains(set.Keys, key), nil
}

// Check returns ErrLeaseExpired when the claim is older than ClaimTTL/2: writing now could race a
// replica that takes the claim over. Call it right before the lake write.
func (c *Claim) Check() error {
	if age := c.d.opts.Now().Sub(c.start); age >= c.d.opts.ClaimTTL/2 {
		return fmt.Errorf("%w: %s claimed %s ago", ErrLeaseExpired, c.key, age)
	}
	return nil
}

// Commit marks the record done, after the row is durable in the claim's file. On error the
// record stays pending: a redelivery finds the row by scanning and completes it.
func (c *Claim) Commit(ctx context.Context) error {
	c.endInSet()
	return c.d.markDone(ctx, c.key, Record{State: StateDone, Owner: c.d.opts.Replica, File: c.file, At: c.start})
}

// CommitLater is Commit in the background: the caller may ack as soon as the row is durable,
// without waiting for the store. The claim's key is added to its done set (named in the record),
// which is written with the keys of the other rows committed in the same window in one store
// write. Until the set is written the record is pending with this replica as owner and the
// claim's file, which is what a crash between the fsync and Commit leaves too: a redelivery
// (here, or on another replica after ClaimTTL) takes it over, finds the row and completes the
// record instead of writing again. When MaxPendingDone keys are waiting, it marks the record
// inline and returns Commit's error. Call it at most once, and not after Commit.
func (c *Claim) CommitLater(ctx context.Context) error {
	if c.set != nil && !c.ended {
		c.ended = true
		if c.d.later.end(c.set, c.key) {
			return nil
		}
	}
	return c.d.markDone(ctx, c.key, Record{State: StateDone, Owner: c.d.opts.Replica, File: c.file, At: c.start})
}

func (c *Claim) endInSet() {
	if c.set != nil && !c.ended {
		c.ended = true
		c.d.later.end(c.set, "")
	}
}

// Release frees the in-process lock on the key and ends the claim's place in its done set (no
// row, when neither Commit nor CommitLater was called). Idempotent.
func (c *Claim) Release() {
	c.endInSet()
	if c.release != nil {
		c.release()
	}
}

func (d *Deduper) markDone(ctx context.Context, key string, rec Record) error {
	if err := d.opts.Store.Put(ctx, key, rec.encode(), d.opts.DoneTTL); err != nil {
		return fmt.Errorf("dedup: marking %s done: %w", key, err)
	}
	return nil
}
