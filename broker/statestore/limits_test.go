package statestore

import (
	"fmt"
	"strings"
	"testing"
)

const quota = "-ERR the quota has been exceeded\r\n"

// TestKeyCountQuota covers the key-count quota of docs/state-store-protocol.md#limits.
func TestKeyCountQuota(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxKeys = 2 })
	h.set("a", "1")
	h.set("b", "2")
	checkResponse(t, h.do(array("SET", "c", "3"), h.nowTS()), quota, "")
	// Overwriting an existing key is not a new key.
	h.set("a", "11")
	// NX on an existing key answers :-1, not the quota error.
	checkPayload(t, h.do(array("SET", "b", "x", "NX"), h.nowTS()), ":-1\r\n")
	checkPayload(t, h.do(array("DEL", "a")), ":1\r\n")
	h.set("c", "3")
}

func TestSizeQuotas(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxKeyBytes = 4; o.MaxValueBytes = 8 })
	h.set("abcd", "12345678")
	checkResponse(t, h.do(array("SET", "abcde", "v"), h.nowTS()), quota, "")
	checkResponse(t, h.do(array("SET", "k", "123456789"), h.nowTS()), quota, "")
	checkPayload(t, h.do(array("GET", "abcd")), "$8\r\n12345678\r\n")
}

func TestWatchQuota(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxWatches = 2 })
	checkPayload(t, h.doAs("c1", array("KEYNOTIFY", "a")), "+OK\r\n")
	checkPayload(t, h.doAs("c2", array("KEYNOTIFY", "a")), "+OK\r\n")
	checkPayload(t, h.doAs("c1", array("KEYNOTIFY", "a")), "+OK\r\n") // already registered
	checkResponse(t, h.doAs("c3", array("KEYNOTIFY", "a")), quota, "")
	h.e.ClientDisconnected("c1")
	checkPayload(t, h.doAs("c3", array("KEYNOTIFY", "a")), "+OK\r\n")
}

func TestDefaultLimitsApply(t *testing.T) {
	o := NewDefaultOptions()
	if o.MaxKeys != DefaultMaxKeys || o.MaxValueBytes != DefaultMaxValueBytes || o.MaxKeyBytes != DefaultMaxKeyBytes {
		t.Fatalf("defaults = %+v", o)
	}
	h := newHarness(t, func(o *Options) {
		now := o.Now
		*o = NewDefaultOptions()
		o.NodeID, o.Now = storeNode, now
	})
	big := strings.Repeat("x", DefaultMaxValueBytes+1)
	checkPayload(t, h.do(array("SET", "k", big), "__ts="+ts(t0, 0, "c")), "-ERR the quota has been exceeded\r\n")
}

// TestAuthorization covers the key-level authorization hook (docs/state-store-protocol.md#responses
// `not authorized`, docs/state-store-protocol.md#broker-obligations): read access for GET and
// KEYNOTIFY, write access for SET, DEL and VDEL.
func TestAuthorization(t *testing.T) {
	var calls []string
	h := newHarness(t, func(o *Options) {
		o.Authorize = func(clientID, _ string, key []byte, access Access) bool {
			calls = append(calls, fmt.Sprintf("%s %s %s", clientID, key, access))
			switch {
			case strings.HasPrefix(string(key), "public/"):
				return true
			case strings.HasPrefix(string(key), "ro/"):
				return access == AccessRead
			default:
				return clientID == "admin"
			}
		}
	})
	const denied = "-ERR not authorized\r\n"
	tests := []struct {
		client, payload string
		props           []string
		want            string
		call            string
	}{
		{"app1", array("SET", "public/a", "v"), []string{"__ts=" + ts(t0, 0, "c")}, "+OK\r\n", "app1 public/a write"},
		{"app1", array("SET", "ro/a", "v"), []string{"__ts=" + ts(t0, 0, "c")}, denied, "app1 ro/a write"},
		{"admin", array("SET", "ro/a", "v"), []string{"__ts=" + ts(t0, 0, "c")}, denied, "admin ro/a write"},
		{"app1", array("GET", "ro/a"), nil, "$-1\r\n", "app1 ro/a read"},
		{"app1", array("KEYNOTIFY", "ro/a"), nil, "+OK\r\n", "app1 ro/a read"},
		{"app1", array("KEYNOTIFY", "ro/a", "STOP"), nil, "+OK\r\n", "app1 ro/a read"},
		{"app1", array("DEL", "ro/a"), nil, denied, "app1 ro/a write"},
		{"app1", array("VDEL", "ro/a", "v"), nil, denied, "app1 ro/a write"},
		{"app1", array("GET", "secret"), nil, denied, "app1 secret read"},
		{"app1", array("KEYNOTIFY", "secret"), nil, denied, "app1 secret read"},
		{"admin", array("SET", "secret", "s"), []string{"__ts=" + ts(t0, 0, "c")}, "+OK\r\n", "admin secret write"},
		{"app1", array("DEL", "secret"), nil, denied, "app1 secret write"},
		// The hook is asked only about well-formed commands with a key.
		{"app1", array("GET"), nil, "-ERR wrong number of arguments\r\n", ""},
		// Authorization precedes the timestamp check: no key information leaks through it.
		{"app1", array("SET", "secret", "v"), nil, denied, "app1 secret write"},
	}
	for _, tc := range tests {
		calls = nil
		res := h.doAs(tc.client, tc.payload, tc.props...)
		if got := string(res.Response.Payload); got != tc.want {
			t.Errorf("%s %q = %q, want %q", tc.client, tc.payload, got, tc.want)
		}
		want := []string{}
		if tc.call != "" {
			want = []string{tc.call}
		}
		if fmt.Sprint(calls) != fmt.Sprint(want) {
			t.Errorf("%s %q: hook calls %v, want %v", tc.client, tc.payload, calls, want)
		}
	}
}
