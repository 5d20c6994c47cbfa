package hlc

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// DefaultMaxSkew is how far ahead of the local wall clock a received timestamp may be
// (docs/state-store-protocol.md#versions-hlc: "more than 1 minute ahead" is rejected; exactly one
// minute is accepted).
const DefaultMaxSkew = time.Minute

// Options configures a Clock.
type Options struct {
	// NodeID is written into every timestamp the clock issues; it must not contain ':'.
	NodeID string
	// Now is the wall clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
	// MaxSkew is the largest accepted lead of a received timestamp over Now; 0 means DefaultMaxSkew.
	MaxSkew time.Duration
}

// Clock is a hybrid logical clock. Its readings (from Now and Update) strictly increase, even when
// the wall clock steps backwards. It is safe for concurrent use.
type Clock struct {
	nodeID  string
	now     func() time.Time
	maxSkew time.Duration

	mu   sync.Mutex // guards last
	last HLC        // the latest reading issued or observed; NodeID is always nodeID
}

// NewClock returns a clock configured by opts. It returns an error wrapping ErrMalformed if NodeID
// contains ':' and an error if MaxSkew is negative.
func NewClock(opts Options) (*Clock, error) {
	for i := 0; i < len(opts.NodeID); i++ {
		if opts.NodeID[i] == ':' {
			return nil, fmt.Errorf("node ID %q contains ':': %w", opts.NodeID, ErrMalformed)
		}
	}
	if opts.MaxSkew < 0 {
		return nil, fmt.Errorf("hlc: MaxSkew %v is negative, want >= 0", opts.MaxSkew)
	}
	c := &Clock{nodeID: opts.NodeID, now: opts.Now, maxSkew: opts.MaxSkew}
	if c.now == nil {
		c.now = time.Now
	}
	if c.maxSkew == 0 {
		c.maxSkew = DefaultMaxSkew
	}
	return c, nil
}

// NodeID returns the node ID the clock writes into its timestamps.
func (c *Clock) NodeID() string { return c.nodeID }

// wallMs reads the wall clock in milliseconds; times before the epoch read as 0.
func (c *Clock) wallMs() uint64 {
	ms := c.now().UnixMilli()
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

// Now returns a new timestamp, strictly greater than every timestamp this clock has returned or
// observed before: the wall clock if it has moved past the last reading, otherwise the last reading
// with its counter incremented.
func (c *Clock) Now() HLC {
	wall := c.wallMs()
	c.mu.Lock()
	defer c.mu.Unlock()
	if wall > c.last.WallMs {
		c.last = HLC{WallMs: wall, NodeID: c.nodeID}
	} else {
		c.last = increment(c.last.WallMs, c.last.Counter, c.nodeID)
	}
	return c.last
}

// CheckSkew returns an error wrapping ErrClockSkew if remote's wall clock is more than MaxSkew ahead
// of the local wall clock (not of the clock's last reading, so accepted leads cannot ratchet).
func (c *Clock) CheckSkew(remote HLC) error {
	wall := c.wallMs()
	limit := wall + uint64(c.maxSkew/time.Millisecond)
	if limit < wall { // overflow: nothing is too far ahead
		return nil
	}
	if remote.WallMs > limit {
		return fmt.Errorf("timestamp %s is %dms ahead of the local clock, more than %v: %w",
			remote, remote.WallMs-wall, c.maxSkew, ErrClockSkew)
	}
	return nil
}

// Update merges a received timestamp by the HLC rules and returns a new reading strictly greater
// than both remote and every earlier reading (docs/state-store-protocol.md#versions-hlc: "the
// returned version is always greater than the request's __ts"). A remote timestamp older than the
// clock is accepted. If remote fails CheckSkew, Update returns that error and the clock is
// unchanged.
func (c *Clock) Update(remote HLC) (HLC, error) {
	if err := c.CheckSkew(remote); err != nil {
		return HLC{}, err
	}
	wall := c.wallMs()
	c.mu.Lock()
	defer c.mu.Unlock()
	w := max(wall, c.last.WallMs, remote.WallMs)
	switch {
	case w == c.last.WallMs && w == remote.WallMs:
		c.last = increment(w, max(c.last.Counter, remote.Counter), c.nodeID)
	case w == c.last.WallMs:
		c.last = increment(w, c.last.Counter, c.nodeID)
	case w == remote.WallMs:
		c.last = increment(w, remote.Counter, c.nodeID)
	default:
		c.last = HLC{WallMs: w, NodeID: c.nodeID}
	}
	return c.last, nil
}

// Observe advances the clock so that its next reading is greater than ts, without the skew check.
// It is for timestamps the clock issued itself in an earlier life (versions reloaded from
// persistence), which must not be re-issued even if the wall clock has since stepped back.
func (c *Clock) Observe(ts HLC) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts.WallMs > c.last.WallMs || (ts.WallMs == c.last.WallMs && ts.Counter > c.last.Counter) {
		c.last = HLC{WallMs: ts.WallMs, Counter: ts.Counter, NodeID: c.nodeID}
	}
}

// increment returns the timestamp after (wall, counter): counter+1, or, if the counter is
// exhausted, the next millisecond with counter 0. At the very last representable value it saturates.
func increment(wall, counter uint64, node string) HLC {
	switch {
	case counter < math.MaxUint64:
		return HLC{WallMs: wall, Counter: counter + 1, NodeID: node}
	case wall < math.MaxUint64:
		return HLC{WallMs: wall + 1, NodeID: node}
	default:
		return HLC{WallMs: wall, Counter: counter, NodeID: node}
	}
}
