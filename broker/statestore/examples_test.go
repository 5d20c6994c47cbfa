package statestore

import (
	"testing"
)

// The byte-level examples of docs/state-store-protocol.md#byte-level-examples, request and response
// byte for byte.

func TestSpecEx1AcquireLockSetNXPX(t *testing.T) {
	h := newHarness(t, nil)
	// docs/state-store-protocol.md#example-acquire-and-renew-a-lock: 63-byte request with
	// __ts=001696374425000:00000:app1-node, __protVer=1.0.
	payload := "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n10000\r\n"
	if len(payload) != 63 {
		t.Fatalf("example payload is %d bytes", len(payload))
	}
	res := h.do(payload, "__ts=001696374425000:00000:app1-node")
	// Response `+OK\r\n` with __ts=…:00001:<store-node> (the version is greater than the request's
	// __ts, docs/state-store-protocol.md#versions-hlc).
	checkResponse(t, res, "+OK\r\n", "001696374425000:00001:store-node")
	if len(res.Notifications) != 0 {
		t.Errorf("unexpected notifications %v", res.Notifications)
	}

	// A second client tries to take the lock: `:-1\r\n` with __ts = the existing version.
	h.wall.AddMs(5)
	res = h.doAs("app2", payload, "__ts="+ts(t0+5, 0, "app2-node"))
	checkResponse(t, res, ":-1\r\n", "001696374425000:00001:store-node")

	if d, ok := h.e.NextDeadline(); !ok || d.UnixMilli() != t0+10000 {
		t.Errorf("NextDeadline = %v, %v; want t0+10s", d, ok)
	}
}

func TestSpecEx1RenewLockSetNEX(t *testing.T) {
	h := newHarness(t, nil)
	h.do(array("SET", "lock", "client1", "NX", "PX", "10000"), "__ts="+ts(t0, 0, "app1-node"))

	// docs/state-store-protocol.md#example-acquire-and-renew-a-lock renewal: `$3\r\nNEX\r\n` instead
	// of `$2\r\nNX\r\n`, 64 bytes; NEX = absent or equal.
	renew := "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$3\r\nNEX\r\n$2\r\nPX\r\n$5\r\n10000\r\n"
	if len(renew) != 64 {
		t.Fatalf("renewal payload is %d bytes", len(renew))
	}
	h.wall.SetMs(t0 + 4000)
	res := h.do(renew, "__ts="+ts(t0+4000, 0, "app1-node"))
	checkResponse(t, res, "+OK\r\n", ts(t0+4000, 1, storeNode))
	if d, _ := h.e.NextDeadline(); d.UnixMilli() != t0+14000 {
		t.Errorf("renewal deadline = %d, want t0+14000", d.UnixMilli())
	}

	// Another owner cannot renew: the value differs (docs/state-store-protocol.md#commands NEX).
	other := array("SET", "lock", "client2", "NEX", "PX", "10000")
	res = h.doAs("app2", other, "__ts="+ts(t0+4000, 0, "app2-node"))
	checkResponse(t, res, ":-1\r\n", ts(t0+4000, 1, storeNode))

	// NEX on an absent key sets it (docs/state-store-protocol.md#commands: "set if absent").
	res = h.do(array("SET", "lock2", "v", "NEX"), "__ts="+ts(t0+4000, 0, "app1-node"))
	checkPayload(t, res, "+OK\r\n")
}

func TestSpecEx2Get(t *testing.T) {
	h := newHarness(t, nil)
	get := "*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n"
	// docs/state-store-protocol.md#example-get: the request is 23 bytes, hex 2a 32 0d 0a ...
	if len(get) != 23 {
		t.Fatalf("GET is %d bytes", len(get))
	}
	// Miss: `$-1\r\n` and no __ts.
	checkResponse(t, h.do(get, h.nowTS()), "$-1\r\n", "")

	version := h.set("lock", "client1")
	checkResponse(t, h.do(get, h.nowTS()), "$7\r\nclient1\r\n", version)

	// Empty value: `$0\r\n\r\n` (docs/state-store-protocol.md#commands: empty values are allowed).
	version = h.set("lock", "")
	checkResponse(t, h.do(get), "$0\r\n\r\n", version)
}

func TestSpecEx3FencedDel(t *testing.T) {
	h := newHarness(t, nil)
	del := "*2\r\n$3\r\nDEL\r\n$9\r\nprotected\r\n"
	// docs/state-store-protocol.md#example-fenced-del: __ft=001696374425000:00001:<store-node>
	ft := ts(t0, 1, storeNode)

	// Absent: `:0\r\n`, no __ts.
	checkResponse(t, h.do(del, "__ft="+ft), ":0\r\n", "")

	// A SET carrying __ft fences the key (docs/state-store-protocol.md#fencing-tokens rule 1).
	res := h.do(array("SET", "protected", "v"), h.nowTS(), "__ft="+ft)
	checkPayload(t, res, "+OK\r\n")
	version, _ := res.Response.Properties.Get(PropTimestamp)

	// No __ft: the in-band error, still __stat=200 (docs/state-store-protocol.md#example-fenced-del,
	// #mqtt-properties).
	checkResponse(t, h.do(del), "-ERR a fencing token is required for this request\r\n", "")
	// Lower __ft (docs/state-store-protocol.md#fencing-tokens rule 3).
	checkResponse(t, h.do(del, "__ft="+ts(t0, 0, storeNode)),
		"-ERR the request fencing token is a lower version than the fencing token protecting the resource\r\n", "")
	// Equal __ft: deleted, `:1\r\n` with the key's stored version
	// (docs/state-store-protocol.md#versions-hlc).
	checkResponse(t, h.do(del, "__ft="+ft), ":1\r\n", version)
	// The token went with the key: DEL without __ft on the absent key is `:0`.
	checkResponse(t, h.do(del), ":0\r\n", "")
}

func TestSpecEx4Vdel(t *testing.T) {
	h := newHarness(t, nil)
	vdel := "*3\r\n$4\r\nVDEL\r\n$4\r\nlock\r\n$7\r\nclient1\r\n"
	// Absent: `:0\r\n`.
	checkResponse(t, h.do(vdel), ":0\r\n", "")
	// Value mismatch: `:-1\r\n`, with the stored version (docs/state-store-protocol.md#versions-hlc:
	// VDEL returns the key's version).
	version := h.set("lock", "client2")
	checkResponse(t, h.do(vdel), ":-1\r\n", version)
	if got := string(h.do(array("GET", "lock")).Response.Payload); got != "$7\r\nclient2\r\n" {
		t.Errorf("VDEL mismatch deleted the key: GET = %q", got)
	}
	// Match: `:1\r\n`.
	version = h.set("lock", "client1")
	checkResponse(t, h.do(vdel), ":1\r\n", version)
	checkResponse(t, h.do(array("GET", "lock")), "$-1\r\n", "")
}

func TestSpecEx5KeyNotify(t *testing.T) {
	h := newHarness(t, nil)
	const watcher = "client-id1"
	// docs/state-store-protocol.md#example-keynotify-and-notifications step 2.
	res := h.doAs(watcher, "*2\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n", h.nowTS())
	checkResponse(t, res, "+OK\r\n", "")
	if !h.e.Watching(watcher, []byte("SOMEKEY")) {
		t.Fatal("registration missing")
	}

	// Step 3: another client runs `SET SOMEKEY abc`.
	res = h.doAs("other", array("SET", "SOMEKEY", "abc"), h.nowTS())
	version, _ := res.Response.Properties.Get(PropTimestamp)
	if len(res.Notifications) != 1 {
		t.Fatalf("notifications = %v, want 1", res.Notifications)
	}
	n := res.Notifications[0]
	if n.Topic != "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/636C69656E742D696431/command/notify/534F4D454B4559" {
		t.Errorf("notification topic = %q", n.Topic)
	}
	checkNotification(t, n, watcher, "SOMEKEY", "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n", version)

	// Step 4: on delete, `*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n`, __ts = the deleted key's version.
	res = h.doAs("other", array("DEL", "SOMEKEY"))
	if len(res.Notifications) != 1 {
		t.Fatalf("DEL notifications = %v", res.Notifications)
	}
	checkNotification(t, res.Notifications[0], watcher, "SOMEKEY", "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n", version)

	// Step 5: STOP answers +OK, then :0 when not watched.
	stop := "*3\r\n$9\r\nKEYNOTIFY\r\n$7\r\nSOMEKEY\r\n$4\r\nSTOP\r\n"
	checkResponse(t, h.doAs(watcher, stop), "+OK\r\n", "")
	checkResponse(t, h.doAs(watcher, stop), ":0\r\n", "")
	if res := h.doAs("other", array("SET", "SOMEKEY", "x"), h.nowTS()); len(res.Notifications) != 0 {
		t.Errorf("notification after STOP: %v", res.Notifications)
	}
}

func TestSpecSyntaxErrorExample(t *testing.T) {
	// docs/state-store-protocol.md#example-syntax-error: any malformed array → `-ERR syntax
	// error\r\n`, __stat=200.
	h := newHarness(t, nil)
	checkResponse(t, h.do("*2\r\n$3\r\nGET\r\n$9\r\nlock\r\n"), "-ERR syntax error\r\n", "")
}
