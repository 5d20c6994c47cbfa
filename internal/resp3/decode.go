package resp3

import (
	"bytes"
	"fmt"
	"math"
)

// minBulkLen is the size of the smallest bulk string, `$0\r\n\r\n`; an array declaring N elements
// needs at least N*minBulkLen more bytes, which bounds the allocation before it is made.
const minBulkLen = 6

// maxDecimalLen bounds a length or integer line: "-9223372036854775808" has 20 bytes.
const maxDecimalLen = 20

// DecodeArray decodes a request or notification: exactly one array of bulk strings that spans all of
// b (docs/state-store-protocol.md#resp3-subset). An empty array (`*0\r\n`) decodes to an empty,
// non-nil slice. Null arrays, null bulk strings, nested arrays and other element types are refused.
// The returned elements alias b.
//
// Errors wrap ErrTruncated, ErrSyntax, ErrLength, ErrUnexpectedType or ErrTrailingData and name the
// byte offset at fault.
func DecodeArray(b []byte) ([][]byte, error) {
	d := decoder{b: b}
	if len(b) == 0 {
		return nil, fmt.Errorf("empty input, want an array: %w", ErrTruncated)
	}
	if b[0] != '*' {
		return nil, fmt.Errorf("offset 0: type prefix %q, want '*' (array): %w", b[0], ErrUnexpectedType)
	}
	elems, err := d.array()
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return elems, nil
}

// DecodeResponse decodes exactly one response value spanning all of b: any form of
// docs/state-store-protocol.md#responses, or an array of bulk strings (a notification). Byte slices
// in the result alias b.
//
// Errors wrap ErrTruncated, ErrSyntax, ErrLength, ErrUnexpectedType or ErrTrailingData and name the
// byte offset at fault.
func DecodeResponse(b []byte) (Value, error) {
	d := decoder{b: b}
	if len(b) == 0 {
		return Value{}, fmt.Errorf("empty input, want a response: %w", ErrTruncated)
	}
	var v Value
	start := d.pos
	prefix := b[0]
	d.pos++
	switch prefix {
	case '+', '-':
		line, err := d.textLine()
		if err != nil {
			return Value{}, err
		}
		v = Value{Kind: KindSimpleString, Str: line}
		if prefix == '-' {
			v.Kind = KindError
		}
	case ':':
		n, err := d.decimal("integer")
		if err != nil {
			return Value{}, err
		}
		v = Int(n)
	case '$':
		d.pos = start
		s, isNull, err := d.bulk(true)
		if err != nil {
			return Value{}, err
		}
		if isNull {
			v = NullBulk()
		} else {
			v = Bulk(s)
		}
	case '_':
		if err := d.crlf(); err != nil {
			return Value{}, err
		}
		v = Null()
	case '*':
		d.pos = start
		elems, err := d.array()
		if err != nil {
			return Value{}, err
		}
		v = Array(elems...)
	default:
		return Value{}, fmt.Errorf("offset 0: unknown type prefix %q: %w", prefix, ErrUnexpectedType)
	}
	if err := d.end(); err != nil {
		return Value{}, err
	}
	return v, nil
}

// decoder walks b from pos; it never reads past len(b).
type decoder struct {
	b   []byte
	pos int
}

func (d *decoder) remaining() int { return len(d.b) - d.pos }

func (d *decoder) end() error {
	if d.pos != len(d.b) {
		return fmt.Errorf("offset %d: %d bytes after the value: %w", d.pos, d.remaining(), ErrTrailingData)
	}
	return nil
}

// array decodes `*N\r\n` and N bulk strings starting at pos, which holds '*'.
func (d *decoder) array() ([][]byte, error) {
	d.pos++ // '*'
	lenOff := d.pos
	n, err := d.decimal("array length")
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("offset %d: array length %d, null or negative arrays are not allowed: %w", lenOff, n, ErrLength)
	}
	if n > int64(d.remaining()/minBulkLen) {
		return nil, fmt.Errorf("offset %d: array declares %d elements but only %d bytes remain: %w", lenOff, n, d.remaining(), ErrLength)
	}
	elems := make([][]byte, 0, n)
	for i := int64(0); i < n; i++ {
		if d.remaining() == 0 {
			return nil, fmt.Errorf("offset %d: array element %d missing: %w", d.pos, i, ErrTruncated)
		}
		if c := d.b[d.pos]; c != '$' {
			return nil, fmt.Errorf("offset %d: array element %d has type prefix %q, want '$' (bulk string): %w", d.pos, i, c, ErrUnexpectedType)
		}
		s, _, err := d.bulk(false)
		if err != nil {
			return nil, fmt.Errorf("array element %d: %w", i, err)
		}
		elems = append(elems, s)
	}
	return elems, nil
}

// bulk decodes `$len\r\n<bytes>\r\n` starting at pos, which holds '$'. With allowNull, `$-1\r\n`
// returns isNull.
func (d *decoder) bulk(allowNull bool) (s []byte, isNull bool, err error) {
	d.pos++ // '$'
	lenOff := d.pos
	n, err := d.decimal("bulk string length")
	if err != nil {
		return nil, false, err
	}
	if n == -1 && allowNull {
		return nil, true, nil
	}
	if n < 0 {
		return nil, false, fmt.Errorf("offset %d: bulk string length %d not allowed here: %w", lenOff, n, ErrLength)
	}
	if n > int64(d.remaining())-2 {
		return nil, false, fmt.Errorf("offset %d: bulk string declares %d bytes but only %d remain: %w", lenOff, n, d.remaining(), ErrLength)
	}
	end := d.pos + int(n)
	s = d.b[d.pos:end:end]
	d.pos = end
	if err := d.crlf(); err != nil {
		return nil, false, fmt.Errorf("after %d-byte bulk string: %w", n, err)
	}
	return s, false, nil
}

// crlf consumes "\r\n" at pos.
func (d *decoder) crlf() error {
	if d.remaining() < 2 {
		return fmt.Errorf("offset %d: want CRLF: %w", d.pos, ErrTruncated)
	}
	if d.b[d.pos] != '\r' || d.b[d.pos+1] != '\n' {
		return fmt.Errorf("offset %d: want CRLF, got %q: %w", d.pos, d.b[d.pos:d.pos+2], ErrSyntax)
	}
	d.pos += 2
	return nil
}

// textLine returns the bytes from pos up to the next "\r\n" and consumes both. A lone CR or LF in
// the text is a syntax error.
func (d *decoder) textLine() ([]byte, error) {
	rest := d.b[d.pos:]
	i := bytes.IndexAny(rest, "\r\n")
	if i < 0 {
		return nil, fmt.Errorf("offset %d: line has no CRLF: %w", d.pos, ErrTruncated)
	}
	line := rest[:i:i]
	d.pos += i
	if err := d.crlf(); err != nil {
		return nil, err
	}
	return line, nil
}

// decimal reads a canonical signed decimal terminated by "\r\n": "0", or an optional '-' then a
// non-zero digit then digits; no '+', no leading zeros, no "-0", within int64. what names the field
// for errors.
func (d *decoder) decimal(what string) (int64, error) {
	start := d.pos
	end := start
	for end < len(d.b) && end-start <= maxDecimalLen && d.b[end] != '\r' {
		end++
	}
	if end == len(d.b) {
		return 0, fmt.Errorf("offset %d: %s has no CRLF: %w", start, what, ErrTruncated)
	}
	if d.b[end] != '\r' {
		return 0, fmt.Errorf("offset %d: %s longer than %d bytes: %w", start, what, maxDecimalLen, ErrSyntax)
	}
	n, err := parseCanonical(d.b[start:end])
	if err != nil {
		return 0, fmt.Errorf("offset %d: %s %q: %w", start, what, d.b[start:end], err)
	}
	d.pos = end
	if err := d.crlf(); err != nil {
		return 0, err
	}
	return n, nil
}

// parseCanonical parses s as described on decimal.
func parseCanonical(s []byte) (int64, error) {
	neg := false
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		neg = true
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return 0, fmt.Errorf("no digits: %w", ErrSyntax)
	}
	if digits[0] == '0' && (len(digits) > 1 || neg) {
		return 0, fmt.Errorf("not canonical (leading zero or -0): %w", ErrSyntax)
	}
	// Accumulate as a negative number so that math.MinInt64 fits.
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("non-digit %q: %w", c, ErrSyntax)
		}
		dgt := int64(c - '0')
		if n < (math.MinInt64+dgt)/10 {
			return 0, fmt.Errorf("out of int64 range: %w", ErrSyntax)
		}
		n = n*10 - dgt
	}
	if neg {
		return n, nil
	}
	if n == math.MinInt64 {
		return 0, fmt.Errorf("out of int64 range: %w", ErrSyntax)
	}
	return -n, nil
}
