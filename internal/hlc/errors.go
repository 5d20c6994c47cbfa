package hlc

import "errors"

// ErrMalformed is returned by Parse when a string is not `{wallClockMs}:{counter}:{nodeId}`: not
// exactly three ':'-separated parts, or a number that is empty, has a character other than an ASCII
// digit, or overflows 64 bits. The state store answers it with "malformed timestamp"
// (docs/state-store-protocol.md#responses).
var ErrMalformed = errors.New("hlc: malformed timestamp")

// ErrClockSkew is returned by Clock.CheckSkew and Clock.Update when a received timestamp is more than
// the clock's maximum skew (one minute by default) ahead of the local wall clock
// (docs/state-store-protocol.md#versions-hlc).
var ErrClockSkew = errors.New("hlc: timestamp too far in the future")
