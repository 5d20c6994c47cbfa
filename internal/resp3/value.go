package resp3

// Kind names the RESP3 type of a decoded or to-be-encoded Value.
type Kind uint8

// The kinds the state store protocol uses (docs/state-store-protocol.md#resp3-subset, #responses).
const (
	// KindInvalid is the zero Kind; it cannot be encoded.
	KindInvalid Kind = iota
	// KindSimpleString is `+<text>\r\n`, e.g. `+OK\r\n`.
	KindSimpleString
	// KindError is `-<text>\r\n`, e.g. `-ERR syntax error\r\n`; Value.Str holds the text after '-'.
	KindError
	// KindInteger is `:<n>\r\n`, e.g. `:-1\r\n`.
	KindInteger
	// KindBulkString is `$<len>\r\n<bytes>\r\n`.
	KindBulkString
	// KindNullBulk is `$-1\r\n` (GET miss).
	KindNullBulk
	// KindNull is the RESP3 null `_\r\n`; the store never sends it, clients accept it.
	KindNull
	// KindArray is `*N\r\n` followed by N bulk strings (requests and notifications).
	KindArray
)

// String returns the kind's name for error messages.
func (k Kind) String() string {
	switch k {
	case KindSimpleString:
		return "simple string"
	case KindError:
		return "error"
	case KindInteger:
		return "integer"
	case KindBulkString:
		return "bulk string"
	case KindNullBulk:
		return "null bulk string"
	case KindNull:
		return "null"
	case KindArray:
		return "array"
	default:
		return "invalid"
	}
}

// ErrPrefix is the prefix of every state-store command error text (`-ERR <text>\r\n`,
// docs/state-store-protocol.md#responses).
const ErrPrefix = "ERR "

// Value is one RESP3 value of the protocol subset.
//
// Which fields are meaningful depends on Kind: Str for simple strings, errors (the text after '-')
// and bulk strings; Int for integers; Array for arrays (each element a bulk string).
type Value struct {
	Kind  Kind
	Str   []byte
	Int   int64
	Array [][]byte
}

// OK returns the simple string `+OK\r\n`.
func OK() Value { return Value{Kind: KindSimpleString, Str: []byte("OK")} }

// Error returns the command error `-ERR <msg>\r\n`; msg is the text without the "ERR " prefix.
func Error(msg string) Value { return Value{Kind: KindError, Str: []byte(ErrPrefix + msg)} }

// Int returns the integer `:<n>\r\n`.
func Int(n int64) Value { return Value{Kind: KindInteger, Int: n} }

// Bulk returns the bulk string `$<len(b)>\r\n<b>\r\n`. A nil or empty b encodes as `$0\r\n\r\n`.
func Bulk(b []byte) Value { return Value{Kind: KindBulkString, Str: b} }

// NullBulk returns the null bulk string `$-1\r\n`.
func NullBulk() Value { return Value{Kind: KindNullBulk} }

// Null returns the RESP3 null `_\r\n`.
func Null() Value { return Value{Kind: KindNull} }

// Array returns an array of bulk strings.
func Array(elems ...[]byte) Value { return Value{Kind: KindArray, Array: elems} }

// ErrorMessage returns the text of an error value with the "ERR " prefix stripped, as clients
// report it (docs/state-store-protocol.md#responses). For a non-error value it returns "". An error
// text without the prefix is returned whole.
func (v Value) ErrorMessage() string {
	if v.Kind != KindError {
		return ""
	}
	s := string(v.Str)
	if len(s) >= len(ErrPrefix) && s[:len(ErrPrefix)] == ErrPrefix {
		return s[len(ErrPrefix):]
	}
	return s
}
