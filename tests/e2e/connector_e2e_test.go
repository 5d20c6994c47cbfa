package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// connectorReplica is one replica of the sample app with its components and daprd.
type connectorReplica struct {
	*replica
	app        *proc
	appPort    int
	healthPort int
	lake       string
	appArgs    []string // more flags of the app
}

func (s *stack) startConnector(name, lake string, appArgs ...string) *connectorReplica {
	return s.startConnectorMeta(name, lake, nil, appArgs...)
}

// startConnectorMeta is startConnector with more metadata of the pub/sub component.
func (s *stack) startConnectorMeta(name, lake string, pubsubMeta map[string]string, appArgs ...string) *connectorReplica {
	r := s.newReplica(name, pubsubMeta).withState()
	c := &connectorReplica{replica: r, lake: lake, appArgs: appArgs}
	r.startComponents()
	c.startApp()
	r.startDaprd("connector", c.appPort, "grpc")
	return c
}

func (c *connectorReplica) startApp() {
	t := c.s.t
	if c.appPort == 0 {
		c.appPort, c.healthPort = testutil.FreePort(t), testutil.FreePort(t)
		c.grpcPort = testutil.FreePort(t) // daprd's gRPC port, chosen before daprd starts
	}
	args := append([]string{"-app-port", fmt.Sprint(c.appPort), "-dapr-grpc-port", fmt.Sprint(c.grpcPort),
		"-health-addr", fmt.Sprintf("127.0.0.1:%d", c.healthPort), "-lake", c.lake, "-replica", c.name,
		"-claim-ttl", "5s"}, c.appArgs...)
	c.app = start(t, c.name+"-app", c.s.dir, nil, filepath.Join(bins.dir, "app"), args...)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", c.healthPort), 30*time.Second, c.app.exited())
}

// counters reads the app's /metrics.
func (c *connectorReplica) counters() map[string]int {
	out := map[string]int{}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.healthPort))
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			n, _ := strconv.Atoi(f[1])
			out[strings.TrimSuffix(strings.TrimPrefix(f[0], "mqdapr_connector_"), "_total")] = n
		}
	}
	return out
}

// lakeRows counts the rows in the lake by id, and the rows per replica file.
func lakeRows(t *testing.T, lake string) (byID map[string]int, byReplica map[string]int) {
	byID, byReplica = map[string]int{}, map[string]int{}
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
			var row struct {
				ID      string `json:"id"`
				Replica string `json:"replica"`
			}
			if json.Unmarshal(sc.Bytes(), &row) == nil && row.ID != "" {
				byID[row.ID]++
				byReplica[row.Replica]++
			}
		}
		return nil
	})
	return byID, byReplica
}

// devices runs the demo publisher to completion.
func (s *stack) devices(t testing.TB, clientID string, args ...string) {
	t.Helper()
	base := []string{"-broker", s.mqttURL(), "-client-id", clientID, "-rate", "0"}
	if s.auth {
		base = append(base, "-username", devicesUser, "-password-file", s.passwordFile(devicesUser))
	}
	p := start(t, clientID, s.dir, nil, filepath.Join(bins.dir, "devicesim"), append(base, args...)...)
	select {
	case <-p.exited():
		require.Equal(t, 0, p.cmd.ProcessState.ExitCode(), "devicesim failed")
	case <-time.After(60 * time.Second):
		t.Fatal("devicesim did not finish")
	}
}

func waitRows(t *testing.T, lake string, n int, timeout time.Duration) map[string]int {
	t.Helper()
	var byID map[string]int
	require.Eventually(t, func() bool {
		byID, _ = lakeRows(t, lake)
		total := 0
		for _, c := range byID {
			total += c
		}
		return total >= n
	}, timeout, 100*time.Millisecond, "rows in the lake")
	return byID
}

func assertExactlyOnce(t *testing.T, byID map[string]int, n int) {
	t.Helper()
	assert.Len(t, byID, n, "distinct readings")
	for id, c := range byID {
		assert.Equal(t, 1, c, "reading %s has %d rows", id, c)
	}
}

// Every published reading lands in the lake exactly once; a reading whose processing fails (the
// lake cannot be written) is redelivered and lands once it succeeds; readings published again
// (a redelivery of what was already written) add no row.
func TestConnectorExactlyOnceAndRedelivery(t *testing.T) {
	s := newAuthStack(t)
	lake := filepath.Join(s.dir, "lake")
	// A file where today's partition folder must go: every write fails until it is removed.
	require.NoError(t, os.MkdirAll(lake, 0o755))
	blocker := filepath.Join(lake, "date="+time.Now().UTC().Format(time.DateOnly))
	require.NoError(t, os.WriteFile(blocker, []byte("not a folder"), 0o644))

	c := s.startConnector("replica-1", lake)
	s.devices(t, "devsim-1", "-count", "40", "-devices", "4", "-seq-start", "1000")
	require.Eventually(t, func() bool { return c.counters()["failed"] > 0 }, 30*time.Second, 50*time.Millisecond,
		"processing fails while the lake cannot be written")
	byID, _ := lakeRows(t, lake)
	assert.Empty(t, byID)
	require.NoError(t, os.Remove(blocker))

	assertExactlyOnce(t, waitRows(t, lake, 40, 90*time.Second), 40)

	// The same readings again (same device ids and sequence numbers): duplicates, no new row.
	s.devices(t, "devsim-2", "-count", "40", "-devices", "4", "-seq-start", "1000", "-publish-config=false")
	require.Eventually(t, func() bool { return c.counters()["duplicates_skipped"] >= 40 }, 60*time.Second, 50*time.Millisecond)
	byID, _ = lakeRows(t, lake)
	assertExactlyOnce(t, byID, 40)
}

// Two replicas split the shared telemetry subscription; one app is killed with kill -9 mid-stream
// and restarted; every reading still lands exactly once. A replica started later gets the retained
// asset configuration.
func TestConnectorReplicasSplitSurviveKillAndShareConfig(t *testing.T) {
	s := newAuthStack(t)
	lake := filepath.Join(s.dir, "lake")
	r1 := s.startConnector("replica-1", lake)
	r2 := s.startConnector("replica-2", lake)

	s.devices(t, "devsim-1", "-count", "150", "-devices", "6", "-assets", "3", "-seq-start", "1")
	require.Eventually(t, func() bool { return r1.counters()["written"] > 10 && r2.counters()["written"] > 10 },
		60*time.Second, 50*time.Millisecond, "both replicas take part")
	r1.app.kill(syscall.SIGKILL)
	s.devices(t, "devsim-2", "-count", "150", "-devices", "6", "-assets", "3", "-seq-start", "1000", "-publish-config=false")
	r1.startApp()

	byID := waitRows(t, lake, 300, 120*time.Second)
	assertExactlyOnce(t, byID, 300)
	_, byReplica := lakeRows(t, lake)
	assert.Positive(t, byReplica["replica-1"])
	assert.Positive(t, byReplica["replica-2"])

	late := s.startConnector("replica-3", lake)
	require.Eventually(t, func() bool { return late.counters()["configs"] >= 3 }, 60*time.Second, 50*time.Millisecond,
		"retained asset configuration reaches a replica started later")
}

// The state component and its daprd are killed (kill -9) while the connector works through a
// backlog, with claims in flight and done marks of acked rows still queued behind the acks, then
// restarted (daprd does not re-initialise a component that restarted, so it goes too): every
// reading lands exactly once, and the same readings published again add no row (records whose
// mark was lost are reconciled by scanning).
func TestConnectorSurvivesStateComponentKill(t *testing.T) {
	s := newAuthStack(t)
	lake := filepath.Join(s.dir, "lake")
	c := s.startConnector("replica-1", lake)
	s.devices(t, "devsim-1", "-count", "300", "-devices", "6", "-assets", "3", "-seq-start", "1")
	require.Eventually(t, func() bool { return c.counters()["written"] > 20 }, 60*time.Second, 20*time.Millisecond,
		"the connector is writing")
	c.state.kill(syscall.SIGKILL)
	c.daprd.kill(syscall.SIGKILL)
	c.startState()
	c.startDaprd("connector", c.appPort, "grpc")

	assertExactlyOnce(t, waitRows(t, lake, 300, 120*time.Second), 300)

	s.devices(t, "devsim-2", "-count", "300", "-devices", "6", "-assets", "3", "-seq-start", "1", "-publish-config=false")
	require.Eventually(t, func() bool { return c.counters()["duplicates_skipped"] >= 300 }, 120*time.Second, 50*time.Millisecond,
		"the same readings again are duplicates")
	byID, _ := lakeRows(t, lake)
	assertExactlyOnce(t, byID, 300)
}
