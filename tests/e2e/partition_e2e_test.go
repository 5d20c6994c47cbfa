package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/components/pubsub-mqtt5/partition"
)

// telemetryFilter is what devicesim publishes to: devices/<deviceId>/telemetry.
const telemetryFilter = "devices/+/telemetry"

// partitionSubs subscribes to the k partitions of filter with raw payloads, partition i on route
// /in/p<i>, so the app sees which partition each delivery came through.
func partitionSubs(filter string, k int) []map[string]any {
	var subs []map[string]any
	for i, topic := range partition.Topics(filter, k) {
		sub := rawSub(topic, nil)
		sub["route"] = fmt.Sprintf("/in/p%d", i)
		subs = append(subs, sub)
	}
	return subs
}

// reading is what devicesim publishes, as far as these tests care.
type reading struct {
	DeviceID string `json:"deviceId"`
	Seq      int64  `json:"seq"`
}

// checkReadings checks the deliveries recorded by a (at least once: redeliveries are duplicates
// that dedup by deviceId and seq removes): count readings in all, each device's first
// deliveries in seq order, each through its device topic's partition of k (k = 0: not checked).
func checkReadings(t *testing.T, a *testApp, count, k int) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	last := map[string]int64{}
	dups := 0
	for _, p := range a.got {
		var r reading
		require.NoError(t, json.Unmarshal([]byte(p), &r), p)
		id := fmt.Sprintf("%s/%d", r.DeviceID, r.Seq)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		assert.Greater(t, r.Seq, last[r.DeviceID], "first deliveries of %s in order", r.DeviceID)
		last[r.DeviceID] = r.Seq
		if k > 0 {
			want := fmt.Sprintf("/in/p%d", partition.Of("devices/"+r.DeviceID+"/telemetry", k))
			assert.Equal(t, want, a.routes[p], "%s through its partition", id)
		}
	}
	assert.Len(t, seen, count, "every reading delivered (%d duplicates from redelivery)", dups)
	t.Logf("%d readings, %d redelivered duplicates, at most %d handler calls at once", len(seen), dups, a.maxInHandler)
}

// waitCount waits until the app has n distinct payloads.
func waitCount(t testing.TB, a *testApp, n int, timeout time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.routes) >= n
	}, timeout, 20*time.Millisecond, "%d distinct messages delivered", n)
}

// Through daprd 1.16, which hands a pluggable component's messages to the app one at a time per
// subscription, a subscription partitioned 4 ways is handled 4 at a time: every handler call
// waits at a rendezvous until 4 are in the handler at once, which one serial stream can never
// reach. Every reading arrives, each device's in order and through its partition.
func TestPartitionedSubscriptionHandlesPartitionsInParallel(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, partitionSubs(telemetryFilter, 4)...)
	app.barrier, app.barrierTimeout = 4, 30*time.Second
	r := s.newReplica("r1", map[string]string{"receiveMaximum": "32"})
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitPartitionsOpen(t, r, 4)

	s.devices(t, "devsim", "-count", "400", "-devices", "8", "-seq-start", "1")
	waitCount(t, app, 400, 90*time.Second)
	select {
	case <-app.barrierUp:
	default:
		t.Fatal("the rendezvous of 4 handler calls never happened: partitions were not handled in parallel")
	}
	checkReadings(t, app, 400, 4)
	app.mu.Lock()
	defer app.mu.Unlock()
	assert.Equal(t, 4, app.maxInHandler, "one handler call per partition stream at once (daprd 1.16 is serial per stream)")
}

// waitPartitionsOpen waits until the component logged that all k partition streams are open.
func waitPartitionsOpen(t testing.TB, r *replica, k int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return logContains(r.pubsub.log, fmt.Sprintf("all %d partition streams are open", k))
	}, 60*time.Second, 50*time.Millisecond, "daprd opened the %d partition streams", k)
}

// holdAfter makes the app hold deliveries in the handler (unanswered, so unacknowledged) once n
// distinct messages were delivered; waitHeld then waits for that, so that a kill lands
// mid-stream, and release lets the held deliveries go on.
func holdAfter(a *testApp, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hold, a.holdAfter = make(chan struct{}), n
}

func waitHeld(t *testing.T, a *testApp, n int) {
	t.Helper()
	waitCount(t, a, n, 90*time.Second)
	require.Eventually(t, func() bool { return a.inFlight() > 0 }, 30*time.Second, 10*time.Millisecond, "a delivery is held in the handler")
}

func release(a *testApp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.hold)
	a.hold = nil
}

// A partitioned subscription (K=4) loses nothing when, mid-stream, the component is killed with
// kill -9 (restarted with daprd, which does not re-initialise a restarted component), then daprd
// alone, then the app: every reading is delivered, each device's first deliveries in order and
// through its partition.
func TestPartitionedSubscriptionSurvivesKills(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, partitionSubs(telemetryFilter, 4)...)
	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitPartitionsOpen(t, r, 4)
	const count = 800
	holdAfter(app, 100)
	s.devices(t, "devsim", "-count", fmt.Sprint(count), "-devices", "8", "-seq-start", "1")

	waitHeld(t, app, 100)
	r.pubsub.kill(syscall.SIGKILL)
	r.daprd.kill(syscall.SIGKILL)
	release(app)
	holdAfter(app, 300)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")

	waitHeld(t, app, 300)
	r.daprd.kill(syscall.SIGKILL)
	release(app)
	holdAfter(app, 500)
	r.startDaprd("connector", app.port, "http")

	waitHeld(t, app, 500)
	app.crash()
	release(app)
	app.restart(t)

	waitCount(t, app, count, 120*time.Second)
	checkReadings(t, app, count, 4)
	assert.False(t, logContains(r.pubsub.log, "have had no stream for"), "no partition was missing for longer than unsubscribeGrace")
}

// Receive Maximum parallelism reaches the app as is through daprd 1.15.0, which dispatches a
// pluggable component's messages concurrently, and not through 1.16.0, which hands them over one
// at a time per subscription (hence partitioned subscriptions): one plain subscription, one
// message on each of 8 device topics (so ordering by topic allows them all at once), and a
// rendezvous of 4 in the handler. On 1.16 each call gives up waiting after a second; that bounds
// the test, it does not decide it: concurrent calls would meet whatever the wait.
func TestReceiveMaximumParallelismByDaprdVersion(t *testing.T) {
	for _, tc := range []struct {
		name, bin string
		parallel  bool
	}{
		{"daprd-1.16.0", bins.daprd, false},
		{"daprd-1.15.0", bins.daprd115, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.bin == "" {
				t.Skip("set MQDAPR_DAPRD_V1_15=$(DAPRD_VERSION=v1.15.0 scripts/daprd.sh) to compare with daprd 1.15.0")
			}
			s := newStack(t)
			app := newTestApp(t, rawSub(telemetryFilter, nil))
			app.barrier, app.barrierTimeout = 4, time.Second
			if tc.parallel {
				app.barrierTimeout = 30 * time.Second
			}
			r := s.newReplica("r1", map[string]string{"receiveMaximum": "16"})
			r.daprdBin = tc.bin
			r.startComponents()
			r.startDaprd("connector", app.port, "http")
			require.Eventually(t, func() bool {
				return logContains(r.pubsub.log, `subscribed to \"`+telemetryFilter+`\" (qos`) // as logfmt quotes it
			}, 60*time.Second, 50*time.Millisecond)
			s.devices(t, "devsim", "-count", "8", "-devices", "8", "-seq-start", "1")
			waitCount(t, app, 8, 90*time.Second)
			checkReadings(t, app, 8, 0)
			app.mu.Lock()
			defer app.mu.Unlock()
			if tc.parallel {
				assert.GreaterOrEqual(t, app.maxInHandler, 4, "Receive Maximum parallelism reaches the app")
			} else {
				assert.Equal(t, 1, app.maxInHandler, "one at a time per subscription")
			}
		})
	}
}

// The partition count changes between runs: daprd is killed, the app now subscribes to 2
// partitions instead of 4, and the readings published meanwhile (waiting in the broker session:
// the MQTT subscription does not carry K) arrive through the 2 new partitions.
func TestPartitionCountChangesAcrossDaprdRestart(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t, partitionSubs(telemetryFilter, 4)...)
	r := s.newReplica("r1", nil)
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitPartitionsOpen(t, r, 4)
	s.devices(t, "devsim", "-count", "80", "-devices", "8", "-seq-start", "1")
	waitCount(t, app, 80, 60*time.Second)
	checkReadings(t, app, 80, 4)

	r.daprd.kill(syscall.SIGKILL)
	app.mu.Lock()
	app.subs = partitionSubs(telemetryFilter, 2)
	app.mu.Unlock()
	s.devices(t, "devsim", "-count", "80", "-devices", "8", "-seq-start", "100")
	r.startDaprd("connector", app.port, "http")
	waitPartitionsOpen(t, r, 2)
	waitCount(t, app, 160, 60*time.Second)

	app.mu.Lock()
	defer app.mu.Unlock()
	for p, route := range app.routes {
		var rd reading
		require.NoError(t, json.Unmarshal([]byte(p), &rd))
		if rd.Seq >= 100 {
			assert.Equal(t, fmt.Sprintf("/in/p%d", partition.Of("devices/"+rd.DeviceID+"/telemetry", 2)), route, p)
		}
	}
}

// Declarative subscriptions accept the partition names too: one Subscription per partition, with
// a shared group, and every reading arrives through its partition.
func TestPartitionedDeclarativeSubscriptions(t *testing.T) {
	s := newStack(t)
	app := newTestApp(t) // no programmatic subscriptions
	r := s.newReplica("r1", nil)
	for i, topic := range partition.Topics(telemetryFilter, 2) {
		yaml := fmt.Sprintf(`apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: telemetry-p%d
spec:
  pubsubname: mqtt
  topic: %q
  routes:
    default: /in/p%d
  metadata:
    rawPayload: "true"
    sharedSubscriptionGroup: connector
`, i, topic, i)
		require.NoError(t, os.WriteFile(filepath.Join(r.res, fmt.Sprintf("telemetry-p%d.yaml", i)), []byte(yaml), 0o644))
	}
	r.startComponents()
	r.startDaprd("connector", app.port, "http")
	waitPartitionsOpen(t, r, 2)
	assert.True(t, logContains(r.pubsub.log, `$share/connector/devices/+/telemetry`), "one shared MQTT subscription")
	s.devices(t, "devsim", "-count", "40", "-devices", "8", "-seq-start", "1")
	waitCount(t, app, 40, 60*time.Second)
	checkReadings(t, app, 40, 2)
}
