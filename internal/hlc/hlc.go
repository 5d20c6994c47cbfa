// Package hlc implements the hybrid logical clock of the broker key-value store protocol
// (docs/state-store-protocol.md#versions-hlc): the `{wallClockMs}:{counter}:{nodeId}` string format
// carried in the `__ts` and `__ft` user properties, its ordering, and a Clock whose readings never go
// backwards, merge remote timestamps, and refuse ones too far ahead of the local wall clock.
package hlc

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// HLC is one hybrid logical clock timestamp. The zero value is the lowest timestamp.
type HLC struct {
	// WallMs is the physical part, milliseconds since the Unix epoch.
	WallMs uint64
	// Counter orders events within one millisecond.
	Counter uint64
	// NodeID names the clock that issued the timestamp; it never contains ':'.
	NodeID string
}

// Parse parses `{wallClockMs}:{counter}:{nodeId}` (docs/state-store-protocol.md#versions-hlc). The
// numbers may be zero-padded (the SDKs write 15 and 5 digits) or not (the docs' form); they are
// unsigned decimals of ASCII digits only. The node ID is everything after the second ':' and must
// not contain another ':'; it may be empty. Errors wrap ErrMalformed and say which part is wrong.
func Parse(s string) (HLC, error) {
	wall, rest, ok := strings.Cut(s, ":")
	if !ok {
		return HLC{}, fmt.Errorf("%q has no ':', want {wallClockMs}:{counter}:{nodeId}: %w", s, ErrMalformed)
	}
	counter, node, ok := strings.Cut(rest, ":")
	if !ok {
		return HLC{}, fmt.Errorf("%q has 2 parts, want 3 ({wallClockMs}:{counter}:{nodeId}): %w", s, ErrMalformed)
	}
	if strings.Contains(node, ":") {
		return HLC{}, fmt.Errorf("%q has more than 3 parts; the node ID must not contain ':': %w", s, ErrMalformed)
	}
	w, err := parseUint(wall)
	if err != nil {
		return HLC{}, fmt.Errorf("wall clock %q: %w", wall, err)
	}
	c, err := parseUint(counter)
	if err != nil {
		return HLC{}, fmt.Errorf("counter %q: %w", counter, err)
	}
	return HLC{WallMs: w, Counter: c, NodeID: node}, nil
}

// parseUint accepts one or more ASCII digits (leading zeros allowed) within uint64.
func parseUint(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty number: %w", ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("non-digit %q: %w", s[i], ErrMalformed)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("out of range: %w", ErrMalformed)
	}
	return n, nil
}

// String formats h as the SDKs do: 15-digit zero-padded milliseconds, 5-digit zero-padded counter,
// node ID (docs/state-store-protocol.md#versions-hlc), e.g. `001696374425000:00000:app1-node`.
// Wider numbers are written in full. Parse(h.String()) returns h for every h whose NodeID has no
// ':'.
func (h HLC) String() string {
	b := make([]byte, 0, 22+len(h.NodeID))
	b = appendPadded(b, h.WallMs, 15)
	b = append(b, ':')
	b = appendPadded(b, h.Counter, 5)
	b = append(b, ':')
	b = append(b, h.NodeID...)
	return string(b)
}

func appendPadded(b []byte, n uint64, width int) []byte {
	var tmp [20]byte
	digits := strconv.AppendUint(tmp[:0], n, 10)
	for i := len(digits); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, digits...)
}

// Compare orders a and b by wall clock, then counter, then node ID as a byte string
// (docs/state-store-protocol.md#versions-hlc). It returns -1, 0 or +1.
func Compare(a, b HLC) int {
	if c := cmp.Compare(a.WallMs, b.WallMs); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Counter, b.Counter); c != 0 {
		return c
	}
	return strings.Compare(a.NodeID, b.NodeID)
}

// Compare returns Compare(h, o).
func (h HLC) Compare(o HLC) int { return Compare(h, o) }

// IsZero reports whether h is the zero HLC.
func (h HLC) IsZero() bool { return h == HLC{} }

// Time returns the wall clock part as a time.Time (UTC), saturating at the largest representable
// millisecond.
func (h HLC) Time() time.Time {
	const maxMs = 1<<63 - 1
	ms := h.WallMs
	if ms > maxMs {
		ms = maxMs
	}
	return time.UnixMilli(int64(ms)).UTC()
}
