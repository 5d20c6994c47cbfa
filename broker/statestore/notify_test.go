package statestore

import (
	"context"
	"testing"
)

const setAbc = "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$3\r\nabc\r\n"

// TestNotifications covers docs/state-store-protocol.md#notifications: per (client, key)
// registrations, SET and DELETE payloads, every watcher including the writer, and no notification
// for keys not watched.
func TestNotifications(t *testing.T) {
	h := newHarness(t, nil)
	for _, c := range []string{"zeta", "alpha", "app1"} {
		checkPayload(t, h.doAs(c, array("KEYNOTIFY", "SOMEKEY")), "+OK\r\n")
	}
	// Registering twice is a no-op that still answers +OK.
	checkPayload(t, h.doAs("alpha", array("KEYNOTIFY", "SOMEKEY")), "+OK\r\n")
	checkPayload(t, h.doAs("alpha", array("KEYNOTIFY", "OTHER")), "+OK\r\n")

	res := h.do(array("SET", "SOMEKEY", "abc"), h.nowTS())
	version, _ := res.Response.Properties.Get(PropTimestamp)
	if len(res.Notifications) != 3 {
		t.Fatalf("notifications = %d, want 3", len(res.Notifications))
	}
	for i, c := range []string{"alpha", "app1", "zeta"} { // client ID order
		checkNotification(t, res.Notifications[i], c, "SOMEKEY", setAbc, version)
	}
	// Each notification owns its payload.
	res.Notifications[0].Payload[0] = 'X'
	if string(res.Notifications[1].Payload) != setAbc {
		t.Error("notifications share a payload buffer")
	}

	// An unapplied SET (NX fails) and a failed VDEL notify nobody.
	if res := h.do(array("SET", "SOMEKEY", "x", "NX"), h.nowTS()); len(res.Notifications) != 0 {
		t.Errorf("NX failure notified: %v", res.Notifications)
	}
	if res := h.do(array("VDEL", "SOMEKEY", "x")); len(res.Notifications) != 0 {
		t.Errorf("VDEL mismatch notified: %v", res.Notifications)
	}
	// VDEL deletes notify DELETE.
	res = h.do(array("VDEL", "SOMEKEY", "abc"))
	if len(res.Notifications) != 3 || string(res.Notifications[0].Payload) != deletePayload {
		t.Fatalf("VDEL notifications = %v", res.Notifications)
	}
	// DEL of an absent key notifies nobody.
	if res := h.do(array("DEL", "SOMEKEY")); len(res.Notifications) != 0 {
		t.Errorf("DEL of absent key notified: %v", res.Notifications)
	}
	// Empty values are still the 4-element form.
	res = h.do(array("SET", "SOMEKEY", ""), h.nowTS())
	if got := string(res.Notifications[0].Payload); got != "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$0\r\n\r\n" {
		t.Errorf("empty value notification = %q", got)
	}
}

func TestClientDisconnectedDropsRegistrations(t *testing.T) {
	// docs/state-store-protocol.md#notifications: registrations are dropped when the client
	// disconnects.
	h := newHarness(t, nil)
	checkPayload(t, h.doAs("gone", array("KEYNOTIFY", "a")), "+OK\r\n")
	checkPayload(t, h.doAs("gone", array("KEYNOTIFY", "b")), "+OK\r\n")
	checkPayload(t, h.doAs("stays", array("KEYNOTIFY", "a")), "+OK\r\n")
	h.e.ClientDisconnected("gone")
	h.e.ClientDisconnected("never-connected")
	if h.e.Watching("gone", []byte("a")) || h.e.Watching("gone", []byte("b")) || !h.e.Watching("stays", []byte("a")) {
		t.Fatal("registrations not dropped per client")
	}
	res := h.do(array("SET", "a", "abc"), h.nowTS())
	if len(res.Notifications) != 1 || res.Notifications[0].Topic != NotifyTopic("stays", []byte("a")) {
		t.Errorf("notifications = %v", res.Notifications)
	}
	// After reconnecting the client must resend KEYNOTIFY; STOP answers :0 meanwhile.
	checkPayload(t, h.doAs("gone", array("KEYNOTIFY", "b", "STOP")), ":0\r\n")
	if h.e.watchCount != 1 {
		t.Errorf("watchCount = %d, want 1", h.e.watchCount)
	}
}

// A registration belongs to the connection that made it (Request.Conn): the end of an earlier
// connection of the same client, reported after the client registered again on a new one, leaves
// the new registration alone; notifications name the registering client and connection.
func TestConnectionClosedDropsOnlyThatConnection(t *testing.T) {
	h := newHarness(t, nil)
	on := func(clientID string, conn uint64, payload string) Result {
		t.Helper()
		r := req(clientID, payload)
		r.Conn = conn
		res, err := h.e.Handle(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	checkPayload(t, on("w", 1, array("KEYNOTIFY", "a")), "+OK\r\n")
	checkPayload(t, on("w", 1, array("KEYNOTIFY", "b")), "+OK\r\n")
	checkPayload(t, on("w", 2, array("KEYNOTIFY", "a")), "+OK\r\n") // the client's next connection
	h.e.ConnectionClosed("w", 1)
	if !h.e.Watching("w", []byte("a")) || h.e.Watching("w", []byte("b")) {
		t.Fatal("ConnectionClosed(1) must drop b (made on 1) and keep a (made again on 2)")
	}
	res := h.do(array("SET", "a", "abc"), h.nowTS())
	if len(res.Notifications) != 1 || res.Notifications[0].ClientID != "w" || res.Notifications[0].Conn != 2 {
		t.Fatalf("notifications = %+v, want one to w on connection 2", res.Notifications)
	}
	h.e.ConnectionClosed("w", 2)
	if h.e.Watching("w", []byte("a")) || h.e.watchCount != 0 {
		t.Fatalf("watchCount = %d after every connection ended", h.e.watchCount)
	}
}
