package hlc

import "errors"

// ErrMalformed is returned by Parse when a string is not `{wallClockMs}:{counter}:{nodeId}`: not
// exactly three ':'-separated parts, or a number that is empty, has a character other than an ASCII
// digit, or overflows 64 bits. The state store answers it with "malformed timestamp" (spec §1.5).
var ErrMalformed = errors.New("hlc: malformed timestamp")

// ErrClockSkew is returned by Clock.CheckSkew and Clock.Update when a received timestamp is more than
// the clock's maximum skew (one minute by default) ahead of the local wall clock (spec §1.3).
var ErrClockSkew = errors.New("hlc: timestamp too far in the future")
