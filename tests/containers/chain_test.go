package containers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
)

// The whole chain as containers, as `make run` wires it: devicesim → broker → pubsub-mqtt5 →
// daprd → app → lake, the app's dedup records and last-known values in state-kv on the same
// broker. Each scenario builds a chain of its own (network, volumes, containers) from one build of
// the images, injects its fault mid-stream (some readings in the lake, the rest queued in the
// broker or still being published) and ends with every reading in the lake exactly once (read out
// of the lake volume). devicesim publishes as fast as the broker acknowledges (~250 msg/s here),
// faster than the chain writes the lake, so a kill finds a backlog queued and a full window of
// messages in flight; the partition needs readings published during and after it, at 25 msg/s.
func TestChain(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	images := buildImages(t, chainPrograms...)

	// `docker kill` of the broker, started again on its volume: what it acknowledged (devicesim's
	// readings, the components' sessions and in-flight messages, the dedup records) survives.
	t.Run("BrokerKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 600
		p := c.publish("devsim", n, 0, 1)
		at := c.waitRows(r.app, 100, 2*time.Minute, "before the kill")
		require.Less(t, at, n, "the kill comes mid-stream")
		t.Logf("broker killed with %d of %d readings in the lake", at, n)
		c.kill(c.broker)
		c.start(c.broker)
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
	})

	// `docker kill` of each component container in turn, started again, and daprd after it (daprd
	// never re-initialises a restarted component).
	t.Run("ComponentKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 900
		p := c.publish("devsim", n, 0, 1)
		for i, comp := range []struct {
			name string
			ctr  *testcontainers.DockerContainer
		}{{"pubsub-mqtt5", r.pubsub}, {"state-kv", r.state}} {
			at := c.waitRows(r.app, 100+300*i, 2*time.Minute, "before the kill of "+comp.name)
			require.Less(t, at, n, "the kill comes mid-stream")
			t.Logf("%s killed with %d of %d readings in the lake", comp.name, at, n)
			c.kill(comp.ctr)
			c.start(comp.ctr)
			r.restartDaprd()
		}
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
	})

	// Two replicas, each a pod of its own (components, daprd, app, a stable client id), share the
	// telemetry subscription; one app is killed mid-stream and comes back with its pod (daprd
	// lives in the app's network namespace, so it is restarted with it). Nothing lost, nothing
	// written twice, and both replicas wrote rows after the kill.
	t.Run("ReplicaKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r1, r2 := c.startReplica("replica-1"), c.startReplica("replica-2")
		const n = 900
		p := c.publish("devsim", n, 0, 1)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			_, byReplica, err := c.readLake(r2.app)
			require.NoError(ct, err)
			require.GreaterOrEqual(ct, byReplica["replica-1"], 30, "rows of replica-1")
			require.GreaterOrEqual(ct, byReplica["replica-2"], 30, "rows of replica-2")
		}, 2*time.Minute, 250*time.Millisecond, "both replicas write rows")
		byID, before := c.lakeRows(r2.app)
		require.Less(t, len(byID), n, "the kill comes mid-stream")
		t.Logf("replica-1's app killed with %d of %d readings in the lake (%v)", len(byID), n, before)
		c.kill(r1.app)
		c.kill(r1.daprd)
		c.start(r1.app)
		c.start(r1.daprd)
		r1.waitDaprd()
		p.wait()
		byReplica := c.assertExactlyOnce(r2.app, n, 3*time.Minute)
		t.Logf("rows by replica at the end: %v", byReplica)
		require.Greater(t, byReplica["replica-1"], before["replica-1"], "the restarted replica takes its share again")
		require.Greater(t, byReplica["replica-2"], before["replica-2"])
	})

	// Both component containers lose the network (the broker) for 20 s mid-stream, then get it
	// back (with each other's addresses, see partition): delivery resumes (new rows after the
	// reconnection) and nothing is lost. Their connection logs are logged.
	t.Run("Partition", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 1200
		p := c.publish("devsim", n, 25, 1)
		at := c.waitRows(r.app, 100, 2*time.Minute, "before the partition")
		require.Less(t, at, n, "the partition comes mid-stream")
		c.partition(20*time.Second, endpoint{r.pubsub, r.name + "-pubsub"}, endpoint{r.state, r.name + "-state"})
		back := c.rowCount(r.app)
		require.Less(t, back, n, "the reconnection comes mid-stream")
		reconnected := time.Now()
		c.waitRows(r.app, back+1, 2*time.Minute, "delivery resumes after the reconnection")
		t.Logf("partitioned with %d readings in the lake, %d at the reconnection; new rows %s after it",
			at, back, time.Since(reconnected).Round(100*time.Millisecond))
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
		for name, comp := range map[string]*testcontainers.DockerContainer{"pubsub-mqtt5": r.pubsub, "state-kv": r.state} {
			t.Logf("%s's connection log:\n%s", name, grepLines(c.logs(comp, "all"), "mqtt: "))
		}
	})
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// endpoint is a container on the chain's network and its alias there.
type endpoint struct {
	ctr   *testcontainers.DockerContainer
	alias string
}

// partition disconnects the containers from the chain's network for d (the fault itself: the
// one wait that is not on a condition), then connects them again with their aliases, in the
// reverse order: Docker hands out the lowest free address, so two containers come back with each
// other's addresses (logged), their TCP connections are dead as after a NAT's or a firewall's
// loss of state, and the components must notice (MQTT keep-alive) and reconnect. With their
// own addresses back, TCP retransmission would carry the connections over a 20 s partition.
func (c *chain) partition(d time.Duration, eps ...endpoint) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	before := make([]string, len(eps))
	for i, ep := range eps {
		before[i] = c.address(ctx, ep.ctr)
		_, err := c.cli.NetworkDisconnect(ctx, c.net.ID, client.NetworkDisconnectOptions{Container: ep.ctr.GetContainerID()})
		require.NoError(c.t, err)
	}
	time.Sleep(d)
	for i := len(eps) - 1; i >= 0; i-- {
		_, err := c.cli.NetworkConnect(ctx, c.net.ID, client.NetworkConnectOptions{Container: eps[i].ctr.GetContainerID(),
			EndpointConfig: &network.EndpointSettings{Aliases: []string{eps[i].alias}}})
		require.NoError(c.t, err)
		c.t.Logf("%s reconnected: address %s, %s before", eps[i].alias, c.address(ctx, eps[i].ctr), before[i])
	}
}

// address is the container's IP address on the chain's network.
func (c *chain) address(ctx context.Context, ctr *testcontainers.DockerContainer) string {
	c.t.Helper()
	in, err := ctr.Inspect(ctx)
	require.NoError(c.t, err)
	if ep, ok := in.NetworkSettings.Networks[c.net.Name]; ok {
		return fmt.Sprint(ep.IPAddress)
	}
	return "none"
}
