package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// publishRaw publishes through daprd's HTTP API with a raw payload. daprd reports healthy before
// the app's subscription streams reach the broker, so a publish right after start-up can find no
// subscriber: the broker discards it (PUBACK 0x10) and the component fails the publish
// (noMatchingSubscribers: fail), which is retried here as a publisher should; nothing was kept, so
// the retry cannot duplicate it.
func publishRaw(t *testing.T, r *replica, topic, payload string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Post(r.daprURL("/v1.0/publish/mqtt/"+topic+"?metadata.rawPayload=true"), "application/json", bytes.NewBufferString(payload))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent && bytes.Contains(body, []byte("PUBACK 0x10")) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // poll interval: the subscription appears on its own
			continue
		}
		require.Equal(t, http.StatusNoContent, resp.StatusCode, "publish %s: %s", payload, body)
		return
	}
}

func waitDelivered(t *testing.T, a *testApp, want map[string]bool, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for len(want) > 0 {
		select {
		case p := <-a.delivered:
			delete(want, p)
		case <-deadline:
			t.Fatalf("not delivered within %s: %v", timeout, want)
		}
	}
}

// Through a real daprd over the unix socket: publish, subscribe with raw payloads, and a failed
// app handler makes the component redeliver.
func TestDaprdPublishSubscribeAndRedelivery(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, rawSub("e2e-telemetry", nil))
	app.fail = func(p string, attempt int) bool { return p == `{"seq":3}` && attempt <= 2 }
	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")

	want := map[string]bool{}
	for i := range 10 {
		p := fmt.Sprintf(`{"seq":%d}`, i)
		want[p] = true
		publishRaw(t, r, "e2e-telemetry", p)
	}
	waitDelivered(t, app, want, 60*time.Second)
	app.mu.Lock()
	defer app.mu.Unlock()
	assert.Equal(t, 3, app.attempts[`{"seq":3}`], "failed twice, delivered on the third attempt")
}

// daprd does not re-initialise a component that restarted: after a component is killed (kill -9)
// with a message unacknowledged, restarting the component and daprd delivers it again.
func TestComponentKilledAndRestartedWithDaprd(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, rawSub("e2e-kill", nil))
	app.block = make(chan struct{})
	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	publishRaw(t, r, "e2e-kill", `{"seq":1}`)
	require.Eventually(t, func() bool {
		app.mu.Lock()
		defer app.mu.Unlock()
		return app.attempts[`{"seq":1}`] == 1
	}, 30*time.Second, 20*time.Millisecond, "the app is handling the message")

	r.pubsub.kill(syscall.SIGKILL)
	r.daprd.kill(syscall.SIGKILL)
	app.mu.Lock()
	close(app.block)
	app.block = nil
	app.mu.Unlock()

	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitDelivered(t, app, map[string]bool{`{"seq":1}`: true}, 60*time.Second)
}

// SIGTERM to the component and daprd (what Ctrl-C in `make run` sends) leaves no stale socket and
// loses nothing: messages published while they are down are delivered after they come back.
func TestSIGTERMLeavesNoStaleSocketAndLosesNothing(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, rawSub("e2e-term", nil))
	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	publishRaw(t, r, "e2e-term", `{"seq":1}`)
	waitDelivered(t, app, map[string]bool{`{"seq":1}`: true}, 30*time.Second)

	r.daprd.kill(syscall.SIGTERM)
	r.pubsub.kill(syscall.SIGTERM)
	_, err := os.Stat(filepath.Join(r.sockets, "mqttv5.sock"))
	require.True(t, os.IsNotExist(err), "socket removed on SIGTERM (stat: %v)", err)

	// While the app's side is down, a device keeps publishing through another daprd.
	other := s.newReplica("publisher", nil)
	other.startComponents()
	other.startDaprd("device-gateway", 0, "")
	publishRaw(t, other, "e2e-term", `{"seq":2}`)
	publishRaw(t, other, "e2e-term", `{"seq":3}`)

	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitDelivered(t, app, map[string]bool{`{"seq":2}`: true, `{"seq":3}`: true}, 60*time.Second)
}

// The declarative subscription in deploy/subscription.yaml works as written: raw device JSON on a
// wildcard topic through a shared subscription.
func TestDeclarativeSubscriptionFile(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t) // no programmatic subscriptions
	r := s.newReplica("r1", nil)
	sub, err := os.ReadFile(filepath.Join(bins.root, "deploy", "subscription.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(r.res, "subscription.yaml"), sub, 0o644))
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	s.devices(t, "devsim", "-count", "5", "-devices", "1", "-seq-start", "1")
	for range 5 {
		select {
		case p := <-app.delivered:
			assert.Contains(t, p, `"deviceId":"dev-001"`)
		case <-time.After(30 * time.Second):
			t.Fatal("telemetry not delivered through the declarative subscription")
		}
	}
}
