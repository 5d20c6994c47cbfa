package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lakeRowTopics returns, per row id, the device id and topic of every row in the lake.
func lakeRowTopics(t *testing.T, lake string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	_ = filepath.Walk(lake, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".jsonl") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var row struct{ ID, DeviceID, Topic string }
			if json.Unmarshal(sc.Bytes(), &row) == nil && row.ID != "" {
				out[row.ID] = append(out[row.ID], row.DeviceID+" "+row.Topic)
			}
		}
		return nil
	})
	return out
}

// assertDeviceTopics checks that every row has the device id of its id and that device's topic:
// through a partition the delivery's topic is the partition's Dapr topic, and the device's MQTT
// topic only travels in the mqtt-topic metadata.
func assertDeviceTopics(t *testing.T, lake string) {
	t.Helper()
	for id, rows := range lakeRowTopics(t, lake) {
		device, _, _ := strings.Cut(id, "/")
		for _, r := range rows {
			assert.Equal(t, device+" devices/"+device+"/telemetry", r, "row %s: device id and topic", id)
		}
	}
}

// waitLake waits until the lake holds at least n rows.
func waitLake(t *testing.T, lake string, n int) {
	t.Helper()
	waitRows(t, lake, n, 120*time.Second)
}

// The connector on K=8 partitions through the real daprd: readings identified by seq and by the
// message-id user property all land exactly once with their device id and topic while, mid-stream,
// the pub/sub component is killed with kill -9 (daprd goes with it: it does not re-initialise a
// component that restarted), then daprd alone, then the app.
func TestConnectorOnPartitionsSurvivesKills(t *testing.T) {
	s := newStack(t)
	lake := filepath.Join(s.dir, "lake")
	c := s.startConnector("replica-1", lake, "-telemetry-partitions", "8")
	waitPartitionsOpen(t, c.replica, 8)
	s.devices(t, "devsim-1", "-count", "1200", "-devices", "8", "-assets", "3", "-seq-start", "1")
	s.devices(t, "devsim-2", "-count", "400", "-devices", "8", "-assets", "3", "-message-id", "-publish-config=false")
	const total = 1600

	waitLake(t, lake, 100)
	c.pubsub.kill(syscall.SIGKILL)
	c.daprd.kill(syscall.SIGKILL)
	c.startPubsub()
	c.startDaprd("connector", c.appPort, "grpc")

	waitLake(t, lake, 500)
	c.daprd.kill(syscall.SIGKILL)
	c.startDaprd("connector", c.appPort, "grpc")

	waitLake(t, lake, 900)
	c.app.kill(syscall.SIGKILL)
	c.startApp()

	assertExactlyOnce(t, waitRows(t, lake, total, 120*time.Second), total)
	assertDeviceTopics(t, lake)
	assert.False(t, logContains(c.pubsub.log, "have had no stream for"), "no partition was missing for longer than unsubscribeGrace")
}

// Two replicas on the shared telemetry subscription, each on K=8 partitions: they split the
// readings, one app is killed with kill -9 mid-stream and restarted, and every reading lands
// exactly once with its device id and topic.
func TestConnectorReplicasOnPartitions(t *testing.T) {
	s := newStack(t)
	lake := filepath.Join(s.dir, "lake")
	r1 := s.startConnector("replica-1", lake, "-telemetry-partitions", "8")
	r2 := s.startConnector("replica-2", lake, "-telemetry-partitions", "8")
	waitPartitionsOpen(t, r1.replica, 8)
	waitPartitionsOpen(t, r2.replica, 8)

	s.devices(t, "devsim-1", "-count", "300", "-devices", "8", "-assets", "3", "-seq-start", "1")
	require.Eventually(t, func() bool { return r1.counters()["written"] > 10 && r2.counters()["written"] > 10 },
		60*time.Second, 50*time.Millisecond, "both replicas take part")
	r1.app.kill(syscall.SIGKILL)
	s.devices(t, "devsim-2", "-count", "300", "-devices", "8", "-assets", "3", "-seq-start", "1000", "-publish-config=false")
	r1.startApp()

	assertExactlyOnce(t, waitRows(t, lake, 600, 120*time.Second), 600)
	assertDeviceTopics(t, lake)
	_, byReplica := lakeRows(t, lake)
	assert.Positive(t, byReplica["replica-1"])
	assert.Positive(t, byReplica["replica-2"])
}

// The app on K=8 partitions (claims of the handlers in flight sent together, done marks grouped
// into done sets written behind the acks) and its daprd are killed with kill -9 mid-stream: claim
// batches in flight, rows acked whose done set is not written yet, acks lost. After the restart
// every reading lands exactly once, and the same readings published again are all duplicates:
// records listed by a written set, and records of the killed process whose set was never written
// (found by scanning the lake), add no row.
func TestConnectorKilledBeforeItsDoneSetsAreWritten(t *testing.T) {
	s := newStack(t)
	lake := filepath.Join(s.dir, "lake")
	c := s.startConnector("replica-1", lake, "-telemetry-partitions", "8")
	waitPartitionsOpen(t, c.replica, 8)
	const total = 600
	s.devices(t, "devsim-1", "-count", fmt.Sprint(total), "-devices", "8", "-assets", "3", "-seq-start", "1")

	waitLake(t, lake, 150)
	c.app.kill(syscall.SIGKILL)
	c.daprd.kill(syscall.SIGKILL)
	c.startApp()
	c.startDaprd("connector", c.appPort, "grpc")
	assertExactlyOnce(t, waitRows(t, lake, total, 120*time.Second), total)
	dups := c.counters()["duplicates_skipped"] // redeliveries of rows written before the kill

	s.devices(t, "devsim-2", "-count", fmt.Sprint(total), "-devices", "8", "-assets", "3", "-seq-start", "1", "-publish-config=false")
	require.Eventually(t, func() bool { return c.counters()["duplicates_skipped"] >= dups+total }, 120*time.Second, 50*time.Millisecond,
		"the same readings again are duplicates")
	byID, _ := lakeRows(t, lake)
	assertExactlyOnce(t, byID, total)
}
