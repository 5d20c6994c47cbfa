package resp3

import (
	"fmt"
	"strconv"
)

// crlf terminates every RESP line.
const crlf = "\r\n"

// AppendArray appends a request or notification: the array of bulk strings elems, as
// `*N\r\n` followed by `$len\r\n<bytes>\r\n` for each element
// (docs/state-store-protocol.md#resp3-subset). It cannot fail.
func AppendArray(dst []byte, elems ...[]byte) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(elems)), 10)
	dst = append(dst, crlf...)
	for _, e := range elems {
		dst = appendBulk(dst, e)
	}
	return dst
}

// EncodeArray returns AppendArray(nil, elems...).
func EncodeArray(elems ...[]byte) []byte {
	return AppendArray(nil, elems...)
}

// AppendValue appends the encoding of v to dst. It returns ErrInvalidValue (wrapped) for an unknown
// Kind or for a simple string or error text that contains CR or LF, in which case dst is returned
// unchanged.
func AppendValue(dst []byte, v Value) ([]byte, error) {
	switch v.Kind {
	case KindSimpleString, KindError:
		for _, c := range v.Str {
			if c == '\r' || c == '\n' {
				return dst, fmt.Errorf("%s text contains CR or LF: %w", v.Kind, ErrInvalidValue)
			}
		}
		if v.Kind == KindSimpleString {
			dst = append(dst, '+')
		} else {
			dst = append(dst, '-')
		}
		dst = append(dst, v.Str...)
		return append(dst, crlf...), nil
	case KindInteger:
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, v.Int, 10)
		return append(dst, crlf...), nil
	case KindBulkString:
		return appendBulk(dst, v.Str), nil
	case KindNullBulk:
		return append(dst, "$-1\r\n"...), nil
	case KindNull:
		return append(dst, "_\r\n"...), nil
	case KindArray:
		return AppendArray(dst, v.Array...), nil
	default:
		return dst, fmt.Errorf("kind %d: %w", v.Kind, ErrInvalidValue)
	}
}

// Encode returns AppendValue(nil, v).
func Encode(v Value) ([]byte, error) {
	return AppendValue(nil, v)
}

func appendBulk(dst, b []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, crlf...)
	dst = append(dst, b...)
	return append(dst, crlf...)
}
