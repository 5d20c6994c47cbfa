package statestore

import (
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
)

// TestTimestampRules covers __ts and __ft validation (docs/state-store-protocol.md#mqtt-properties,
// #versions-hlc, #responses).
func TestTimestampRules(t *testing.T) {
	const (
		missing   = "-ERR missing timestamp\r\n"
		malformed = "-ERR malformed timestamp\r\n"
		tsSkew    = "-ERR the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized\r\n"
		ftSkew    = "-ERR the request fencing token timestamp is too far in the future; ensure that the client and broker system clocks are synchronized\r\n"
	)
	set := array("SET", "k", "v")
	tests := []struct {
		name    string
		payload string
		props   []string
		want    string
	}{
		{"SET requires __ts", set, nil, missing},
		{"malformed __ts: two parts", set, []string{"__ts=1696374425000:0"}, malformed},
		{"malformed __ts: four parts", set, []string{"__ts=1:0:a:b"}, malformed},
		{"malformed __ts: not a number", set, []string{"__ts=abc:0:n"}, malformed},
		{"malformed __ts: empty", set, []string{"__ts="}, malformed},
		{"__ts more than 1 minute ahead", set, []string{"__ts=" + ts(t0+60_001, 0, "c")}, tsSkew},
		{"malformed __ft", set, []string{"__ts=" + ts(t0, 0, "c"), "__ft=x"}, malformed},
		{"__ft more than 1 minute ahead", set, []string{"__ts=" + ts(t0, 0, "c"), "__ft=" + ts(t0+60_001, 0, "c")}, ftSkew},
		{"__ft ahead on DEL", array("DEL", "k"), []string{"__ft=" + ts(t0+60_001, 0, "c")}, ftSkew},
		{"malformed __ft on VDEL", array("VDEL", "k", "v"), []string{"__ft=1:2"}, malformed},
		{"malformed __ts on GET", array("GET", "k"), []string{"__ts=nope"}, malformed},
		{"__ts ahead on GET", array("GET", "k"), []string{"__ts=" + ts(t0+61_000, 0, "c")}, tsSkew},
		{"malformed __ts on KEYNOTIFY", array("KEYNOTIFY", "k"), []string{"__ts=1"}, malformed},
		{"malformed __ts on DEL", array("DEL", "k"), []string{"__ts=::"}, malformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			checkResponse(t, h.do(tc.payload, tc.props...), tc.want, "")
			if h.e.Len() != 0 {
				t.Error("refused request stored a key")
			}
		})
	}
}

func TestTimestampAccepted(t *testing.T) {
	tests := []struct {
		name string
		ts   string
		want string // the version returned
	}{
		// docs/state-store-protocol.md#versions-hlc: exactly one minute ahead is not "more than" one
		// minute.
		{"one minute ahead", ts(t0+60_000, 7, "c"), ts(t0+60_000, 8, storeNode)},
		// docs/state-store-protocol.md#versions-hlc: an older __ts is accepted; the version is the
		// store's clock.
		{"an hour behind", ts(t0-3_600_000, 0, "c"), ts(t0, 0, storeNode)},
		// docs/state-store-protocol.md#versions-hlc: the docs' unpadded form.
		{"unpadded docs form", "1696374425000:1:StateStore", ts(t0, 2, storeNode)},
		{"same ms, counter 5", ts(t0, 5, "c"), ts(t0, 6, storeNode)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			res := h.do(array("SET", "k", "v"), "__ts="+tc.ts)
			checkResponse(t, res, "+OK\r\n", tc.want)
			got, _ := hlc.Parse(tc.want)
			sent, _ := hlc.Parse(tc.ts)
			// docs/state-store-protocol.md#versions-hlc: the returned version is greater than __ts.
			if hlc.Compare(got, sent) <= 0 {
				t.Errorf("version %v not greater than __ts %v", got, sent)
			}
		})
	}
}

func TestVersionsNeverGoBackwards(t *testing.T) {
	// docs/state-store-protocol.md#broker-obligations: an HLC that never goes backwards, even when the
	// wall clock does.
	h := newHarness(t, nil)
	var last hlc.HLC
	for i, wall := range []int64{t0, t0, t0 + 10, t0 - 5000, t0 - 5000, t0 + 20} {
		h.wall.SetMs(wall)
		v, err := hlc.Parse(h.set("k", "v"))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && hlc.Compare(v, last) <= 0 {
			t.Fatalf("step %d: version %v not after %v", i, v, last)
		}
		last = v
	}
	// A GET after a newer remote __ts still returns the stored version
	// (docs/state-store-protocol.md#versions-hlc).
	res := h.do(array("GET", "k"), "__ts="+ts(t0+30_000, 0, "c"))
	checkResponse(t, res, "$1\r\nv\r\n", last.String())
	// ... but the clock merged it: the next SET is after it.
	next, _ := hlc.Parse(h.set("k", "w"))
	if next.WallMs != t0+30_000 || next.Counter != 2 {
		t.Errorf("SET after a merged __ts = %v, want %d:2 (merged 00000, then +1 for GET, +1 for SET)", next, t0+30_000)
	}
}

// TestFencingTokens covers docs/state-store-protocol.md#fencing-tokens on SET.
func TestFencingTokens(t *testing.T) {
	const (
		required = "-ERR a fencing token is required for this request\r\n"
		lower    = "-ERR the request fencing token is a lower version than the fencing token protecting the resource\r\n"
	)
	h := newHarness(t, nil)
	ft1 := ts(t0, 1, storeNode)
	ft2 := ts(t0, 2, storeNode)
	ft0 := ts(t0, 0, storeNode)

	// Rule 1: no token yet, a SET with __ft stores it.
	checkPayload(t, h.do(array("SET", "p", "v1"), h.nowTS(), "__ft="+ft1), "+OK\r\n")
	// Rule 2: no __ft → refused; lower → refused; value unchanged.
	checkResponse(t, h.do(array("SET", "p", "x"), h.nowTS()), required, "")
	checkResponse(t, h.do(array("SET", "p", "x"), h.nowTS(), "__ft="+ft0), lower, "")
	// Node ID decides between equal time and counter (docs/state-store-protocol.md#versions-hlc
	// ordering): "a" < "store-node".
	checkResponse(t, h.do(array("SET", "p", "x"), h.nowTS(), "__ft="+ts(t0, 1, "a")), lower, "")
	checkPayload(t, h.do(array("GET", "p")), "$2\r\nv1\r\n")
	// Equal → accepted, token unchanged.
	checkPayload(t, h.do(array("SET", "p", "v2"), h.nowTS(), "__ft="+ft1), "+OK\r\n")
	// Higher → accepted and raised; then the old token is lower.
	checkPayload(t, h.do(array("SET", "p", "v3"), h.nowTS(), "__ft="+ft2), "+OK\r\n")
	checkResponse(t, h.do(array("SET", "p", "v4"), h.nowTS(), "__ft="+ft1), lower, "")
	// Rule 3 on VDEL: token needed before the value comparison.
	checkResponse(t, h.do(array("VDEL", "p", "v3")), required, "")
	checkResponse(t, h.do(array("VDEL", "p", "v3"), "__ft="+ft1), lower, "")
	checkPayload(t, h.do(array("VDEL", "p", "other"), "__ft="+ft2), ":-1\r\n")
	checkPayload(t, h.do(array("VDEL", "p", "v3"), "__ft="+ft2), ":1\r\n")
	// Rule 3: nothing stored after the delete; an unfenced SET is accepted again.
	checkPayload(t, h.do(array("SET", "p", "v5"), h.nowTS()), "+OK\r\n")
	// The fencing check precedes the NX condition.
	checkPayload(t, h.do(array("SET", "q", "v"), h.nowTS(), "__ft="+ft1), "+OK\r\n")
	checkResponse(t, h.do(array("SET", "q", "v", "NX"), h.nowTS()), required, "")
	// __ft on GET and KEYNOTIFY is ignored.
	checkPayload(t, h.do(array("GET", "q"), "__ft=garbage"), "$1\r\nv\r\n")
}

func TestSpecLockPattern(t *testing.T) {
	// docs/state-store-protocol.md#fencing-tokens "The intended pattern": acquire with NX PX, use the
	// returned __ts as __ft, renew with NEX, release with VDEL.
	h := newHarness(t, nil)
	res := h.do(array("SET", "lock", "owner1", "NX", "PX", "10000"), h.nowTS())
	lockVersion, _ := res.Response.Properties.Get(PropTimestamp)
	checkPayload(t, h.do(array("SET", "data", "d1"), h.nowTS(), "__ft="+lockVersion), "+OK\r\n")

	// A second owner waits for the lock to expire, acquires it, and writes with its newer version.
	h.wall.AddMs(10_000)
	res = h.doAs("app2", array("SET", "lock", "owner2", "NX", "PX", "10000"), h.nowTS())
	checkPayload(t, res, "+OK\r\n")
	lock2, _ := res.Response.Properties.Get(PropTimestamp)
	checkPayload(t, h.doAs("app2", array("SET", "data", "d2"), h.nowTS(), "__ft="+lock2), "+OK\r\n")
	// The first owner's late write is fenced off.
	checkPayload(t, h.do(array("SET", "data", "late"), h.nowTS(), "__ft="+lockVersion),
		"-ERR the request fencing token is a lower version than the fencing token protecting the resource\r\n")
	// Release only if owned.
	checkPayload(t, h.do(array("VDEL", "lock", "owner1")), ":-1\r\n")
	checkPayload(t, h.doAs("app2", array("VDEL", "lock", "owner2")), ":1\r\n")
}

func TestCustomMaxClockSkew(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxClockSkew = time.Second })
	checkPayload(t, h.do(array("SET", "k", "v"), "__ts="+ts(t0+1000, 0, "c")), "+OK\r\n")
	checkPayload(t, h.do(array("SET", "k", "v"), "__ts="+ts(t0+1001, 0, "c")),
		"-ERR the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized\r\n")
	// The skew is measured against the wall clock, not the HLC, so leads cannot ratchet
	// (docs/state-store-protocol.md#versions-hlc).
	checkPayload(t, h.do(array("GET", "k"), "__ts="+ts(t0+1001, 0, "c")),
		"-ERR the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized\r\n")
}
