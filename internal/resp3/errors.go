package resp3

import "errors"

// ErrTruncated is returned when the input ends before the value it declares is complete.
var ErrTruncated = errors.New("resp3: input truncated")

// ErrSyntax is returned when a byte is not what the grammar allows at that position: an unknown type
// prefix, a missing "\r\n", a non-canonical decimal, or a CR/LF inside a simple string or error.
var ErrSyntax = errors.New("resp3: syntax error")

// ErrLength is returned when a declared array or bulk-string length is negative where that is not
// allowed, or larger than the remaining input can possibly hold.
var ErrLength = errors.New("resp3: invalid length")

// ErrTrailingData is returned when bytes remain after one complete value.
var ErrTrailingData = errors.New("resp3: trailing data after value")

// ErrUnexpectedType is returned when the input is well formed RESP but not of a type the decoder
// accepts at that position (for example a nested array, or an integer inside a request array).
var ErrUnexpectedType = errors.New("resp3: unexpected type")

// ErrInvalidValue is returned by the encoders when a Value cannot be encoded: an unknown Kind, or a
// simple string or error text containing CR or LF.
var ErrInvalidValue = errors.New("resp3: value cannot be encoded")
