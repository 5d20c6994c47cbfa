package statestore

import (
	"context"
	"testing"
)

const deletePayload = "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n"

// TestExpiry covers PX (docs/state-store-protocol.md#commands) and the DELETE notification on TTL
// expiry (docs/state-store-protocol.md#notifications, #broker-obligations).
func TestExpiry(t *testing.T) {
	h := newHarness(t, nil)
	checkPayload(t, h.doAs("w", array("KEYNOTIFY", "k")), "+OK\r\n")
	version := h.set("k", "v", "PX", "1000")
	h.set("later", "v", "PX", "5000")
	h.set("forever", "v")

	if d, ok := h.e.NextDeadline(); !ok || d.UnixMilli() != t0+1000 {
		t.Fatalf("NextDeadline = %v %v", d, ok)
	}
	ctx := context.Background()
	if n := h.e.Expire(ctx, h.wall.Now().Add(999e6)); len(n) != 0 || h.e.Len() != 3 {
		t.Fatalf("expired early: %v, Len %d", n, h.e.Len())
	}
	// At the deadline the key is gone and the watcher gets `*2 NOTIFY DELETE` with the key's version.
	notes := h.e.Expire(ctx, h.wall.Now().Add(1000e6))
	if len(notes) != 1 {
		t.Fatalf("notifications = %v", notes)
	}
	checkNotification(t, notes[0], "w", "k", deletePayload, version)
	if h.e.Len() != 2 {
		t.Errorf("Len = %d", h.e.Len())
	}
	if d, ok := h.e.NextDeadline(); !ok || d.UnixMilli() != t0+5000 {
		t.Errorf("NextDeadline after expiry = %v %v", d, ok)
	}
	h.wall.AddMs(1000)
	checkResponse(t, h.do(array("GET", "k")), "$-1\r\n", "")

	// Without a watcher, expiry produces nothing to publish.
	if n := h.e.Expire(ctx, h.wall.Now().Add(1e12)); len(n) != 0 {
		t.Errorf("notifications without watchers: %v", n)
	}
	if _, ok := h.e.NextDeadline(); ok || h.e.Len() != 1 {
		t.Errorf("after expiring all: Len %d", h.e.Len())
	}
}

func TestHandleExpiresDueKeysFirst(t *testing.T) {
	// A key past its deadline is never served, even if the broker's timer has not fired yet; the
	// DELETE notification comes with that request's result.
	h := newHarness(t, nil)
	checkPayload(t, h.doAs("w", array("KEYNOTIFY", "k")), "+OK\r\n")
	version := h.set("k", "v", "PX", "10")
	h.wall.AddMs(10)
	res := h.do(array("GET", "k"))
	checkResponse(t, res, "$-1\r\n", "")
	if len(res.Notifications) != 1 {
		t.Fatalf("notifications = %v", res.Notifications)
	}
	checkNotification(t, res.Notifications[0], "w", "k", deletePayload, version)
	// NX now succeeds on the expired key.
	checkPayload(t, h.do(array("SET", "k", "new", "NX"), h.nowTS()), "+OK\r\n")
}

func TestRenewalMovesDeadline(t *testing.T) {
	h := newHarness(t, nil)
	h.set("a", "v", "PX", "100")
	h.set("b", "v", "PX", "200")
	h.set("a", "v", "NEX", "PX", "300") // a now expires after b
	if d, _ := h.e.NextDeadline(); d.UnixMilli() != t0+200 {
		t.Fatalf("NextDeadline = %d, want b's", d.UnixMilli()-t0)
	}
	h.e.Expire(context.Background(), h.wall.Now().Add(200e6))
	checkPayload(t, h.do(array("GET", "a")), "$1\r\nv\r\n")
	checkPayload(t, h.do(array("DEL", "a")), ":1\r\n") // deleting removes its deadline
	if _, ok := h.e.NextDeadline(); ok {
		t.Error("deadline left after DEL")
	}
}

func TestManyDeadlinesExpireInOrder(t *testing.T) {
	h := newHarness(t, nil)
	for _, ms := range []string{"50", "10", "40", "20", "30", "10"} {
		checkPayload(t, h.do(array("SET", "k"+ms+h.wall.Now().String(), "v", "PX", ms), h.nowTS()), "+OK\r\n")
		h.wall.AddMs(1)
	}
	ctx := context.Background()
	prev := int64(0)
	for h.e.Len() > 0 {
		d, ok := h.e.NextDeadline()
		if !ok || d.UnixMilli() < prev {
			t.Fatalf("deadline %v %v after %d", d, ok, prev)
		}
		prev = d.UnixMilli()
		h.e.Expire(ctx, d)
	}
}
