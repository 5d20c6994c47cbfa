package resp3

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func bs(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// requestVectors are byte-exact arrays of bulk strings; those marked with a spec clause are the
// examples of docs/state-store-protocol.md#byte-level-examples (requests and notifications).
var requestVectors = []struct {
	name  string
	wire  string
	elems [][]byte
}{
	{"SET NX PX (63 bytes)", "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n10000\r\n", bs("SET", "lock", "client1", "NX", "PX", "10000")},
	{"renewal SET NEX PX (64 bytes)", "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$3\r\nNEX\r\n$2\r\nPX\r\n$5\r\n10000\r\n", bs("SET", "lock", "client1", "NEX", "PX", "10000")},
	{"GET (23 bytes)", "*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n", bs("GET", "lock")},
	{"DEL", "*2\r\n$3\r\nDEL\r\n$9\r\nprotected\r\n", bs("DEL", "protected")},
	{"VDEL", "*3\r\n$4\r\nVDEL\r\n$4\r\nlock\r\n$7\r\nclient1\r\n", bs("VDEL", "lock", "client1")},
	{"KEYNOTIFY", "*2\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n", bs("KEYNOTIFY", "SOMEKEY")},
	{"KEYNOTIFY STOP", "*3\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n$4\r\nSTOP\r\n", bs("KEYNOTIFY", "SOMEKEY", "STOP")},
	{"notification SET", "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n", bs("NOTIFY", "SET", "VALUE", "abc")},
	{"notification DELETE", "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n", bs("NOTIFY", "DELETE")},
	{"empty value", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", bs("SET", "k", "")},
	{"binary key and value with CRLF inside", "*3\r\n$3\r\nSET\r\n$2\r\n\r\n\r\n$3\r\n\x00\xff$\r\n", bs("SET", "\r\n", "\x00\xff$")},
	{"empty array", "*0\r\n", [][]byte{}},
}

func TestDecodeArrayVectors(t *testing.T) {
	for _, tc := range requestVectors {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeArray([]byte(tc.wire))
			if err != nil {
				t.Fatalf("DecodeArray(%q) error: %v", tc.wire, err)
			}
			if len(got) != len(tc.elems) {
				t.Fatalf("DecodeArray(%q) = %d elements, want %d", tc.wire, len(got), len(tc.elems))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.elems[i]) {
					t.Errorf("element %d = %q, want %q", i, got[i], tc.elems[i])
				}
			}
		})
	}
}

func TestEncodeArrayVectors(t *testing.T) {
	for _, tc := range requestVectors {
		t.Run(tc.name, func(t *testing.T) {
			if got := EncodeArray(tc.elems...); string(got) != tc.wire {
				t.Errorf("EncodeArray = %q, want %q", got, tc.wire)
			}
		})
	}
}

func TestSpecExampleLengths(t *testing.T) {
	// docs/state-store-protocol.md#byte-level-examples states the sizes of three requests.
	tests := []struct {
		name  string
		elems [][]byte
		want  int
	}{
		{"Ex1 SET NX PX", bs("SET", "lock", "client1", "NX", "PX", "10000"), 63},
		{"Ex1 renewal NEX", bs("SET", "lock", "client1", "NEX", "PX", "10000"), 64},
		{"Ex2 GET", bs("GET", "lock"), 23},
	}
	for _, tc := range tests {
		if got := len(EncodeArray(tc.elems...)); got != tc.want {
			t.Errorf("%s: %d bytes, want %d", tc.name, got, tc.want)
		}
	}
	const ex2Hex = "\x2a\x32\x0d\x0a\x24\x33\x0d\x0a\x47\x45\x54\x0d\x0a\x24\x34\x0d\x0a\x6c\x6f\x63\x6b\x0d\x0a"
	if got := string(EncodeArray(bs("GET", "lock")...)); got != ex2Hex {
		t.Errorf("Ex2 GET = %q, want hex bytes %q", got, ex2Hex)
	}
}

// responseVectors cover every response form of docs/state-store-protocol.md#responses and the
// responses of docs/state-store-protocol.md#byte-level-examples.
var responseVectors = []struct {
	name string
	wire string
	want Value
}{
	{"OK", "+OK\r\n", OK()},
	{":-1 not applied", ":-1\r\n", Int(-1)},
	{":1 deleted", ":1\r\n", Int(1)},
	{":0 absent", ":0\r\n", Int(0)},
	{"GET hit", "$7\r\nclient1\r\n", Bulk([]byte("client1"))},
	{"GET miss", "$-1\r\n", NullBulk()},
	{"GET empty value", "$0\r\n\r\n", Bulk([]byte{})},
	{"fencing error", "-ERR a fencing token is required for this request\r\n", Error("a fencing token is required for this request")},
	{"syntax error", "-ERR syntax error\r\n", Error("syntax error")},
	{"RESP3 null", "_\r\n", Null()},
	{"notification", "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n", Array(bs("NOTIFY", "SET", "VALUE", "abc")...)},
	{"large integer", ":-9223372036854775808\r\n", Int(-9223372036854775808)},
	{"max integer", ":9223372036854775807\r\n", Int(9223372036854775807)},
}

func equalValue(a, b Value) bool {
	if a.Kind != b.Kind || a.Int != b.Int || !bytes.Equal(a.Str, b.Str) || len(a.Array) != len(b.Array) {
		return false
	}
	for i := range a.Array {
		if !bytes.Equal(a.Array[i], b.Array[i]) {
			return false
		}
	}
	return true
}

func TestDecodeResponseVectors(t *testing.T) {
	for _, tc := range responseVectors {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeResponse([]byte(tc.wire))
			if err != nil {
				t.Fatalf("DecodeResponse(%q) error: %v", tc.wire, err)
			}
			if !equalValue(got, tc.want) {
				t.Errorf("DecodeResponse(%q) = %+v, want %+v", tc.wire, got, tc.want)
			}
		})
	}
}

func TestEncodeResponseVectors(t *testing.T) {
	for _, tc := range responseVectors {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.want)
			if err != nil {
				t.Fatalf("Encode error: %v", err)
			}
			if string(got) != tc.wire {
				t.Errorf("Encode = %q, want %q", got, tc.wire)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		v    Value
		want string
	}{
		{Error("syntax error"), "syntax error"},
		{Value{Kind: KindError, Str: []byte("WRONGTYPE x")}, "WRONGTYPE x"},
		{Value{Kind: KindError, Str: []byte("ERR")}, "ERR"},
		{OK(), ""},
	}
	for _, tc := range tests {
		if got := tc.v.ErrorMessage(); got != tc.want {
			t.Errorf("ErrorMessage(%q) = %q, want %q", tc.v.Str, got, tc.want)
		}
	}
}

func TestEncodeInvalid(t *testing.T) {
	tests := []struct {
		name string
		v    Value
	}{
		{"zero kind", Value{}},
		{"unknown kind", Value{Kind: 200}},
		{"CR in simple string", Value{Kind: KindSimpleString, Str: []byte("O\rK")}},
		{"LF in error", Error("a\nb")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := AppendValue(dst, tc.v)
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("err = %v, want ErrInvalidValue", err)
			}
			if string(got) != "keep" {
				t.Errorf("dst changed to %q", got)
			}
		})
	}
}

// malformed inputs, with the sentinel each must wrap, for the request and response decoders.
var malformedVectors = []struct {
	name     string
	wire     string
	request  error // nil: not applicable to DecodeArray
	response error // nil: accepted by DecodeResponse (checked separately) or not applicable
}{
	{"empty input", "", ErrTruncated, ErrTruncated},
	{"unknown prefix", "?\r\n", ErrUnexpectedType, ErrUnexpectedType},
	{"request not an array", "+OK\r\n", ErrUnexpectedType, nil},
	{"array length missing CRLF", "*2", ErrTruncated, ErrTruncated},
	{"array length LF only", "*1\n$1\r\na\r\n", ErrSyntax, ErrSyntax},
	{"array length CR without LF", "*1\rx$1\r\na\r\n", ErrSyntax, ErrSyntax},
	{"array length empty", "*\r\n", ErrSyntax, ErrSyntax},
	{"array length plus sign", "*+1\r\n$1\r\na\r\n", ErrSyntax, ErrSyntax},
	{"array length leading zero", "*01\r\n$1\r\na\r\n", ErrSyntax, ErrSyntax},
	{"array length -0", "*-0\r\n", ErrSyntax, ErrSyntax},
	{"array length not a number", "*x\r\n", ErrSyntax, ErrSyntax},
	{"array length space", "* 1\r\n$1\r\na\r\n", ErrSyntax, ErrSyntax},
	{"array length too long", "*111111111111111111111111\r\n", ErrSyntax, ErrSyntax},
	{"array length int64 overflow", "*9223372036854775808\r\n", ErrSyntax, ErrSyntax},
	{"null array", "*-1\r\n", ErrLength, ErrLength},
	{"array declares more than input holds", "*1000000000\r\n$1\r\na\r\n", ErrLength, ErrLength},
	{"array max int64 elements", "*9223372036854775807\r\n", ErrLength, ErrLength},
	{"second element not a bulk string", "*2\r\n$1\r\na\r\nxxxxxxx", ErrUnexpectedType, ErrUnexpectedType},
	{"array element truncated", "*2\r\n$3\r\nGET\r\n$4\r\nlo", ErrLength, ErrLength},
	{"array of integers", "*1\r\n:1\r\n\r\n\r\n", ErrUnexpectedType, ErrUnexpectedType},
	{"nested array", "*1\r\n*0\r\n\r\n\r\n", ErrUnexpectedType, ErrUnexpectedType},
	{"null bulk in array", "*1\r\n$-1\r\n\r\n\r\n", ErrLength, ErrLength},
	{"bulk length larger than input", "*1\r\n$100\r\nabc\r\n", ErrLength, ErrLength},
	{"bulk length huge", "*1\r\n$9223372036854775807\r\n", ErrLength, ErrLength},
	{"bulk missing trailing CRLF", "*1\r\n$3\r\nabcde\r\n", ErrSyntax, ErrSyntax},
	{"bulk negative length", "*1\r\n$-2\r\n\r\n\r\n", ErrLength, ErrLength},
	{"trailing bytes after array", "*1\r\n$1\r\na\r\nX", ErrTrailingData, ErrTrailingData},
	{"two arrays", "*0\r\n*0\r\n", ErrTrailingData, ErrTrailingData},
	{"simple string without CRLF", "+OK", nil, ErrTruncated},
	{"simple string lone LF", "+O\nK\r\n", nil, ErrSyntax},
	{"simple string lone CR", "+O\rK\r\n", nil, ErrSyntax},
	{"error trailing data", "-ERR x\r\n\r\n", nil, ErrTrailingData},
	{"integer leading zero", ":01\r\n", nil, ErrSyntax},
	{"integer -0", ":-0\r\n", nil, ErrSyntax},
	{"integer empty", ":\r\n", nil, ErrSyntax},
	{"integer minus only", ":-\r\n", nil, ErrSyntax},
	{"integer underflow", ":-9223372036854775809\r\n", nil, ErrSyntax},
	{"integer overflow", ":9223372036854775808\r\n", nil, ErrSyntax},
	{"integer truncated", ":1\r", nil, ErrTruncated},
	{"bulk response truncated", "$7\r\nclient1\r", nil, ErrLength},
	{"bulk response negative", "$-2\r\n", nil, ErrLength},
	{"null with payload", "_x\r\n", nil, ErrSyntax},
	{"null truncated", "_\r", nil, ErrTruncated},
	{"RESP3 map not in subset", "%0\r\n", ErrUnexpectedType, ErrUnexpectedType},
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range malformedVectors {
		t.Run(tc.name, func(t *testing.T) {
			if tc.request != nil {
				got, err := DecodeArray([]byte(tc.wire))
				if !errors.Is(err, tc.request) {
					t.Errorf("DecodeArray(%q) = %q, %v; want error wrapping %v", tc.wire, got, err, tc.request)
				}
			}
			if tc.response != nil {
				got, err := DecodeResponse([]byte(tc.wire))
				if !errors.Is(err, tc.response) {
					t.Errorf("DecodeResponse(%q) = %+v, %v; want error wrapping %v", tc.wire, got, err, tc.response)
				}
			}
		})
	}
}

func TestDecodeErrorNamesOffset(t *testing.T) {
	_, err := DecodeArray([]byte("*2\r\n$3\r\nGET\r\n$4\r\nlockXY"))
	if err == nil || !strings.Contains(err.Error(), "element 1") || !strings.Contains(err.Error(), "offset 21") {
		t.Errorf("error %v should name element 1 and offset 21", err)
	}
}

func TestDecodeAliasesInput(t *testing.T) {
	in := []byte("*1\r\n$3\r\nabc\r\n")
	got, err := DecodeArray(in)
	if err != nil {
		t.Fatal(err)
	}
	// Appending to an element must not overwrite the following input bytes (full slice expression).
	_ = append(got[0], 'Z')
	if string(in) != "*1\r\n$3\r\nabc\r\n" {
		t.Errorf("append through element modified input: %q", in)
	}
}

func TestDecodeArrayAllocationBounded(t *testing.T) {
	// A tiny input declaring a huge array must fail before allocating for the declared count
	// (100M elements would be gigabytes). Bytes, not allocation counts: the race detector adds
	// allocations of its own, and what matters is the size.
	in := []byte("*100000000\r\n")
	const runs = 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := DecodeArray(in); err == nil {
			t.Fatal("DecodeArray accepted an array without its elements")
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1<<20 {
		t.Errorf("DecodeArray allocated %d bytes for a refused length", per)
	}
}
