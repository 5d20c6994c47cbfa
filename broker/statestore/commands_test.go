package statestore

import (
	"testing"

	"github.com/mqdapr/mqdapr/internal/resp3"
)

// TestCommandErrors covers the parsing rules of docs/state-store-protocol.md#commands and the error
// strings of docs/state-store-protocol.md#responses, byte-exact.
func TestCommandErrors(t *testing.T) {
	const (
		syntax   = "-ERR syntax error\r\n"
		unknown  = "-ERR unknown command\r\n"
		wrongNum = "-ERR wrong number of arguments\r\n"
		zeroKey  = "-ERR the key length is zero\r\n"
	)
	tests := []struct {
		name    string
		payload string
		want    string
	}{
		// docs/state-store-protocol.md#example-syntax-error: any malformed array.
		{"empty payload", "", syntax},
		{"not an array", "+OK\r\n", syntax},
		{"empty array", "*0\r\n", syntax},
		{"truncated", "*2\r\n$3\r\nGET\r\n", syntax},
		{"bulk length mismatch", "*2\r\n$3\r\nGET\r\n$5\r\nlock\r\n", syntax},
		{"trailing bytes", "*2\r\n$3\r\nGET\r\n$4\r\nlock\r\nXX", syntax},
		{"integer element", "*2\r\n$3\r\nGET\r\n:1\r\n", syntax},
		{"null bulk element", "*2\r\n$3\r\nGET\r\n$-1\r\n", syntax},
		{"inline command", "GET lock\r\n", syntax},
		// docs/state-store-protocol.md#commands: verbs must be upper-case.
		{"lower-case verb", array("get", "lock"), unknown},
		{"mixed-case verb", array("Set", "k", "v"), unknown},
		{"unknown verb", array("INCR", "k"), unknown},
		{"MGET is not a command", array("MGET", "a", "b"), unknown},
		{"SCAN is not offered yet", array("SCAN", "0"), unknown},
		// Exact element counts.
		{"GET no key", array("GET"), wrongNum},
		{"GET two keys", array("GET", "a", "b"), wrongNum},
		{"DEL no key", array("DEL"), wrongNum},
		{"DEL two keys", array("DEL", "a", "b"), wrongNum},
		{"VDEL no value", array("VDEL", "a"), wrongNum},
		{"VDEL extra", array("VDEL", "a", "b", "c"), wrongNum},
		{"SET no value", array("SET", "a"), wrongNum},
		{"SET too many", array("SET", "a", "b", "NX", "PX", "1", "X"), wrongNum},
		{"KEYNOTIFY no key", array("KEYNOTIFY"), wrongNum},
		{"KEYNOTIFY too many", array("KEYNOTIFY", "a", "STOP", "X"), wrongNum},
		// SET options (docs/state-store-protocol.md#commands).
		{"SET lower-case nx", array("SET", "a", "b", "nx"), syntax},
		{"SET unknown option", array("SET", "a", "b", "XX"), syntax},
		{"SET EX is not supported", array("SET", "a", "b", "EX", "1"), syntax},
		{"SET NX and NEX", array("SET", "a", "b", "NX", "NEX"), syntax},
		{"SET NX twice", array("SET", "a", "b", "NX", "NX"), syntax},
		{"SET PX without ms", array("SET", "a", "b", "PX"), syntax},
		{"SET NEX takes no argument", array("SET", "a", "b", "NEX", "1"), syntax},
		{"SET PX twice", array("SET", "a", "b", "PX", "1", "PX"), syntax},
		{"SET PX zero", array("SET", "a", "b", "PX", "0"), syntax},
		{"SET PX negative", array("SET", "a", "b", "PX", "-1"), syntax},
		{"SET PX plus sign", array("SET", "a", "b", "PX", "+1"), syntax},
		{"SET PX not a number", array("SET", "a", "b", "PX", "ten"), syntax},
		{"SET PX empty", array("SET", "a", "b", "PX", ""), syntax},
		{"SET PX fractional", array("SET", "a", "b", "PX", "1.5"), syntax},
		{"SET PX overflow", array("SET", "a", "b", "PX", "9223372036854775807"), syntax},
		{"KEYNOTIFY unknown option", array("KEYNOTIFY", "a", "GET"), syntax},
		{"KEYNOTIFY lower-case stop", array("KEYNOTIFY", "a", "stop"), syntax},
		// docs/state-store-protocol.md#commands: zero-length keys are rejected.
		{"SET empty key", array("SET", "", "v"), zeroKey},
		{"GET empty key", array("GET", ""), zeroKey},
		{"DEL empty key", array("DEL", ""), zeroKey},
		{"VDEL empty key", array("VDEL", "", "v"), zeroKey},
		{"KEYNOTIFY empty key", array("KEYNOTIFY", ""), zeroKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			res := h.do(tc.payload, h.nowTS())
			// Command errors travel in-band with __stat=200 and no __ts
			// (docs/state-store-protocol.md#mqtt-properties).
			checkResponse(t, res, tc.want, "")
			if h.e.Len() != 0 {
				t.Errorf("a refused command stored a key")
			}
		})
	}
}

func TestSetOptionOrderAndBinary(t *testing.T) {
	h := newHarness(t, nil)
	// docs/state-store-protocol.md#commands: the SDKs send the condition first then PX; the engine
	// also accepts PX first.
	checkPayload(t, h.do(array("SET", "k", "v", "PX", "5000", "NX"), h.nowTS()), "+OK\r\n")
	if d, ok := h.e.NextDeadline(); !ok || d.UnixMilli() != t0+5000 {
		t.Errorf("deadline = %v %v", d, ok)
	}
	// docs/state-store-protocol.md#commands: keys and values are arbitrary binary.
	key, value := "\x00\r\n\xff", "$3\r\n*1\r\n\x00"
	version := h.set(key, value)
	checkResponse(t, h.do(array("GET", key)), "$9\r\n"+value+"\r\n", version)
	// PX with leading zeros is a valid decimal.
	checkPayload(t, h.do(array("SET", "z", "v", "PX", "010"), h.nowTS()), "+OK\r\n")
}

func TestSetOverwriteClearsTTL(t *testing.T) {
	h := newHarness(t, nil)
	h.set("k", "v1", "PX", "1000")
	h.set("k", "v2") // a SET without PX leaves the key without a TTL
	if _, ok := h.e.NextDeadline(); ok {
		t.Fatal("TTL survived a SET without PX")
	}
	h.wall.AddMs(5000)
	checkPayload(t, h.do(array("GET", "k")), "$2\r\nv2\r\n")
}

func TestNXOnExistingKeyDoesNotChangeIt(t *testing.T) {
	h := newHarness(t, nil)
	version := h.set("k", "v1", "PX", "1000")
	h.wall.AddMs(10)
	checkResponse(t, h.do(array("SET", "k", "v2", "NX", "PX", "99999"), h.nowTS()), ":-1\r\n", version)
	checkResponse(t, h.do(array("GET", "k")), "$2\r\nv1\r\n", version)
	if d, _ := h.e.NextDeadline(); d.UnixMilli() != t0+1000 {
		t.Errorf("failed NX changed the deadline to %v", d)
	}
}

func TestDelAndVdelWithoutFencing(t *testing.T) {
	h := newHarness(t, nil)
	version := h.set("k", "v")
	checkResponse(t, h.do(array("DEL", "k")), ":1\r\n", version)
	checkResponse(t, h.do(array("DEL", "k")), ":0\r\n", "")
	if h.e.Len() != 0 {
		t.Errorf("Len = %d after DEL", h.e.Len())
	}
}

func TestErrorTextsEncode(t *testing.T) {
	// Every -ERR text of docs/state-store-protocol.md#error-strings is a valid RESP simple error (no
	// CR/LF), so responseMessage never fails to encode one.
	for _, msg := range []string{
		MsgTimestampSkew, MsgFencingRequired, MsgFencingTokenSkew, MsgFencingTokenLower, MsgQuotaExceeded,
		MsgSyntaxError, MsgNotAuthorized, MsgUnknownCommand, MsgWrongArgs, MsgMissingTimestamp,
		MsgMalformedTimestamp, MsgKeyLengthZero,
	} {
		b, err := resp3.Encode(resp3.Error(msg))
		if err != nil || string(b) != "-ERR "+msg+"\r\n" {
			t.Errorf("Encode(Error(%q)) = %q, %v", msg, b, err)
		}
	}
}
